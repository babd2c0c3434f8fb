"""The engine as the builder sees it: RUN containers through the engine's own create,
attach, start, wait and remove, so they are ordinary stowd containers (events, limits,
networks), and tags through the image service so that their events go out. Builder is
what the API may ask of builds (wired by engine.py)."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, BinaryIO

from stowd.engine.build import cache as build_cache
from stowd.engine.build.builder import BuildOptions, Emit
from stowd.engine.build.service import run_build
from stowd.engine.containers.service import ContainerService
from stowd.engine.distribution.auth import credentials_from
from stowd.engine.distribution.pull import Aux, Progress
from stowd.engine.distribution.service import Distribution
from stowd.engine.images import reference
from stowd.engine.images.service import ImageService
from stowd.engine.images.store import Image, ImageStore


class EngineHost:
    def __init__(self, containers: ContainerService, images: ImageService,
                 distribution: Distribution) -> None:
        self.containers = containers
        self.distribution = distribution
        self.image_service = images
        self.images: ImageStore = images.store

    async def create_container(self, config: dict[str, Any], host_config: dict[str, Any]
                               ) -> tuple[str, list[str]]:
        return await self.containers.create(None, {**config, "HostConfig": host_config})

    async def run_container(self, cid: str,
                            output: Callable[[int, bytes], Awaitable[None]]) -> int:
        _, session = await self.containers.attach(cid, stdin=False, stdout=True, stderr=True)
        try:
            exited = self.containers.wait(cid, "next-exit")
            await self.containers.start(cid)
            while (item := await session.output.get()) is not None:
                await output(*item)
            status = await exited
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.containers.kill(cid))
            raise
        finally:
            self.containers.detach(session)
        if status.error:
            raise RuntimeError(status.error)
        return status.code

    def upper_dir(self, container_id: str) -> Path:
        return self.containers.upper_dir(container_id)

    async def remove_container(self, container_id: str) -> None:
        await self.containers.remove(container_id, force=True, volumes=True)

    async def tag(self, image_id: str, ref: reference.Reference) -> None:
        await self.image_service.tag_image(image_id, ref.repository, ref.tag or "latest")
    async def pull(self, ref: reference.Reference, platform: str, auth: dict[str, Any]
                   ) -> AsyncIterator[dict[str, Any]]:
        creds = credentials_from(_auth_for(auth, ref.domain))
        async with contextlib.aclosing(self.distribution.pull(ref, platform, creds)) \
                as lines:
            async for line in lines:
                yield _progress(line)


class Builder:
    def __init__(self, containers: ContainerService, images: ImageService,
                 distribution: Distribution) -> None:
        self.containers = containers
        self.images = images
        self.distribution = distribution

    async def build(self, source: BinaryIO, options: BuildOptions, emit: Emit) -> Image:
        """`POST /build`: the classic Dockerfile builder (engine/build/)."""
        host = EngineHost(self.containers, self.images, self.distribution)
        return await run_build(host, source, options, emit)

    async def cache_usage(self) -> list[dict[str, Any]]:
        """`docker system df`'s BuildCache: the build steps kept as untagged images."""
        in_use = {c.image_id for c in self.containers.all()}
        store = self.images.store
        all_images = await asyncio.to_thread(store.all)
        return await asyncio.to_thread(build_cache.usage, all_images, in_use, store.layer_size)

    async def prune_cache(self) -> tuple[list[str], int]:
        """`docker builder prune`: remove the build steps no container uses, newest first
        (children before parents); the space is what their removed layers held."""
        in_use = {c.image_id for c in self.containers.all()}
        store = self.images.store
        all_images = await asyncio.to_thread(store.all)
        steps = sorted((i for i in all_images if build_cache.is_build_step(i)
                        and i.id not in in_use), key=lambda i: i.created, reverse=True)

        def remove() -> tuple[list[str], int]:
            deleted, reclaimed = [], 0
            for image in steps:
                sizes = {c: store.layer_size(c) for c in image.layers}
                removed = store.remove_image(image)
                deleted.append(image.id.removeprefix("sha256:"))
                reclaimed += sum(sizes[c] for c in removed)
            return deleted, reclaimed

        deleted, reclaimed = await asyncio.to_thread(remove)
        for image_id in deleted:
            self.images.core.events.publish("image", "delete", "sha256:" + image_id,
                                            {"name": "sha256:" + image_id})
        return deleted, reclaimed


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
