"""Builders of image archives for tests (docker-save and OCI layouts), and their own checks.

The integration tests import the builders from here: every archive a test loads is made by
the test, in memory, from layer descriptions.
"""

import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from typing import Any

# layer tars -----------------------------------------------------------------------------------


@dataclass
class Member:
    """One entry of a layer tar. kind: file, dir, symlink, hardlink."""
    name: str
    kind: str = "file"
    data: bytes = b""
    target: str = ""
    mode: int | None = None


def file(name: str, data: bytes | str = b"", mode: int = 0o644) -> Member:
    return Member(name, "file", data.encode() if isinstance(data, str) else data, mode=mode)


def directory(name: str, mode: int = 0o755) -> Member:
    return Member(name, "dir", mode=mode)


def symlink(name: str, target: str) -> Member:
    return Member(name, "symlink", target=target)


def hardlink(name: str, target: str) -> Member:
    return Member(name, "hardlink", target=target)


def whiteout(path: str) -> Member:
    """The tar form of a deletion: `dir/.wh.name`."""
    parent, _, name = path.rpartition("/")
    return file(f"{parent}/.wh.{name}" if parent else f".wh.{name}")


def opaque(directory_path: str) -> Member:
    return file(f"{directory_path}/.wh..wh..opq")


def layer_tar(members: list[Member], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for m in members:
            info = tarfile.TarInfo(m.name)
            info.mtime = 1_700_000_000
            if m.kind == "dir":
                info.type = tarfile.DIRTYPE
                info.mode = m.mode if m.mode is not None else 0o755
                tar.addfile(info)
            elif m.kind in ("symlink", "hardlink"):
                info.type = tarfile.SYMTYPE if m.kind == "symlink" else tarfile.LNKTYPE
                info.linkname = m.target
                info.mode = 0o777 if m.kind == "symlink" else 0o644
                tar.addfile(info)
            else:
                info.size = len(m.data)
                info.mode = m.mode if m.mode is not None else 0o644
                tar.addfile(info, io.BytesIO(m.data))
    return buf.getvalue()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# images -----------------------------------------------------------------------------------------

PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class ImageSpec:
    """An image to put in an archive: its layer tars (uncompressed) and config settings."""
    layers: list[bytes]
    tags: list[str] = field(default_factory=list)
    cmd: list[str] | None = None
    labels: dict[str, str] | None = None
    architecture: str = "amd64"
    os: str = "linux"
    compress: set[int] = field(default_factory=set)  # indexes of layers stored gzipped
    diff_ids: list[str] | None = None  # override the real ones (to make a bad archive)
    created: str = "2024-01-02T03:04:05Z"

    def config(self) -> bytes:
        doc: dict[str, Any] = {
            "architecture": self.architecture,
            "os": self.os,
            "created": self.created,
            "config": {"Cmd": self.cmd, "Labels": self.labels, "Env": [PATH_ENV]},
            "rootfs": {"type": "layers",
                       "diff_ids": self.diff_ids or [sha256(layer) for layer in self.layers]},
            "history": [{"created": "2024-01-02T03:04:05Z", "created_by": f"layer {i}"}
                        for i in range(len(self.layers))],
        }
        return json.dumps(doc, separators=(",", ":")).encode()

    @property
    def id(self) -> str:
        return sha256(self.config())

    def stored_layer(self, index: int) -> bytes:
        data = self.layers[index]
        return gzip.compress(data, mtime=0) if index in self.compress else data


class ArchiveWriter:
    def __init__(self, compress_outer: bool = False) -> None:
        self.buf = io.BytesIO()
        self.tar = tarfile.open(  # noqa: SIM115 - closed by close()
            fileobj=self.buf, mode="w:gz" if compress_outer else "w")

    def add(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = 0o644
        self.tar.addfile(info, io.BytesIO(data))

    def add_dir(self, name: str) -> None:
        info = tarfile.TarInfo(name)
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        self.tar.addfile(info)

    def add_symlink(self, name: str, target: str) -> None:
        info = tarfile.TarInfo(name)
        info.type = tarfile.SYMTYPE
        info.linkname = target
        self.tar.addfile(info)

    def add_hardlink(self, name: str, target: str) -> None:
        info = tarfile.TarInfo(name)
        info.type = tarfile.LNKTYPE
        info.linkname = target
        self.tar.addfile(info)

    def close(self) -> bytes:
        self.tar.close()
        return self.buf.getvalue()


def docker_save_tar(images: list[ImageSpec], link_repeated_layers: bool = True,
                    compress_outer: bool = False, manifest: Any = None) -> bytes:
    """A `docker save` archive: a directory per layer, repeated layers as symlinks to the first
    copy (as dockerd writes them), manifest.json last."""
    out = ArchiveWriter(compress_outer)
    entries = []
    repositories: dict[str, dict[str, str]] = {}
    first_dir: dict[bytes, str] = {}
    for n, image in enumerate(images):
        config = image.config()
        config_name = hashlib.sha256(config).hexdigest() + ".json"
        out.add(config_name, config)
        layer_names = []
        for i in range(len(image.layers)):
            stored = image.stored_layer(i)
            layer_dir = hashlib.sha256(f"{n}/{i}".encode() + stored).hexdigest()
            out.add_dir(layer_dir)
            out.add(f"{layer_dir}/VERSION", b"1.0")
            if link_repeated_layers and stored in first_dir:
                out.add_symlink(f"{layer_dir}/layer.tar", f"../{first_dir[stored]}/layer.tar")
            else:
                out.add(f"{layer_dir}/layer.tar", stored)
                first_dir.setdefault(stored, layer_dir)
            layer_names.append(f"{layer_dir}/layer.tar")
        entries.append({"Config": config_name, "RepoTags": image.tags or None,
                        "Layers": layer_names})
        for tag in image.tags:
            repo, _, name = tag.rpartition(":")
            repositories.setdefault(repo, {})[name] = layer_names[-1].split("/")[0]
    out.add("manifest.json", json.dumps(manifest if manifest is not None else entries).encode())
    if repositories:
        out.add("repositories", json.dumps(repositories).encode())
    return out.close()


OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"


def _descriptor(media: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media, "digest": sha256(data), "size": len(data), **extra}


def oci_layout_tar(images: list[tuple[ImageSpec, dict[str, str]]], nested_index: bool = False,
                   other_platform: bool = True, corrupt_blob: str | None = None) -> bytes:
    """An OCI image layout. images: (image, annotations of its index.json descriptor).

    nested_index puts each image behind a multi-platform index (with an arm64 entry that
    must be skipped when other_platform)."""
    blobs: dict[str, bytes] = {}

    def blob(data: bytes) -> bytes:
        blobs[sha256(data)] = data
        return data

    top = []
    for image, annotations in images:
        config = blob(image.config())
        layers = []
        for i in range(len(image.layers)):
            stored = blob(image.stored_layer(i))
            media = "application/vnd.oci.image.layer.v1.tar" + (
                "+gzip" if i in image.compress else "")
            layers.append(_descriptor(media, stored))
        manifest = blob(json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": _descriptor(OCI_CONFIG, config), "layers": layers}).encode())
        if not nested_index:
            top.append(_descriptor(OCI_MANIFEST, manifest, annotations=annotations))
            continue
        entries = []
        if other_platform:
            other = ImageSpec([layer_tar([file("arm", "arm64 only")])], architecture="arm64")
            other_config = blob(other.config())
            other_layer = blob(other.layers[0])
            other_manifest = blob(json.dumps({
                "schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": _descriptor(OCI_CONFIG, other_config),
                "layers": [_descriptor("application/vnd.oci.image.layer.v1.tar",
                                       other_layer)]}).encode())
            entries.append(_descriptor(OCI_MANIFEST, other_manifest,
                                       platform={"os": "linux", "architecture": "arm64"}))
        entries.append(_descriptor(OCI_MANIFEST, manifest,
                                   platform={"os": "linux",
                                             "architecture": image.architecture}))
        index = blob(json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                                 "manifests": entries}).encode())
        top.append(_descriptor(OCI_INDEX, index, annotations=annotations))
    out = ArchiveWriter()
    out.add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    out.add("index.json", json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                                      "manifests": top}).encode())
    out.add_dir("blobs")
    out.add_dir("blobs/sha256")
    for digest, data in blobs.items():
        if digest == corrupt_blob:
            data = data + b"tampered"
        out.add(f"blobs/sha256/{digest.removeprefix('sha256:')}", data)
    return out.close()


# checks of the builders themselves --------------------------------------------------------


def test_docker_save_tar_links_a_repeated_layer_to_its_first_copy() -> None:
    empty = layer_tar([])
    image = ImageSpec([layer_tar([file("a", "1")]), empty, empty], tags=["x:1"])
    data = docker_save_tar([image])
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = tar.getnames()
        links = [m for m in tar.getmembers() if m.issym()]
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert names[-2:] == ["manifest.json", "repositories"]
    assert len(links) == 1 and links[0].linkname.startswith("../")
    assert manifest[0]["RepoTags"] == ["x:1"] and len(manifest[0]["Layers"]) == 3


def test_oci_layout_tar_has_a_nested_index_per_image() -> None:
    image = ImageSpec([layer_tar([file("a", "1")])])
    data = oci_layout_tar([(image, {"io.containerd.image.name": "docker.io/library/x:1"})],
                          nested_index=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
    assert index["manifests"][0]["mediaType"] == OCI_INDEX
