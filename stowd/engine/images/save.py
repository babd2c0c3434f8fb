"""`docker save`: images → a tar in Docker's legacy format, written as a stream.

What dockerd 20.10 writes, and any `docker load` reads: per layer a directory with
`VERSION`, `json` and `layer.tar`; per image `<config hex>.json`; then `manifest.json`
(`[{Config, RepoTags, Layers}]`) and, when some image has tags, `repositories`
(`{repo: {tag: top layer directory}}`).

Each layer.tar is the layer tar as it was received, rebuilt from the tar-split record and
the layer's files (tarsplit.py), so its sha256 is the diff ID the config states and the
image keeps its ID through save and load. A layer without a record is tarred again from its
directory, whiteouts turned back into `.wh.` entries; its digest then differs, so the
config is written after the layers, with the digests the archive really holds.

Blocking: run from a worker thread, writing into a pipe to the HTTP response.
"""

import hashlib
import io
import json
import logging
import os
import stat
import tarfile
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from stowd.engine.errors import InvalidParameter
from stowd.engine.images import reference, tarsplit
from stowd.engine.images.layers import OPAQUE_MARKER, OPAQUE_XATTR, WHITEOUT_PREFIX
from stowd.engine.images.store import Image, ImageStore

log = logging.getLogger("stowd.images")

BLOCK = tarfile.BLOCKSIZE
CHUNK = 1 << 20
EPOCH_CREATED = "1970-01-01T00:00:00Z"
# `sha256:<hex>` parses as repository `sha256` with a tag; dockerd takes it as an image ID.
ID_REPOSITORY = "library/sha256"


@dataclass
class SaveItem:
    image: Image
    tags: list[reference.Reference] = field(default_factory=list)


def select_images(images: ImageStore, names: list[str]) -> list[SaveItem]:
    """The images and tags to save for names, by Docker's rules.

    `repo:tag` saves that tag; a bare `repo` every tag of the repository; an ID, short ID or
    `name@digest` the image without tags. Unknown names are NotFound."""
    if not names:
        raise InvalidParameter("no image names given: pass one or more names")
    items: dict[str, SaveItem] = {}
    all_tags = images.db.all_tags()

    def add(image: Image, tag: reference.Reference | None) -> None:
        item = items.setdefault(image.id, SaveItem(image))
        if tag is not None and all(t.full() != tag.full() for t in item.tags):
            item.tags.append(tag)

    for name in names:
        try:
            ref: reference.Reference | None = reference.parse(name, default_tag=False)
        except InvalidParameter:
            if not reference.is_image_id_like(name):
                raise
            ref = None
        if ref is not None and (ref.digest or ref.path == ID_REPOSITORY):
            ref = None  # `name@digest` and `sha256:<id>` name an image, not a tag
        if ref is not None and ref.tag is None:
            matching = [(r, i) for r, i in ((reference.parse(t), i) for t, i in all_tags)
                        if r.repository == ref.repository]
            if matching:
                for tag_ref, image_id in matching:
                    add(images.resolve(image_id), tag_ref)
                continue
        image = images.resolve(name)
        tagged = ref is not None and ref.tag is not None and \
            (ref.full(), image.id) in all_tags
        add(image, ref if tagged else None)
    return list(items.values())


# tar writing ------------------------------------------------------------------------------

class _TarOut:
    """A tar written member by member onto a stream, content streamed, never held whole."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out

    def _header(self, name: str, size: int, mtime: int, kind: bytes = tarfile.REGTYPE) -> None:
        info = tarfile.TarInfo(name)
        info.size = size
        info.mtime = mtime
        info.type = kind
        info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
        info.uname = info.gname = "root"
        self.out.write(info.tobuf(tarfile.PAX_FORMAT))

    def directory(self, name: str, mtime: int) -> None:
        self._header(name, 0, mtime, tarfile.DIRTYPE)

    def file(self, name: str, data: bytes, mtime: int = 0) -> None:
        self._header(name, len(data), mtime)
        self.out.write(data)
        self.pad(len(data))

    def begin_file(self, name: str, size: int, mtime: int) -> None:
        self._header(name, size, mtime)

    def pad(self, size: int) -> None:
        if size % BLOCK:
            self.out.write(bytes(BLOCK - size % BLOCK))

    def close(self) -> None:
        self.out.write(bytes(2 * BLOCK))


class _DigestingWriter:
    """Counts and hashes what passes through to out."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.hasher = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hasher.update(data)
        self.size += len(data)
        self.out.write(data)
        return len(data)


def retar_layer(diff: Path, out: BinaryIO) -> None:
    """Tar an extracted layer directory again, overlay whiteouts back in their tar form."""
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for dirpath, dirnames, filenames in os.walk(diff):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, diff)
            prefix = "" if rel_dir == "." else rel_dir + "/"
            if prefix and _is_opaque(dirpath):
                _add_marker(tar, prefix + OPAQUE_MARKER)
            for name in sorted([*dirnames, *filenames]):
                full = os.path.join(dirpath, name)
                st = os.lstat(full)
                if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                    _add_marker(tar, prefix + WHITEOUT_PREFIX + name)
                    continue
                info = tar.gettarinfo(full, arcname=prefix + name)
                info.uname = info.gname = ""
                xattrs = _xattrs(full)
                if xattrs:
                    info.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in xattrs.items()}
                if info.isreg():
                    with open(full, "rb") as content:
                        tar.addfile(info, content)
                else:
                    tar.addfile(info)


def _is_opaque(path: str) -> bool:
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def _xattrs(path: str) -> dict[str, str]:
    out = {}
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    for key in names:
        if key.startswith("trusted.overlay."):
            continue
        try:
            out[key] = os.getxattr(path, key, follow_symlinks=False).decode(
                "utf-8", "surrogateescape")
        except OSError:
            continue
    return out


def _add_marker(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(b""))


def _created_mtime(image: Image) -> int:
    try:
        return max(0, int(datetime.fromisoformat(image.created.replace("Z", "+00:00"))
                          .timestamp()))
    except ValueError:
        return 0


class _ArchiveWriter:
    def __init__(self, images: ImageStore, out: BinaryIO) -> None:
        self.images = images
        self.tar = _TarOut(out)
        self.layer_digests: dict[str, str] = {}  # layer directory → digest of its layer.tar

    def write(self, items: list[SaveItem]) -> None:
        manifest: list[dict[str, Any]] = []
        repositories: dict[str, dict[str, str]] = {}
        for item in items:
            image = item.image
            mtime = _created_mtime(image)
            layer_names = []
            diff_ids = []
            parent_dir = ""
            for chain in image.layers:
                layer_dir = chain.removeprefix("sha256:")
                diff_ids.append(self._layer(chain, layer_dir, parent_dir, mtime))
                layer_names.append(f"{layer_dir}/layer.tar")
                parent_dir = layer_dir
            config = self._config(image, diff_ids)
            config_name = hashlib.sha256(config).hexdigest() + ".json"
            self.tar.file(config_name, config, mtime)
            manifest.append({"Config": config_name,
                             "RepoTags": [t.familiar() for t in item.tags] or None,
                             "Layers": layer_names})
            for tag in item.tags:
                if parent_dir and tag.tag:
                    repositories.setdefault(tag.familiar_repository, {})[tag.tag] = parent_dir
        self.tar.file("manifest.json", json.dumps(manifest, separators=(",", ":")).encode())
        if repositories:
            self.tar.file("repositories",
                          json.dumps(repositories, separators=(",", ":")).encode())
        self.tar.close()

    def _config(self, image: Image, diff_ids: list[str]) -> bytes:
        """The config as stored (its digest is the image ID), unless the layers changed."""
        blob = (self.images.blobs / image.id.removeprefix("sha256:")).read_bytes()
        stated = (image.config.get("rootfs") or {}).get("diff_ids") or []
        if stated == diff_ids:
            return blob
        log.warning("image %s is saved with re-tarred layers: it loads under a new ID",
                    image.id[:19])
        doc = json.loads(blob)
        doc["rootfs"] = {**(doc.get("rootfs") or {}), "diff_ids": diff_ids}
        return json.dumps(doc, separators=(",", ":")).encode()

    def _layer(self, chain: str, layer_dir: str, parent_dir: str, mtime: int) -> str:
        """Write one layer's directory, once per archive; returns its layer.tar's digest."""
        if layer_dir in self.layer_digests:
            return self.layer_digests[layer_dir]
        tar = self.tar
        tar.directory(layer_dir, mtime)
        tar.file(f"{layer_dir}/VERSION", b"1.0", mtime)
        v1: dict[str, Any] = {"id": layer_dir, "created": EPOCH_CREATED}
        if parent_dir:
            v1["parent"] = parent_dir
        tar.file(f"{layer_dir}/json", json.dumps(v1, separators=(",", ":")).encode(), mtime)
        name = f"{layer_dir}/layer.tar"
        diff = self.images.layer_path(chain) / "diff"
        record = self.images.tar_split_path(chain)
        size = None
        if record.exists():
            try:
                size = tarsplit.tar_size(record)
            except tarsplit.SplitError as exc:
                log.warning("layer %s: %s; tarring it again", chain[:19], exc)
        if size is None:
            digest = self._retarred(diff, name, mtime)
        else:
            tar.begin_file(name, size, mtime)
            sink = _DigestingWriter(tar.out)
            # A failure half-way leaves a truncated member: the caller must abort the stream.
            tarsplit.assemble(record, diff, sink)  # type: ignore[arg-type]
            if sink.size != size:
                raise tarsplit.SplitError(f"layer {chain[:19]} changed while being saved")
            tar.pad(size)
            digest = "sha256:" + sink.hasher.hexdigest()
        self.layer_digests[layer_dir] = digest
        return digest

    def _retarred(self, diff: Path, name: str, mtime: int) -> str:
        # A tar member's size comes before its content: tar the layer to scratch space first.
        with tempfile.TemporaryFile(dir=self.images.tmp_root) as scratch:
            retar_layer(diff, scratch)
            size = scratch.tell()
            scratch.seek(0)
            self.tar.begin_file(name, size, mtime)
            sink = _DigestingWriter(self.tar.out)
            while chunk := scratch.read(CHUNK):
                sink.write(chunk)
            self.tar.pad(size)
        return "sha256:" + sink.hasher.hexdigest()


def write_archive(images: ImageStore, items: list[SaveItem], out: BinaryIO) -> None:
    """Write the archive for items to out. Blocking; pin the images' layers meanwhile."""
    _ArchiveWriter(images, out).write(items)
