"""The engine's registry service: pulls (shared between clients), pushes, logins.

One aiohttp client session for the daemon (its connection pool reused by every pull), one
token cache, the blob-digest memory. A pull runs as one task per (reference, platform):
clients asking for the same pull at the same time follow that task's progress from its
first line; it is cancelled (and cleans up) when the last of them goes away.
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp

from stowd.engine.distribution import manifest as mf
from stowd.engine.distribution.auth import Credentials, TokenCache, scope_for
from stowd.engine.distribution.client import RegistryClient
from stowd.engine.distribution.metadata import BlobSums
from stowd.engine.distribution.pull import Aux, Progress, Puller
from stowd.engine.distribution.transport import RegistrySettings
from stowd.engine.errors import InvalidParameter
from stowd.engine.images import reference
from stowd.engine.images.archive import host_arch
from stowd.engine.images.store import ImageStore

log = logging.getLogger("stowd.distribution")

Line = Progress | Aux
Publish = Callable[[str, str, str, dict[str, str]], None]  # type, action, id, attributes


class _Broadcast:
    """Every line of one job, replayed to each follower from the first."""

    def __init__(self) -> None:
        self.lines: list[Line] = []
        self.error: BaseException | None = None
        self.done = False
        self.followers = 0
        self._changed = asyncio.Event()

    def emit(self, line: Line) -> None:
        self.lines.append(line)
        self._wake()

    def finish(self, error: BaseException | None) -> None:
        self.error = error
        self.done = True
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def follow(self) -> AsyncIterator[Line]:
        i = 0
        while True:
            while i < len(self.lines):
                yield self.lines[i]
                i += 1
            if self.done:
                if self.error is not None:
                    raise self.error
                return
            await self._changed.wait()


class Distribution:
    def __init__(self, images: ImageStore, settings: RegistrySettings, data_root: Path,
                 publish: Publish) -> None:
        self.images = images
        self.settings = settings
        self.blobsums = BlobSums(data_root / "images" / "distribution")
        self.tokens = TokenCache()
        self.publish = publish
        self._session: aiohttp.ClientSession | None = None
        self._pulls: dict[tuple[str, str], tuple[asyncio.Task[None], _Broadcast]] = {}

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                read_bufsize=1 << 20, auto_decompress=False,
                timeout=aiohttp.ClientTimeout(total=None, connect=30, sock_read=300),
                headers={"User-Agent": "stowd (docker-compatible registry client)"})
        return self._session

    async def close(self) -> None:
        for task, _ in list(self._pulls.values()):
            task.cancel()
        if self._session is not None:
            await self._session.close()

    def client(self, ref: reference.Reference, creds: Credentials, actions: str,
               extra_scopes: list[str] | None = None) -> RegistryClient:
        return RegistryClient(self.session(), self.settings, self.tokens, creds, ref.domain,
                              ref.path, [scope_for(ref.path, actions), *(extra_scopes or [])])

    # pull -------------------------------------------------------------------------------

    def pull(self, ref: reference.Reference, platform: str, creds: Credentials
             ) -> AsyncIterator[Line]:
        """The progress of pulling ref (every tag when it has neither tag nor digest)."""
        want = mf.parse_platform(platform, mf.Platform("linux", host_arch()))
        key = (ref.full(), str(want))
        job = self._pulls.get(key)
        if job is None:
            broadcast = _Broadcast()
            task = asyncio.ensure_future(self._run_pull(ref, want, creds, broadcast))
            job = (task, broadcast)
            self._pulls[key] = job
            task.add_done_callback(lambda _: self._pulls.pop(key, None))
        return self._follow(*job)

    async def _follow(self, task: "asyncio.Task[None]", broadcast: _Broadcast
                      ) -> AsyncIterator[Line]:
        broadcast.followers += 1
        try:
            async for line in broadcast.follow():
                yield line
        finally:
            broadcast.followers -= 1
            if broadcast.followers == 0 and not task.done():
                # As dockerd: a pull nobody follows any more is cancelled.
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task

    async def _run_pull(self, ref: reference.Reference, want: mf.Platform, creds: Credentials,
                        broadcast: _Broadcast) -> None:
        try:
            client = self.client(ref, creds, "pull")
            await client.connect(pull=True)
            puller = Puller(self.images, self.blobsums, client, broadcast.emit)
            refs = [ref]
            if ref.tag is None and ref.digest is None:
                refs = [ref.with_tag(t) for t in sorted(await client.tags())]
                if not refs:
                    raise InvalidParameter(f"no tags found for {ref.familiar()}")
            updated = False
            for r in refs:
                result = await puller.pull(r, want)
                updated = updated or result.updated
                name = r.familiar()
                self.publish("image", "pull", name, {"name": name})
            target = ref.familiar() if refs != [ref] else refs[0].familiar()
            if updated:
                broadcast.emit(Progress(f"Status: Downloaded newer image for {target}",
                                        detail=False))
            else:
                broadcast.emit(Progress(f"Status: Image is up to date for {target}",
                                        detail=False))
            broadcast.finish(None)
        except asyncio.CancelledError as exc:
            broadcast.finish(exc)
            raise
        except Exception as exc:
            broadcast.finish(exc)
