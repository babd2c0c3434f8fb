"""Images: content-addressed configs, tags, and layers stored once by chain ID.

On disk: `images/blobs/sha256/<hex>` holds each image config as it was received (the image
ID is its digest), `layers/<chain-hex>/diff` each extracted layer. The database keeps the
records; files are written first and renamed into place, so a crash leaves at most an
unreferenced temporary directory, which start-up removes.
"""

import contextlib
import hashlib
import json
import os
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from stowd.engine.errors import Conflict, InvalidParameter, NotFound
from stowd.engine.images import reference
from stowd.engine.images.layers import TAR_SPLIT, ExtractedLayer, chain_id, extract_layer
from stowd.engine.store import Store


@dataclass
class Image:
    id: str  # sha256:<hex>
    config: dict[str, Any]  # the image config document (architecture, os, config, rootfs, ...)
    layers: list[str]  # chain IDs, bottom first
    size: int
    created: str
    repo_tags: list[str] = field(default_factory=list)
    repo_digests: list[str] = field(default_factory=list)
    parent: str = ""
    last_tag_time: str = ""

    @property
    def container_config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = self.config.get("config") or {}
        return cfg

    def to_record(self) -> dict[str, Any]:
        return {"id": self.id, "layers": self.layers, "size": self.size, "created": self.created,
                "parent": self.parent, "repo_digests": self.repo_digests,
                "last_tag_time": self.last_tag_time}


def _digest_ref_matches(repo_digest: str, ref: reference.Reference) -> bool:
    try:
        known = reference.parse(repo_digest, default_tag=False)
    except InvalidParameter:
        return False
    return known.repository == ref.repository and known.digest == ref.digest


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _created_ts(created: str) -> float:
    try:
        return datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return time.time()


class ImageStore:
    def __init__(self, store: Store, data_root: Path,
                 write: Callable[..., Any] | None = None) -> None:
        self.db = store  # read here, from any thread (SQLite in WAL mode)
        # Writes go through the engine's one database thread (core/db.py's Database.call),
        # ordered with every other record's; alone (unit tests) they are plain calls.
        self._write: Callable[..., Any] = write or (lambda fn, *args: fn(*args))
        self.blobs = data_root / "images" / "blobs" / "sha256"
        self.layers_root = data_root / "layers"
        # Scratch space for archives being loaded or saved: on the data-root's filesystem,
        # never in memory or /tmp (a tmpfs on many hosts).
        self.tmp_root = data_root / "images" / "tmp"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.layers_root.mkdir(parents=True, exist_ok=True)
        self.tmp_root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # Layers an unfinished load or save relies on: removal leaves them alone.
        self._pins: Counter[str] = Counter()
        for leftover in [*self.layers_root.glob("tmp-*"), *self.tmp_root.iterdir()]:
            shutil.rmtree(leftover, ignore_errors=True)

    # reading ----------------------------------------------------------------------------

    def _load(self, record: dict[str, Any], tags: dict[str, list[str]]) -> Image:
        image_id = record["id"]
        config = json.loads((self.blobs / image_id.removeprefix("sha256:")).read_bytes())
        return Image(
            id=image_id, config=config, layers=record["layers"], size=record["size"],
            created=record["created"], repo_tags=sorted(tags.get(image_id, [])),
            repo_digests=record.get("repo_digests", []), parent=record.get("parent", ""),
            last_tag_time=record.get("last_tag_time", ""),
        )

    def _tags_by_image(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for ref, image_id in self.db.all_tags():
            out.setdefault(image_id, []).append(reference.parse(ref).familiar())
        return out

    def all(self) -> list[Image]:
        tags = self._tags_by_image()
        return [self._load(r, tags) for r in self.db.all_images()]

    def children(self, parent_id: str) -> list[Image]:
        """The images whose parent is parent_id, newest first (build steps built on it)."""
        records = self.db.child_images(parent_id)
        tags = self._tags_by_image() if records else {}
        return [self._load(r, tags) for r in records]

    def resolve(self, name: str) -> Image:
        """An image by reference, full or short ID, or digest; NotFound otherwise."""
        image = self.find(name)
        if image is None:
            raise NotFound(f"No such image: {name}")
        return image

    def find(self, name: str) -> Image | None:
        """Docker's lookup order: a tag, a `name@digest`, then a full or short image ID.

        None when nothing matches; InvalidParameter for a malformed name, NotFound for a
        short ID that several images start with (Docker answers 404 there too)."""
        id_like = reference.is_image_id_like(name)
        try:
            ref: reference.Reference | None = reference.parse(name)
        except InvalidParameter:
            if not id_like:
                raise
            ref = None
        records = {r["id"]: r for r in self.db.all_images()}
        wanted: str | None = None
        if ref is not None and ref.digest is None:
            wanted = dict(self.db.all_tags()).get(ref.full())
        elif ref is not None:
            for image_id, rec in records.items():
                if any(_digest_ref_matches(d, ref) for d in rec.get("repo_digests") or []):
                    wanted = image_id
                    break
        if wanted is None and id_like:
            prefix = name.removeprefix("sha256:")
            matches = [i for i in records if i.removeprefix("sha256:").startswith(prefix)]
            if len(matches) > 1:
                raise NotFound(f"No such image: {name} (a short ID that {len(matches)} "
                               "images start with)")
            if matches:
                wanted = matches[0]
        if wanted is None or wanted not in records:
            return None
        return self._load(records[wanted], self._tags_by_image())

    def layer_dirs(self, image: Image) -> list[str]:
        """Lower directories for an overlay mount, topmost first."""
        return [str(self.layer_path(c) / "diff") for c in reversed(image.layers)]

    def layer_path(self, chain: str) -> Path:
        return self.layers_root / chain.removeprefix("sha256:")

    # writing ----------------------------------------------------------------------------

    def tar_split_path(self, chain: str) -> Path:
        return self.layer_path(chain) / TAR_SPLIT

    def store_layer(self, source: BinaryIO, parent_chain: str | None,
                    progress: Callable[[int], None] | None = None,
                    expected_diff_id: str | None = None,
                    compression: str | None = None) -> tuple[str, str, int]:
        """Extract a layer tar on top of parent_chain; returns (chain ID, diff ID, size).

        With expected_diff_id, a layer with another digest is refused and not stored.
        compression ("gzip", "zstd", "none") is the blob's, None to guess it."""
        layer: ExtractedLayer = extract_layer(source, self.layers_root, progress,
                                              expected_diff_id, compression)
        chain = chain_id(parent_chain, layer.diff_id)
        final = self.layer_path(chain)
        with self._lock:
            if final.exists():
                shutil.rmtree(layer.path, ignore_errors=True)
            else:
                os.rename(layer.path, final)
            self._write(self.db.put_layer, chain, layer.diff_id, parent_chain, layer.size)
        return chain, layer.diff_id, layer.size

    def pin(self, chains: list[str]) -> None:
        with self._lock:
            self._pins.update(chains)

    def unpin(self, chains: list[str]) -> None:
        with self._lock:
            self._pins.subtract(chains)
            self._pins += Counter()

    def discard_layers(self, chains: list[str]) -> None:
        """Remove layers of a failed load that no image and no other operation uses."""
        with self._lock:
            in_use = {c for r in self.db.all_images() for c in r["layers"]}
            for chain in reversed(chains):
                if chain in in_use or self._pins[chain] > 0:
                    continue
                self._write(self.db.delete_layer, chain)
                shutil.rmtree(self.layer_path(chain), ignore_errors=True)

    def has_layer(self, chain: str) -> bool:
        return self.db.layer(chain) is not None and self.layer_path(chain).exists()

    def layer_size(self, chain: str) -> int:
        row = self.db.layer(chain)
        return row[2] if row else 0

    def add_image(self, config_bytes: bytes, chains: list[str], tags: list[reference.Reference],
                  repo_digests: list[str] | None = None, parent: str = ""
                  ) -> tuple[Image, list[tuple[reference.Reference, str]]]:
        """Record an image whose layers are stored.

        repo_digests (`name@sha256:<manifest digest>`) are added to those it has. Returns
        the image and, for each tag it took from another image, (tag, that image's ID)."""
        config = json.loads(config_bytes)
        diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
        if len(diff_ids) != len(chains):
            raise InvalidParameter("image config lists a different number of layers than given")
        image_id = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
        blob = self.blobs / image_id.removeprefix("sha256:")
        if not blob.exists():
            tmp = blob.with_suffix(".tmp")
            tmp.write_bytes(config_bytes)
            os.rename(tmp, blob)
        size = sum(self.layer_size(c) for c in chains)
        created = config.get("created") or now_rfc3339()
        existing = {r["id"]: r for r in self.db.all_images()}.get(image_id)
        record = existing or {"id": image_id, "layers": chains, "size": size, "created": created,
                              "parent": parent, "repo_digests": [], "last_tag_time": ""}
        if tags:
            record["last_tag_time"] = now_rfc3339()
        for digest_ref in repo_digests or []:
            if digest_ref not in record["repo_digests"]:
                record["repo_digests"] = [*record["repo_digests"], digest_ref]
        self._write(self.db.put_image, image_id, _created_ts(created), record)
        replaced = []
        for ref in tags:
            previous = self._write(self.db.set_tag, ref.full(), image_id)
            if previous:
                replaced.append((ref, previous))
        image = self.find(image_id)
        assert image is not None
        return image, replaced

    def tag(self, source: str, repo: str, tag: str) -> tuple[Image, reference.Reference]:
        """Point the tag named by repo and tag at the image source names."""
        ref = reference.tag_reference(repo, tag)
        image = self.resolve(source)
        self._write(self.db.set_tag, ref.full(), image.id)
        records = {r["id"]: r for r in self.db.all_images()}
        record = records[image.id]
        record["last_tag_time"] = now_rfc3339()
        self._write(self.db.put_image, image.id, _created_ts(record["created"]), record)
        return image, ref

    def untag(self, image_id: str, ref: reference.Reference) -> None:
        """Remove a tag, or a `name@digest` reference, of the image."""
        if ref.digest is None:
            self._write(self.db.delete_tag, ref.full())
            return
        records = {r["id"]: r for r in self.db.all_images()}
        record = records.get(image_id)
        if record is not None:
            record["repo_digests"] = [d for d in record.get("repo_digests") or []
                                      if not _digest_ref_matches(d, ref)]
            self._write(self.db.put_image, image_id, _created_ts(record["created"]), record)

    def tags_of(self, image_id: str) -> list[reference.Reference]:
        return [reference.parse(r) for r, i in self.db.all_tags() if i == image_id]

    def digests_of(self, image_id: str) -> list[reference.Reference]:
        records = {r["id"]: r for r in self.db.all_images()}
        out = []
        for text in (records.get(image_id) or {}).get("repo_digests") or []:
            with contextlib.suppress(InvalidParameter):
                out.append(reference.parse(text, default_tag=False))
        return out

    def remove_image(self, image: Image) -> list[str]:
        """Delete an image record, its config and the layers no other image uses.

        Returns the layer chain IDs that were removed."""
        self._write(self.db.delete_image, image.id)
        (self.blobs / image.id.removeprefix("sha256:")).unlink(missing_ok=True)
        removed = []
        with self._lock:
            in_use = {c for r in self.db.all_images() for c in r["layers"]}
            for chain in reversed(image.layers):
                if chain in in_use or self._pins[chain] > 0:
                    continue
                self._write(self.db.delete_layer, chain)
                shutil.rmtree(self.layer_path(chain), ignore_errors=True)
                removed.append(chain)
        return removed


def ensure_unused(image: Image, users: list[str]) -> None:
    if users:
        raise Conflict(
            f"conflict: unable to delete {image.id.removeprefix('sha256:')[:12]} (must be forced)"
            f" - image is being used by stopped container {users[0][:12]}"
        )
