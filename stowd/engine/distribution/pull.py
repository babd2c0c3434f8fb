"""Pulling an image: manifest → config → layers streamed into the store.

Each missing layer is downloaded (3 at once, as dockerd) and, while it streams in, hashed,
decompressed as its media type says, and extracted by the layer store in a worker thread:
nothing is held whole in memory and no temporary blob file is written. The blob's digest
is checked when its last byte has been read and the diff ID by the store, both before the
layer is renamed into place; a failed or cancelled pull removes the layers it added.

The progress is reported as dockerd words it (`Pulling fs layer`, `Downloading`, ...), with
the blob digest's first 12 hex digits as each layer's id.
"""

import asyncio
import contextlib
import hashlib
import io
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO, cast

from stowd.engine.distribution import manifest as mf
from stowd.engine.distribution.client import DigestMismatch, RegistryClient
from stowd.engine.distribution.metadata import BlobSums
from stowd.engine.errors import InvalidParameter
from stowd.engine.images import reference
from stowd.engine.images.layers import CHUNK, chain_id
from stowd.engine.images.load import check_config
from stowd.engine.images.pipe import FeedPipe, Stage
from stowd.engine.images.store import Image, ImageStore

log = logging.getLogger("stowd.distribution")

CONCURRENT_DOWNLOADS = 3
PROGRESS_EVERY = 0.1  # seconds between two progress lines of one layer, as dockerd
MAX_CONFIG = 8 << 20


@dataclass
class Progress:
    """One line of the progress stream."""
    status: str
    id: str = ""
    current: int | None = None
    total: int | None = None
    detail: bool = True  # a layer's line (with progressDetail), not a heading


@dataclass
class Aux:
    """Docker's `aux` line (push: Tag, Digest, Size)."""
    data: dict[str, Any]


Emit = Callable[[Progress | Aux], None]


@dataclass
class PullResult:
    image: Image
    ref: reference.Reference
    manifest_digest: str
    updated: bool  # the reference now names another image than before


class _Verified(io.RawIOBase):
    """A blob read in the worker thread, hashed on the way (in a thread of its own, so the
    blob's sha256 and the decompression run on two CPUs); at its end the digest and size
    must be the descriptor's, or the read raises (so the layer never enters the store)."""

    def __init__(self, source: FeedPipe, digest: str, size: int) -> None:
        self._source = source
        self._digest = digest
        self._size = size
        self._hasher = hashlib.sha256()
        self._hashing = Stage(self._hasher.update, depth=2, name="blob-sha256")
        self._read = 0
        self._done = False

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        # The pipe's chunks (immutable bytes) go on to the hash and the decompression as
        # they are: no copy into a buffer of the reader's.
        data = self._source.read(size)
        if data:
            self._hashing.put(data)
            self._read += len(data)
            return data
        self._end()
        return b""

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)

    def _end(self) -> None:
        if self._done:
            return
        self._done = True
        self._hashing.finish()
        if "sha256:" + self._hasher.hexdigest() != self._digest or self._read != self._size:
            raise DigestMismatch(f"filesystem layer verification failed for digest "
                                 f"{self._digest}")

    def close(self) -> None:
        if not self._done:
            self._done = True
            self._hashing.abort()
        super().close()

    def drain(self) -> None:
        """Read to the end: raises DigestMismatch when the blob is not the one announced."""
        while self.read(CHUNK):
            pass


def _store(images: ImageStore, pipe: FeedPipe, desc: mf.Descriptor, parent: str | None,
           progress: Callable[[int], None], diff_id: str, compression: str
           ) -> tuple[str, str, int]:
    """Extract the layer (worker thread). A blob that cannot be extracted is read to its end
    first, so that a corrupt download is reported as one, as dockerd does."""
    # Made here, not on the event loop: it starts its hashing thread.
    source = _Verified(pipe, desc.digest, desc.size)
    try:
        # A raw stream read as a binary file.
        return images.store_layer(cast(BinaryIO, source), parent, progress, diff_id,
                                  compression)
    except InvalidParameter as exc:
        if not isinstance(exc, DigestMismatch):
            source.drain()
        raise
    finally:
        source.close()


@dataclass
class Transfer:
    """What a pull or a push works with: the store, the blob memory, one registry client,
    and where its progress lines go."""
    images: ImageStore
    blobsums: BlobSums
    client: RegistryClient
    emit: Emit


class Puller(Transfer):

    async def resolve(self, ref: reference.Reference, platform: mf.Platform
                      ) -> tuple[mf.ImageManifest, str]:
        """The image manifest for ref (through an index if there is one), and the digest
        that ref points at (the index's, for a multi-platform image)."""
        target = ref.digest or ref.tag or reference.DEFAULT_TAG
        not_found = f"manifest for {ref.familiar()} not found"
        body, ctype, header = await self.client.get_manifest(target, mf.ACCEPT, not_found)
        digest = mf.digest_of(body)
        if ref.digest and digest != ref.digest:
            raise DigestMismatch(f"manifest verification failed for digest {ref.digest}")
        if not ref.digest and header and header.startswith("sha256:") and header != digest:
            raise DigestMismatch(f"manifest verification failed for digest {header}")
        doc = mf.parse(body, ctype, ref.full())
        if isinstance(doc, mf.Index):
            entry = mf.choose(doc, platform)
            body, ctype, _ = await self.client.get_manifest(entry.digest, mf.ACCEPT, not_found)
            if mf.digest_of(body) != entry.digest:
                raise DigestMismatch(f"manifest verification failed for digest {entry.digest}")
            doc = mf.parse(body, entry.media_type or ctype, ref.full())
            if isinstance(doc, mf.Index):
                raise InvalidParameter(f"invalid manifest list for {ref.familiar()}: an "
                                       "entry is itself a list")
        return doc, digest

    async def pull(self, ref: reference.Reference, platform: mf.Platform) -> PullResult:
        manifest, manifest_digest = await self.resolve(ref, platform)
        self.emit(Progress(f"Pulling from {ref.path}", ref.tag or ref.digest or "",
                           detail=False))
        config = await self.client.get_small_blob(manifest.config.digest, MAX_CONFIG)
        if mf.digest_of(config) != manifest.config.digest:
            raise DigestMismatch(f"image config verification failed for digest "
                                 f"{manifest.config.digest}")
        diff_ids = check_config(config, f"for {ref.familiar()}")
        if len(diff_ids) != len(manifest.layers):
            raise InvalidParameter(f"invalid image {ref.familiar()}: the manifest has "
                                   f"{len(manifest.layers)} layers, the config "
                                   f"{len(diff_ids)} diff IDs")
        image_id = manifest.config.digest
        before = await asyncio.to_thread(self._image_for, ref)
        chains: list[str] = []
        parent: str | None = None
        for diff_id in diff_ids:
            parent = chain_id(parent, diff_id)
            chains.append(parent)
        self.images.pin(chains)
        added: list[str] = []
        try:
            existing = await asyncio.to_thread(self.images.find, image_id)
            if existing is None:
                await self._layers(manifest, diff_ids, chains, added)
            tags = [ref] if ref.tag and not ref.digest else []
            repo_digest = f"{ref.familiar_repository}@{manifest_digest}"
            image, _ = await asyncio.to_thread(self.images.add_image, config, chains, tags,
                                               [repo_digest])
        except BaseException:
            if added:
                await asyncio.shield(asyncio.to_thread(self.images.discard_layers, added))
            raise
        finally:
            self.images.unpin(chains)
        await asyncio.to_thread(self._remember, manifest, diff_ids, ref)
        self.emit(Progress(f"Digest: {manifest_digest}", detail=False))
        return PullResult(image, ref, manifest_digest, updated=before != image.id)

    def _image_for(self, ref: reference.Reference) -> str | None:
        image = self.images.find(ref.full())
        return image.id if image else None

    def _remember(self, manifest: mf.ImageManifest, diff_ids: list[str],
                  ref: reference.Reference) -> None:
        for desc, diff_id in zip(manifest.layers, diff_ids, strict=True):
            self.blobsums.add(diff_id, desc, ref.domain, ref.path)

    async def _layers(self, manifest: mf.ImageManifest, diff_ids: list[str],
                      chains: list[str], added: list[str]) -> None:
        have = await asyncio.to_thread(lambda: [self.images.has_layer(c) for c in chains])
        # Only a complete stack below counts: a layer's chain ID already names its parents.
        todo: list[int] = []
        for i, desc in enumerate(manifest.layers):
            if have[i]:
                self.emit(Progress("Already exists", _short(desc.digest)))
            else:
                todo.append(i)
                self.emit(Progress("Pulling fs layer", _short(desc.digest)))
        semaphore = asyncio.Semaphore(CONCURRENT_DOWNLOADS)
        tasks = [asyncio.ensure_future(self._layer(manifest.layers[i], diff_ids[i],
                                                   chains[i - 1] if i else None, chains[i],
                                                   semaphore, added))
                 for i in todo]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            # Every worker thread has finished (and cleaned up) before this returns.
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _layer(self, desc: mf.Descriptor, diff_id: str, parent: str | None,
                     chain: str, semaphore: asyncio.Semaphore, added: list[str]) -> None:
        lid = _short(desc.digest)
        if semaphore.locked():
            self.emit(Progress("Waiting", lid))
        loop = asyncio.get_running_loop()
        async with semaphore:
            pipe = FeedPipe(loop)
            extracted = [0]

            def progress(n: int) -> None:  # in the worker thread
                extracted[0] = n

            compression = mf.LAYER_COMPRESSION[desc.media_type]
            worker = asyncio.ensure_future(asyncio.to_thread(
                _store, self.images, pipe, desc, parent,
                progress, diff_id, compression))
            worker.add_done_callback(lambda _: pipe.close())
            try:
                await self._download(desc, pipe, lid)
            except BaseException as exc:
                pipe.fail(exc if isinstance(exc, Exception) else
                          InvalidParameter("the pull was cancelled"))
                await _settle(worker)
                if worker.done() and not worker.cancelled() and worker.exception():
                    raise worker.exception() from None  # type: ignore[misc]
                raise
        # Extraction goes on after the download slot is given back.
        while True:
            done, _ = await asyncio.wait({worker}, timeout=PROGRESS_EVERY)
            if done:
                break
            self.emit(Progress("Extracting", lid, extracted[0], desc.size))
        stored_chain, _, _ = worker.result()
        assert stored_chain == chain
        added.append(chain)
        self.emit(Progress("Extracting", lid, desc.size, desc.size))
        self.emit(Progress("Pull complete", lid))

    async def _download(self, desc: mf.Descriptor, pipe: FeedPipe, lid: str) -> None:
        got = 0
        last = 0.0
        async for chunk in self.client.blob_chunks(desc.digest, desc.urls):
            got += len(chunk)
            try:
                await pipe.put(chunk)
            except BrokenPipeError:
                return  # the extraction stopped: its error is the one to report
            now = time.monotonic()
            if now - last >= PROGRESS_EVERY:
                last = now
                self.emit(Progress("Downloading", lid, got, desc.size))
        self.emit(Progress("Downloading", lid, got, desc.size))
        self.emit(Progress("Verifying Checksum", lid))
        with contextlib.suppress(BrokenPipeError):
            await pipe.finish()
        self.emit(Progress("Download complete", lid))


async def _settle(task: "asyncio.Future[Any]") -> None:
    """Wait for task to end, even when this coroutine is being cancelled."""
    while not task.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(task)
    with contextlib.suppress(BaseException):
        task.result()


def _short(digest: str) -> str:
    return digest.removeprefix("sha256:")[:12]
