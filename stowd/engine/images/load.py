"""`docker load`: an image archive → stored images.

Two archive forms are read:
- Docker's own `docker save` output: `manifest.json` (`[{Config, RepoTags, Layers}]`), one
  config file per image, one tar per layer (`<dir>/layer.tar`, possibly a symlink to another
  layer's file, or `blobs/sha256/<hex>` since Docker 25).
- An OCI image layout: `oci-layout`, `index.json`, `blobs/sha256/<hex>`; an index may point
  at manifests or at further indexes (a multi-platform image: the host's platform is taken).
  Names come from the `io.containerd.image.name` or `org.opencontainers.image.ref.name`
  annotation of index.json's descriptors.

Blocking: run from a worker thread. The outer tar is read as a stream (it may be
compressed) and its members are spooled to a private directory under the data-root, since
`manifest.json` usually comes last; links in the archive are never created on disk but
resolved inside the archive, so no member can point outside it. Everything that can be
checked without extracting a layer is checked before anything is stored; a layer whose
sha256 differs from the config's diff ID is refused, and layers a failed load added are
removed again.
"""

import errno
import hashlib
import json
import os
import posixpath
import re
import shutil
import stat
import tarfile
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from stowd.engine.errors import InvalidParameter
from stowd.engine.images import reference
from stowd.engine.images.archive import host_arch
from stowd.engine.images.layers import DiffIDMismatch, chain_id
from stowd.engine.images.store import Image, ImageStore
from stowd.engine.tarstream import open_tar_stream, write_member

CHUNK = 1 << 20
MAX_JSON = 16 << 20  # manifests, indexes and configs are small; refuse to read huge ones
MAX_LINK_HOPS = 255

MEDIA_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MEDIA_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = {MEDIA_OCI_INDEX, MEDIA_DOCKER_LIST}
MANIFEST_TYPES = {MEDIA_OCI_MANIFEST, MEDIA_DOCKER_MANIFEST}
CONFIG_TYPES = {"application/vnd.oci.image.config.v1+json",
                "application/vnd.docker.container.image.v1+json"}

ANNOTATION_CONTAINERD_NAME = "io.containerd.image.name"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"

_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")


# what a load reports ----------------------------------------------------------------------

@dataclass
class LayerProgress:
    """Bytes of one layer file read so far (Docker's "Loading layer" line)."""
    layer_id: str  # the diff ID's first 12 hex digits, as Docker shows it
    current: int
    total: int


@dataclass
class LoadMessage:
    text: str  # one line of Docker's `stream` output, newline included


@dataclass
class LoadedImage:
    image: Image
    tags: list[reference.Reference]
    replaced: list[tuple[reference.Reference, str]]  # tags taken from other images


LoadUpdate = LayerProgress | LoadMessage | LoadedImage
Report = Callable[[LoadUpdate], None]


# the archive's members on disk ------------------------------------------------------------

def clean_member_name(name: str) -> str:
    """A member name as a path inside the archive: no leading /, no `..` above the root."""
    cleaned = posixpath.normpath("/" + name).lstrip("/")
    return "" if cleaned == "." else cleaned


def resolve_in_archive(name: str, links: dict[str, tuple[str, str]]) -> str:
    """The member `name` designates once every link on its path is followed.

    links maps a member path to ("sym", target) or ("hard", member name). Resolution is
    scoped to the archive the way Docker's FollowSymlinkInScope scopes it to a directory:
    an absolute target starts again at the archive root and `..` stops there.
    """
    pending = [p for p in name.split("/") if p]
    done: list[str] = []
    hops = 0
    while pending:
        part = pending.pop(0)
        if part == ".":
            continue
        if part == "..":
            if done:
                done.pop()
            continue
        link = links.get("/".join([*done, part]))
        if link is None:
            done.append(part)
            continue
        hops += 1
        if hops > MAX_LINK_HOPS:
            raise InvalidParameter(f"invalid archive: too many levels of links in {name}")
        kind, target = link
        if kind == "hard" or target.startswith("/"):
            done = []
        pending = [p for p in target.split("/") if p] + pending
    return "/".join(done)


@dataclass
class Spool:
    """The outer archive's regular files under root; its links only in a table."""
    root: Path
    links: dict[str, tuple[str, str]] = field(default_factory=dict)

    def path(self, name: str) -> Path | None:
        """The regular file a member name designates, or None."""
        rel = resolve_in_archive(clean_member_name(name), self.links)
        if not rel:
            return None
        full = self.root / rel
        try:
            st = os.lstat(full)
        except OSError:
            return None
        return full if stat.S_ISREG(st.st_mode) else None

    def file(self, name: str) -> Path:
        found = self.path(name)
        if found is None:
            raise InvalidParameter(f"invalid archive: {name} is missing")
        return found

    def read(self, name: str) -> bytes:
        path = self.file(name)
        if path.stat().st_size > MAX_JSON:
            raise InvalidParameter(f"invalid archive: {name} is too large")
        return path.read_bytes()

    def read_json(self, name: str) -> Any:
        data = self.read(name)
        try:
            return json.loads(data)
        except ValueError as exc:
            raise InvalidParameter(f"invalid archive: {name} is not valid JSON: {exc}") from exc


_BAD_MEMBER_ERRNOS = {errno.EEXIST, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG,
                      errno.ENOTEMPTY}


def spool_archive(source: BinaryIO, root: Path) -> Spool:
    """Read the tar on source (plain or compressed) member by member into root."""
    spool = Spool(root)
    try:
        with open_tar_stream(source) as tar:
            for member in tar:
                _spool_member(tar, member, spool)
    except (tarfile.TarError, EOFError, zlib.error, UnicodeError) as exc:
        raise InvalidParameter(f"invalid tar archive: {exc}") from exc
    except OSError as exc:
        if exc.errno in _BAD_MEMBER_ERRNOS:
            raise InvalidParameter(f"invalid tar archive: {exc.strerror}: "
                                   f"{_archive_name(exc.filename, root)}") from exc
        raise
    # Whatever follows the end-of-archive marker is read too, so the request is complete.
    while source.read(CHUNK):
        pass
    return spool


def _archive_name(filename: object, root: Path) -> str:
    text = os.fsdecode(filename) if isinstance(filename, str | bytes) else str(filename)
    return text.removeprefix(str(root)).lstrip("/")


def _spool_member(tar: tarfile.TarFile, member: tarfile.TarInfo, spool: Spool) -> None:
    name = clean_member_name(member.name)
    if not name:
        return
    dest = spool.root / name
    if member.isdir():
        spool.links.pop(name, None)
        os.makedirs(dest, exist_ok=True)
    elif member.isreg():
        spool.links.pop(name, None)
        os.makedirs(dest.parent, exist_ok=True)
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            write_member(tar, member, fd)
        finally:
            os.close(fd)
    elif member.issym() or member.islnk():
        # Never created on disk: a link is only followed by resolve_in_archive.
        target = member.linkname if member.issym() else clean_member_name(member.linkname)
        spool.links[name] = ("sym" if member.issym() else "hard", target)
        if os.path.isfile(dest):
            os.unlink(dest)
    # Devices and fifos mean nothing in an image archive: skipped.


# what the archive holds --------------------------------------------------------------------

@dataclass
class ArchiveLayer:
    name: str  # member name of the layer tar
    digest: str | None = None  # the blob's digest, when the archive states it (OCI)


@dataclass
class ArchiveImage:
    config_name: str
    config: bytes
    diff_ids: list[str]
    layers: list[ArchiveLayer]
    tags: list[reference.Reference]
    repo_digests: list[str] = field(default_factory=list)  # name@digest of the descriptor

    @property
    def id(self) -> str:
        return "sha256:" + hashlib.sha256(self.config).hexdigest()


def parse_repo_tag(text: Any) -> reference.Reference:
    """A RepoTags entry or image name annotation: a name with a tag, as Docker requires."""
    if not isinstance(text, str):
        raise InvalidParameter(f"invalid tag {json.dumps(text)}")
    ref = reference.parse(text, default_tag=False)
    if ref.tag is None or ref.digest is not None:
        raise InvalidParameter(f"invalid tag {json.dumps(text)}")
    return ref


def check_config(config: bytes, name: str) -> list[str]:
    """The diff IDs of an image config; InvalidParameter if it is not one stowd can run."""
    try:
        doc = json.loads(config)
    except ValueError as exc:
        raise InvalidParameter(f"invalid image config {name}: {exc}") from exc
    if not isinstance(doc, dict):
        raise InvalidParameter(f"invalid image config {name}: not a JSON object")
    rootfs = doc.get("rootfs")
    if not isinstance(rootfs, dict):
        raise InvalidParameter("invalid image JSON, no RootFS key")
    diff_ids = rootfs.get("diff_ids") or []
    if not isinstance(diff_ids, list) or not all(
            isinstance(d, str) and _DIGEST.match(d) for d in diff_ids):
        raise InvalidParameter(f"invalid image config {name}: bad rootfs.diff_ids")
    image_os = doc.get("os") or "linux"
    if image_os != "linux":
        raise InvalidParameter(f"cannot load {image_os} image on linux")
    return diff_ids


def parse_docker_manifest(doc: Any) -> list[tuple[str, list[str], list[str]]]:
    """manifest.json → [(config name, layer names, repo tags)], validated."""
    if not isinstance(doc, list):
        raise InvalidParameter("invalid archive: manifest.json is not a list")
    out = []
    for entry in doc:
        if not isinstance(entry, dict):
            raise InvalidParameter("invalid archive: manifest.json entry is not an object")
        config = entry.get("Config")
        layers = entry.get("Layers") or []
        tags = entry.get("RepoTags") or []
        if not isinstance(config, str) or not config:
            raise InvalidParameter("invalid archive: manifest.json entry without Config")
        if not isinstance(layers, list) or not all(isinstance(x, str) for x in layers):
            raise InvalidParameter("invalid archive: manifest.json Layers is not a list of names")
        if not isinstance(tags, list):
            raise InvalidParameter("invalid archive: manifest.json RepoTags is not a list")
        out.append((config, layers, tags))
    return out


def descriptor_name(desc: dict[str, Any]) -> reference.Reference | None:
    """The image name an index.json descriptor carries, if any.

    containerd's annotation holds a full name; the OCI one often only a tag (`latest`),
    which names nothing without a repository, so it counts only when it has one."""
    annotations = desc.get("annotations") or {}
    if not isinstance(annotations, dict):
        return None
    full = annotations.get(ANNOTATION_CONTAINERD_NAME)
    if full:
        return parse_repo_tag(full)
    ref_name = annotations.get(ANNOTATION_REF_NAME)
    if isinstance(ref_name, str) and ("/" in ref_name or ":" in ref_name):
        return parse_repo_tag(ref_name)
    return None


def platform_matches(desc: dict[str, Any], arch: str) -> bool:
    platform = desc.get("platform")
    if not isinstance(platform, dict):
        return True
    return platform.get("os") == "linux" and platform.get("architecture") == arch


def check_descriptor(desc: Any) -> str:
    """A descriptor's digest; InvalidParameter unless it is a sha256 descriptor."""
    if not isinstance(desc, dict):
        raise InvalidParameter("invalid archive: descriptor is not an object")
    digest = desc.get("digest")
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise InvalidParameter(f"invalid archive: unsupported descriptor digest {digest!r}")
    return digest


def blob_name(digest: str) -> str:
    return "blobs/sha256/" + digest.removeprefix("sha256:")


def _read_blob(spool: Spool, digest: str) -> bytes:
    data = spool.read(blob_name(digest))
    actual = "sha256:" + hashlib.sha256(data).hexdigest()
    if actual != digest:
        raise InvalidParameter(f"invalid archive: blob {digest} has digest {actual}")
    return data


def _blob_json(spool: Spool, digest: str) -> Any:
    try:
        return json.loads(_read_blob(spool, digest))
    except ValueError as exc:
        raise InvalidParameter(f"invalid archive: blob {digest} is not valid JSON") from exc


def _oci_manifests(spool: Spool, desc: dict[str, Any], arch: str, depth: int = 0
                   ) -> list[dict[str, Any]]:
    """The image manifests a descriptor leads to, for this host's platform."""
    if depth > 8:
        raise InvalidParameter("invalid archive: indexes nested too deeply")
    digest = check_descriptor(desc)
    doc = _blob_json(spool, digest)
    if not isinstance(doc, dict):
        raise InvalidParameter(f"invalid archive: blob {digest} is not a JSON object")
    media = desc.get("mediaType") or doc.get("mediaType")
    if media in INDEX_TYPES or (media not in MANIFEST_TYPES and "manifests" in doc):
        entries = doc.get("manifests") or []
        if not isinstance(entries, list):
            raise InvalidParameter(f"invalid archive: index {digest} has no manifest list")
        matching = [d for d in entries if isinstance(d, dict) and platform_matches(d, arch)]
        for entry in matching:
            found = _oci_manifests(spool, entry, arch, depth + 1)
            if found:
                return found[:1]  # one manifest per platform, as a pull would take
        if entries:
            raise InvalidParameter(
                f"no matching manifest for linux/{arch} in the manifest list entries")
        return []
    config = doc.get("config")
    if not isinstance(config, dict):
        raise InvalidParameter(f"invalid archive: manifest {digest} has no config")
    if config.get("mediaType") and config["mediaType"] not in CONFIG_TYPES:
        return []  # an artifact (attestation, signature), not an image
    return [doc]


def plan_oci(spool: Spool, arch: str) -> list[ArchiveImage]:
    index = spool.read_json("index.json")
    if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
        raise InvalidParameter("invalid archive: index.json has no manifests")
    plans: list[ArchiveImage] = []
    for desc in index["manifests"]:
        if not isinstance(desc, dict) or not platform_matches(desc, arch):
            continue
        name = descriptor_name(desc)
        for manifest in _oci_manifests(spool, desc, arch):
            config_digest = check_descriptor(manifest["config"])
            config = _read_blob(spool, config_digest)
            layers = manifest.get("layers") or []
            if not isinstance(layers, list):
                raise InvalidParameter("invalid archive: manifest layers is not a list")
            archive_layers = []
            for layer in layers:
                digest = check_descriptor(layer)
                archive_layers.append(ArchiveLayer(blob_name(digest), digest))
            plan = _plan(spool, blob_name(config_digest), config, archive_layers,
                         [name] if name else [])
            if name:
                # What a pull by this name would record: the digest the name points at.
                plan.repo_digests.append(f"{name.familiar_repository}@{desc['digest']}")
            plans.append(plan)
    if not plans:
        raise InvalidParameter(f"invalid archive: index.json lists no image for linux/{arch}")
    return plans


def plan_docker(spool: Spool) -> list[ArchiveImage]:
    plans = []
    for config_name, layer_names, tags in parse_docker_manifest(spool.read_json("manifest.json")):
        refs = [parse_repo_tag(t) for t in tags]
        plans.append(_plan(spool, config_name, spool.read(config_name),
                           [ArchiveLayer(n) for n in layer_names], refs))
    return plans


def _plan(spool: Spool, config_name: str, config: bytes, layers: list[ArchiveLayer],
          tags: list[reference.Reference]) -> ArchiveImage:
    diff_ids = check_config(config, config_name)
    if len(layers) != len(diff_ids):
        raise InvalidParameter(f"invalid manifest, layers length mismatch: expected "
                               f"{len(diff_ids)}, got {len(layers)}")
    for layer in layers:
        spool.file(layer.name)
    return ArchiveImage(config_name, config, diff_ids, layers, tags)


def plan_archive(spool: Spool, arch: str) -> list[ArchiveImage]:
    """Every image the archive holds, checked as far as it can be without extracting."""
    if spool.path("manifest.json") is not None:
        return plan_docker(spool)
    if spool.path("index.json") is not None:
        return plan_oci(spool, arch)
    if spool.path("repositories") is not None:
        raise InvalidParameter("archives in the pre-1.10 docker save format (no "
                               "manifest.json) are not supported")
    raise InvalidParameter("invalid archive: no manifest.json or index.json "
                           "(not a docker save or OCI image archive)")


# storing -----------------------------------------------------------------------------------

class _HashingReader:
    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.hasher = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self.hasher.update(data)
        return data


def _store_image(images: ImageStore, spool: Spool, plan: ArchiveImage, report: Report,
                 verbose: bool) -> None:
    chains: list[str] = []
    added: list[str] = []  # layers this load extracted, removed again if it fails
    parent: str | None = None
    try:
        for index, (layer, diff_id) in enumerate(zip(plan.layers, plan.diff_ids, strict=True)):
            chain = chain_id(parent, diff_id)
            images.pin([chain])
            chains.append(chain)
            if not images.has_layer(chain):
                blob_digest = _store_layer(images, spool, layer, index, diff_id, parent,
                                           report, verbose)
                added.append(chain)
                if layer.digest is not None and blob_digest != layer.digest:
                    raise InvalidParameter(f"invalid archive: layer blob {layer.digest} has "
                                           f"digest {blob_digest}")
            parent = chain
        image, replaced = images.add_image(plan.config, chains, plan.tags, plan.repo_digests)
    except BaseException:
        images.unpin(chains)
        images.discard_layers(added)
        raise
    images.unpin(chains)
    report(LoadedImage(image, plan.tags, replaced))
    moved = dict((ref.full(), old) for ref, old in replaced)
    for ref in plan.tags:
        if ref.full() in moved:
            report(LoadMessage(f"The image {ref.familiar()} already exists, renaming the old one "
                               f"with ID {moved[ref.full()]} to empty string\n"))
        report(LoadMessage(f"Loaded image: {ref.familiar()}\n"))
    if not plan.tags:
        report(LoadMessage(f"Loaded image ID: {image.id}\n"))


def _store_layer(images: ImageStore, spool: Spool, layer: ArchiveLayer, index: int,
                 diff_id: str, parent: str | None, report: Report, verbose: bool) -> str:
    """Extract one layer file on top of parent; returns the file's own digest."""
    path = spool.file(layer.name)
    total = path.stat().st_size
    short = diff_id.removeprefix("sha256:")[:12]

    def progress(read: int) -> None:
        report(LayerProgress(short, read, total))

    with open(path, "rb") as raw:
        source = _HashingReader(raw)
        try:
            images.store_layer(source, parent,  # type: ignore[arg-type]
                               progress if verbose else None, expected_diff_id=diff_id)
        except DiffIDMismatch as exc:
            raise InvalidParameter(f'invalid diffID for layer {index}: expected "{diff_id}", '
                                   f'got "{exc.actual}"') from exc
        # GNU tar may stop before the file's end (after the end-of-archive blocks): the blob
        # digest covers every byte.
        while source.read(CHUNK):
            pass
    return "sha256:" + source.hasher.hexdigest()


def load_archive(images: ImageStore, source: BinaryIO, report: Report, verbose: bool) -> None:
    """Load every image in the archive on source. Blocking."""
    workdir = Path(tempfile.mkdtemp(prefix="load-", dir=images.tmp_root))
    try:
        spool = spool_archive(source, workdir)
        for plan in plan_archive(spool, host_arch()):
            _store_image(images, spool, plan, report, verbose)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
