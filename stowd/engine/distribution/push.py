"""Pushing an image: layers (reused, mounted or uploaded), config, manifest.

For each layer, top first, as dockerd: a foreign layer (pulled with a foreign or
non-distributable media type and URLs) is skipped and named by its URLs ("Skipped foreign
layer"); a blob this repository is known to hold (from an earlier pull or push) is checked
with HEAD ("Layer already exists"); one known in another repository of the same registry is
mounted ("Mounted from <path>"); otherwise the layer's
tar is rebuilt from its tar-split record, gzipped and hashed in a worker thread while it is
streamed in one PATCH, and the upload is closed with the digest once the last byte is out.
At most 5 uploads run at once (dockerd's default). The manifest is written as dockerd writes
it (3-space indented JSON), so an image pulled as schema2 and pushed back keeps its digest.
"""

import asyncio
import hashlib
import json
import logging
import time
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from stowd.engine.distribution import manifest as mf
from stowd.engine.distribution.metadata import BlobSource
from stowd.engine.distribution.pull import PROGRESS_EVERY, Aux, Progress, Transfer
from stowd.engine.errors import InvalidParameter
from stowd.engine.images import reference, tarsplit
from stowd.engine.images.load import MEDIA_DOCKER_MANIFEST, MEDIA_OCI_MANIFEST
from stowd.engine.images.pipe import ThreadPipe
from stowd.engine.images.store import Image

log = logging.getLogger("stowd.distribution")

CONCURRENT_UPLOADS = 5
GZIP_LEVEL = 6  # zlib's default, as dockerd's gzip writer
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


@dataclass
class PushedTag:
    ref: reference.Reference
    digest: str
    size: int


class Pusher(Transfer):

    async def push(self, ref: reference.Reference, image: Image) -> PushedTag:
        diff_ids: list[str] = list((image.config.get("rootfs") or {}).get("diff_ids") or [])
        if len(diff_ids) != len(image.layers):
            raise InvalidParameter(f"image {image.id[:19]} has inconsistent layers")
        order = list(reversed(range(len(diff_ids))))  # top first, as dockerd lists them
        for i in order:
            self.emit(Progress("Preparing", _short(diff_ids[i])))
        semaphore = asyncio.Semaphore(CONCURRENT_UPLOADS)
        self.images.pin(image.layers)
        try:
            tasks = {i: asyncio.ensure_future(self._layer(ref, image.layers[i], diff_ids[i],
                                                          semaphore)) for i in order}
            try:
                await asyncio.gather(*tasks.values())
            finally:
                for t in tasks.values():
                    t.cancel()
                await asyncio.gather(*tasks.values(), return_exceptions=True)
        finally:
            self.images.unpin(image.layers)
        descriptors = [tasks[i].result() for i in range(len(diff_ids))]
        config = await asyncio.to_thread(
            (self.images.blobs / image.id.removeprefix("sha256:")).read_bytes)
        if not await self.client.blob_exists(image.id):
            await self.client.upload_whole(config, image.id)
        media, body = build_manifest(config, image.id, descriptors)
        tag = ref.tag or reference.DEFAULT_TAG
        await self.client.put_manifest(tag, body, media)
        digest = mf.digest_of(body)
        self.emit(Progress(f"{tag}: digest: {digest} size: {len(body)}", detail=False))
        self.emit(Aux({"Tag": tag, "Digest": digest, "Size": len(body)}))
        return PushedTag(ref, digest, len(body))

    async def _layer(self, ref: reference.Reference, chain: str, diff_id: str,
                     semaphore: asyncio.Semaphore) -> mf.Descriptor:
        lid = _short(diff_id)
        if semaphore.locked():
            self.emit(Progress("Waiting", lid))
        async with semaphore:
            known = await asyncio.to_thread(self.blobsums.get, diff_id)
            foreign = [s for s in known if s.urls and s.media_type in mf.FOREIGN_LAYERS]
            if foreign:
                # As dockerd (without --allow-nondistributable-artifacts): a foreign layer is
                # named with its URLs in the manifest, never uploaded.
                self.emit(Progress("Skipped foreign layer", lid))
                return _descriptor(foreign[-1])
            here = [s for s in known if s.domain == ref.domain]
            for source in reversed([s for s in here if s.path == ref.path]):
                if await self.client.blob_exists(source.digest):
                    self.emit(Progress("Layer already exists", lid))
                    return _descriptor(source)
            upload_at: str | None = None
            for source in reversed([s for s in here if s.path != ref.path]):
                upload_at = await self.client.mount(source.digest, source.path)
                if upload_at is None:
                    self.emit(Progress(f"Mounted from {source.path}", lid))
                    await asyncio.to_thread(self.blobsums.add_source, diff_id, BlobSource(
                        source.digest, source.media_type, source.size, ref.domain, ref.path))
                    return _descriptor(source)
                break  # the registry declined: upload into the session it opened
            if upload_at is None:
                upload_at = await self.client.start_upload()
            desc = await self._upload(upload_at, chain, lid)
        await asyncio.to_thread(self.blobsums.add, diff_id, desc, ref.domain, ref.path)
        self.emit(Progress("Pushed", lid))
        return desc

    async def _upload(self, location: str, chain: str, lid: str) -> mf.Descriptor:
        record = self.images.tar_split_path(chain)
        diff = self.images.layer_path(chain) / "diff"
        try:
            total = await asyncio.to_thread(tarsplit.tar_size, record)
        except (OSError, tarsplit.SplitError) as exc:
            raise InvalidParameter(f"layer {lid} cannot be pushed: its original tar cannot be "
                                   f"rebuilt ({exc})") from exc
        loop = asyncio.get_running_loop()
        pipe = ThreadPipe(loop)
        counted = [0]
        result: asyncio.Future[tuple[str, int]] = loop.create_future()

        def produce() -> None:  # worker thread: tar → gzip → pipe, hashed on the way
            hasher = hashlib.sha256()
            size = 0
            compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)

            class Sink:
                def write(self, data: bytes) -> int:
                    nonlocal size
                    counted[0] += len(data)
                    out = compressor.compress(data)
                    if out:
                        hasher.update(out)
                        size += len(out)
                        pipe.write(out)
                    return len(data)

            try:
                tarsplit.assemble(record, diff, Sink())  # type: ignore[arg-type]
                tail = compressor.flush()
                hasher.update(tail)
                size += len(tail)
                pipe.write(tail)
                loop.call_soon_threadsafe(_set, result, ("sha256:" + hasher.hexdigest(), size))
                pipe.finish()
            except BrokenPipeError:
                pass
            except BaseException as exc:
                pipe.fail(exc)

        async def body() -> AsyncIterator[bytes]:
            last = 0.0
            async for chunk in pipe.chunks():
                now = time.monotonic()
                if now - last >= PROGRESS_EVERY:
                    last = now
                    self.emit(Progress("Pushing", lid, min(counted[0], total), total))
                yield chunk
            self.emit(Progress("Pushing", lid, total, total))

        worker = asyncio.ensure_future(asyncio.to_thread(produce))
        try:
            await self.client.upload(location, body(), _digest(result))
        finally:
            pipe.close()
            await worker
        digest, size = result.result()
        return mf.Descriptor(mf.DOCKER_LAYER_GZIP, digest, size)


def _set(future: "asyncio.Future[tuple[str, int]]", value: tuple[str, int]) -> None:
    if not future.done():
        future.set_result(value)


async def _digest(result: "asyncio.Future[tuple[str, int]]") -> str:
    return (await result)[0]


def _descriptor(source: BlobSource) -> mf.Descriptor:
    return mf.Descriptor(source.media_type, source.digest, source.size, list(source.urls))


def build_manifest(config: bytes, config_digest: str, layers: list[mf.Descriptor]
                   ) -> tuple[str, bytes]:
    """A schema2 manifest (an OCI one when a layer has an OCI-only media type, e.g. zstd),
    serialised as dockerd does: keys in its order, 3-space indentation."""
    oci = any(d.media_type.startswith("application/vnd.oci.") for d in layers)
    if oci:
        layers = [mf.Descriptor(OCI_LAYER_GZIP, d.digest, d.size, d.urls)
                  if d.media_type == mf.DOCKER_LAYER_GZIP else d for d in layers]
    media = MEDIA_OCI_MANIFEST if oci else MEDIA_DOCKER_MANIFEST
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": media,
        "config": {"mediaType": OCI_CONFIG if oci else mf.DOCKER_CONFIG,
                   "size": len(config), "digest": config_digest},
        "layers": [d.to_json() for d in layers],
    }
    return media, json.dumps(doc, indent=3).encode()


def _short(digest: str) -> str:
    return digest.removeprefix("sha256:")[:12]
