"""The engine as the builder sees it: RUN containers through the engine's own create,
attach, start, wait and remove, so they are ordinary stowd containers (events, limits,
networks), and tags through the engine so that their events go out."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stowd.engine.distribution.auth import credentials_from
from stowd.engine.distribution.pull import Aux, Progress
from stowd.engine.images import reference
from stowd.engine.images.store import ImageStore

if TYPE_CHECKING:
    from stowd.engine.engine import Engine


class EngineHost:
    def __init__(self, engine: "Engine") -> None:
        self.engine = engine
        self.images: ImageStore = engine.images

    async def run_container(self, config: dict[str, Any], host_config: dict[str, Any],
                            on_created: Callable[[str], Awaitable[None]],
                            output: Callable[[bytes], Awaitable[None]]) -> tuple[str, int]:
        cid, _ = await self.engine.create_container(None, {**config, "HostConfig": host_config})
        await on_created(cid)
        _, session = await self.engine.attach(cid, stdin=False, stdout=True, stderr=True)
        try:
            exited = self.engine.wait(cid, "next-exit")
            await self.engine.start(cid)
            while (item := await session.output.get()) is not None:
                await output(item[1])
            status = await exited
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.engine.kill(cid))
            raise
        finally:
            self.engine.detach(session)
        if status.error:
            raise RuntimeError(status.error)
        return cid, status.code

    def upper_dir(self, container_id: str) -> Path:
        return self.engine.container_dir(container_id) / "upper"

    async def remove_container(self, container_id: str) -> None:
        await self.engine.remove(container_id, force=True, volumes=True)

    async def tag(self, image_id: str, ref: reference.Reference) -> None:
        await self.engine.tag_image(image_id, ref.repository, ref.tag or "latest")

    async def pull(self, ref: reference.Reference, platform: str, auth: dict[str, Any]
                   ) -> AsyncIterator[dict[str, Any]]:
        creds = credentials_from(_auth_for(auth, ref.domain))
        async with contextlib.aclosing(self.engine.distribution.pull(ref, platform, creds)) \
                as lines:
            async for line in lines:
                yield _progress(line)


def _auth_for(auth: dict[str, Any], domain: str) -> dict[str, Any]:
    """The X-Registry-Config entry for a registry, keyed as the CLI writes them."""
    keys = [domain, f"https://{domain}", f"http://{domain}", f"https://{domain}/v1/",
            f"https://{domain}/v2/"]
    if domain in ("docker.io", "registry-1.docker.io", "index.docker.io"):
        keys[:0] = ["https://index.docker.io/v1/", "index.docker.io", "docker.io"]
    for key in keys:
        entry = auth.get(key)
        if isinstance(entry, dict):
            return entry
    return {}


def _progress(line: Progress | Aux) -> dict[str, Any]:
    """A pull's line as the build stream carries it (the CLI draws the bars)."""
    if isinstance(line, Aux):
        return {"aux": line.data}
    out: dict[str, Any] = {"status": line.status}
    if line.detail:
        out["progressDetail"] = ({"current": line.current, "total": line.total}
                                 if line.current is not None and line.total is not None
                                 else {})
    if line.id:
        out["id"] = line.id
    return out
