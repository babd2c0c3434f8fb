"""The engine's registry service: pulls (shared between clients), pushes, logins.

One aiohttp client session for the daemon (its connection pool reused by every pull), one
token cache, the blob-digest memory. A pull runs as one task per (reference, platform):
clients asking for the same pull at the same time follow that task's progress from its
first line; it is cancelled (and cleans up) when the last of them goes away.
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable
from pathlib import Path

import aiohttp

from stowd.engine.distribution import manifest as mf
from stowd.engine.distribution.auth import Credentials, TokenCache, scope_for
from stowd.engine.distribution.client import RegistryClient
from stowd.engine.distribution.metadata import BlobSums
from stowd.engine.distribution.pull import Aux, Progress, Puller
from stowd.engine.distribution.push import Pusher
from stowd.engine.distribution.transport import Endpoint, RegistrySettings
from stowd.engine.errors import InvalidParameter, NotFound
from stowd.engine.images import reference
from stowd.engine.images.archive import host_arch
from stowd.engine.images.store import Image, ImageStore

log = logging.getLogger("stowd.distribution")

Line = Progress | Aux
Publish = Callable[[str, str, str, dict[str, str]], object]  # type, action, id, attributes


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

    async def follow(self) -> AsyncGenerator[Line, None]:
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
             ) -> AsyncGenerator[Line, None]:
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
                      ) -> AsyncGenerator[Line, None]:
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
            endpoints = await asyncio.to_thread(self.settings.endpoints, ref.domain, True)
            # Each mirror alone, then the registry itself (HTTPS, then HTTP if insecure).
            groups = [[ep] for ep in endpoints if ep.mirror]
            groups.append([ep for ep in endpoints if not ep.mirror])
            for i, group in enumerate(groups):
                try:
                    await self._pull_from(group, ref, want, creds, broadcast)
                    break
                except Exception as exc:
                    # As dockerd (continueOnError): whatever goes wrong with a mirror, the
                    # next mirror or the registry itself is asked.
                    if not group[0].mirror or i == len(groups) - 1:
                        raise
                    log.info("pull of %s from mirror %s failed (%s); trying %s",
                             ref.full(), group[0].url, exc, groups[i + 1][0].url)
            broadcast.finish(None)
        except asyncio.CancelledError as exc:
            broadcast.finish(exc)
            raise
        except Exception as exc:
            broadcast.finish(exc)

    async def _pull_from(self, endpoints: list[Endpoint], ref: reference.Reference,
                         want: mf.Platform, creds: Credentials, broadcast: _Broadcast
                         ) -> None:
        client = self.client(ref, creds, "pull")
        await client.connect_to(endpoints)
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

    # login ------------------------------------------------------------------------------

    async def login(self, creds: Credentials) -> None:
        """`POST /auth`: are these credentials good for their server? Nothing is stored."""
        domain = login_domain(creds.server_address)
        client = RegistryClient(self.session(), self.settings, self.tokens, creds, domain, "",
                                [])
        await client.connect(pull=False)
        await client.login()

    # push -------------------------------------------------------------------------------

    def push(self, ref: reference.Reference,
             creds: Credentials) -> AsyncGenerator[Line, None]:
        """The progress of pushing ref (every local tag of its repository without a tag)."""
        broadcast = _Broadcast()
        task = asyncio.ensure_future(self._run_push(ref, creds, broadcast))
        return self._follow(task, broadcast)

    def _push_targets(self, ref: reference.Reference) -> list[tuple[reference.Reference,
                                                                     Image]]:
        if ref.tag:
            image = self.images.find(ref.full())
            found = [(ref, image)] if image else []
        else:
            found = []
            for text, image_id in sorted(self.images.db.all_tags()):
                tagged = reference.parse(text)
                if tagged.repository == ref.repository:
                    image = self.images.find(image_id)
                    if image is not None:
                        found.append((tagged, image))
        if not found:
            raise NotFound(f"An image does not exist locally with the tag: "
                           f"{ref.familiar()}")
        return found

    async def _run_push(self, ref: reference.Reference, creds: Credentials,
                        broadcast: _Broadcast) -> None:
        try:
            targets = await asyncio.to_thread(self._push_targets, ref)
            mounts = await asyncio.to_thread(self._mount_scopes, targets, ref)
            client = self.client(ref, creds, "pull,push", mounts)
            await client.connect(pull=False)
            broadcast.emit(Progress(f"The push refers to repository [{ref.repository}]",
                                    detail=False))
            pusher = Pusher(self.images, self.blobsums, client, broadcast.emit)
            for tagged, image in targets:
                pushed = await pusher.push(tagged, image)
                await asyncio.to_thread(self._add_repo_digest, image,
                                        f"{tagged.familiar_repository}@{pushed.digest}")
                name = tagged.familiar()
                self.publish("image", "push", name, {"name": name})
            broadcast.finish(None)
        except asyncio.CancelledError as exc:
            broadcast.finish(exc)
            raise
        except Exception as exc:
            broadcast.finish(exc)

    def _mount_scopes(self, targets: list[tuple[reference.Reference, Image]],
                      ref: reference.Reference) -> list[str]:
        """Pull scopes for the repositories of this registry the layers could be mounted
        from (a token must allow reading them). Blocking."""
        paths: set[str] = set()
        for _, image in targets:
            for diff_id in (image.config.get("rootfs") or {}).get("diff_ids") or []:
                for source in self.blobsums.get(diff_id):
                    if source.domain == ref.domain and source.path != ref.path:
                        paths.add(source.path)
        return [scope_for(p, "pull") for p in sorted(paths)]

    def _add_repo_digest(self, image: Image, repo_digest: str) -> None:
        config = (self.images.blobs / image.id.removeprefix("sha256:")).read_bytes()
        self.images.add_image(config, image.layers, [], [repo_digest])


def login_domain(server: str) -> str:
    """A login's server address (`https://index.docker.io/v1/`, `host:port`, a URL) → the
    registry's domain; empty means Docker Hub, as for the docker CLI."""
    text = server.strip()
    for prefix in ("https://", "http://"):
        text = text.removeprefix(prefix)
    text = text.split("/", 1)[0]
    if text in ("", "index.docker.io", "registry-1.docker.io", "docker.io"):
        return reference.DEFAULT_DOMAIN
    return text
