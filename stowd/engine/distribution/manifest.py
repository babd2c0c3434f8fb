"""Manifests and indexes as a registry serves them: parsing, platform choice, media types.

Pure logic. Docker schema2 manifests and manifest lists, OCI manifests and indexes are read;
schema1 is refused with dockerd's words.
"""

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from stowd.engine.errors import InvalidParameter, NotFound
from stowd.engine.images.load import (
    CONFIG_TYPES,
    MEDIA_DOCKER_LIST,
    MEDIA_DOCKER_MANIFEST,
    MEDIA_OCI_INDEX,
    MEDIA_OCI_MANIFEST,
)

MEDIA_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
MEDIA_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
# The order dockerd sends; schema1 only so that it can be recognised and refused.
ACCEPT = [MEDIA_DOCKER_MANIFEST, MEDIA_DOCKER_LIST, MEDIA_OCI_MANIFEST, MEDIA_OCI_INDEX]
MAX_MANIFEST = 4 << 20  # dockerd's limit on a manifest body

# Layer media types → the compression of the blob. Never guessed from the bytes.
LAYER_COMPRESSION = {
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": "gzip",
    "application/vnd.oci.image.layer.v1.tar": "none",
    "application/vnd.oci.image.layer.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd": "zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar": "none",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": "zstd",
}
FOREIGN_LAYERS = {
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
}
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"

_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")


def schema1_message(ref: str) -> str:
    return ("Docker Image Format v1 and Docker Image manifest version 2, schema 1 support has "
            f"been removed. Suggest the author of {ref} to upgrade the image to the OCI Format "
            "or Docker Image manifest v2, schema 2. More information at "
            "https://docs.docker.com/go/deprecated-image-specs/")


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    urls: list[str] = field(default_factory=list)
    platform: dict[str, Any] | None = None
    annotations: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, doc: Any, what: str) -> "Descriptor":
        if not isinstance(doc, dict):
            raise InvalidParameter(f"invalid manifest: {what} is not an object")
        digest, size = doc.get("digest"), doc.get("size")
        if not isinstance(digest, str) or not _DIGEST.match(digest):
            raise InvalidParameter(f"invalid manifest: {what} has an unsupported digest "
                                   f"{digest!r}")
        if not isinstance(size, int) or size < 0:
            raise InvalidParameter(f"invalid manifest: {what} has no valid size")
        urls = doc.get("urls") or []
        platform = doc.get("platform")
        annotations = doc.get("annotations") or {}
        return cls(str(doc.get("mediaType") or ""), digest, size,
                   [u for u in urls if isinstance(u, str)] if isinstance(urls, list) else [],
                   platform if isinstance(platform, dict) else None,
                   annotations if isinstance(annotations, dict) else {})

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "size": self.size,
                               "digest": self.digest}
        if self.urls:
            out["urls"] = self.urls
        return out


@dataclass
class ImageManifest:
    media_type: str
    config: Descriptor
    layers: list[Descriptor]


@dataclass
class Index:
    media_type: str
    manifests: list[Descriptor]


def parse(body: bytes, content_type: str, ref: str) -> ImageManifest | Index:
    """A manifest body as served → an image manifest or an index."""
    media = content_type.split(";")[0].strip()
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise InvalidParameter(f"invalid manifest for {ref}: {exc}") from exc
    if not isinstance(doc, dict):
        raise InvalidParameter(f"invalid manifest for {ref}: not a JSON object")
    declared = doc.get("mediaType")
    if isinstance(declared, str) and declared:
        media = declared
    if media in (MEDIA_SCHEMA1, MEDIA_SCHEMA1_SIGNED) or doc.get("schemaVersion") == 1:
        raise InvalidParameter(schema1_message(ref))
    if media in (MEDIA_DOCKER_LIST, MEDIA_OCI_INDEX) or (
            media not in (MEDIA_DOCKER_MANIFEST, MEDIA_OCI_MANIFEST) and "manifests" in doc):
        entries = doc.get("manifests")
        if not isinstance(entries, list):
            raise InvalidParameter(f"invalid manifest list for {ref}: no manifests")
        return Index(media or MEDIA_OCI_INDEX,
                     [Descriptor.parse(d, "a manifest list entry") for d in entries])
    if media not in (MEDIA_DOCKER_MANIFEST, MEDIA_OCI_MANIFEST) and "config" not in doc:
        raise InvalidParameter(f"unsupported manifest format for {ref}: {media or 'unknown'}")
    config = Descriptor.parse(doc.get("config"), "the config")
    if config.media_type and config.media_type not in CONFIG_TYPES:
        raise InvalidParameter(
            f"{ref} is not a container image (config media type {config.media_type}): "
            "artifacts cannot be pulled")
    layers_doc = doc.get("layers")
    if not isinstance(layers_doc, list):
        raise InvalidParameter(f"invalid manifest for {ref}: no layers")
    layers = [Descriptor.parse(d, "a layer") for d in layers_doc]
    for layer in layers:
        if layer.media_type not in LAYER_COMPRESSION:
            raise InvalidParameter(f"unsupported layer media type {layer.media_type!r} in "
                                   f"{ref}")
    return ImageManifest(media or MEDIA_OCI_MANIFEST, config, layers)


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


_ARCH_ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "armhf": "arm",
                 "armel": "arm", "i386": "386"}


def normalize_arch(arch: str, variant: str) -> tuple[str, str]:
    arch = _ARCH_ALIASES.get(arch.lower(), arch.lower())
    if arch == "arm64" and variant == "v8":
        variant = ""  # containerd's normalisation: arm64 means v8
    return arch, variant


def parse_platform(text: str, default: Platform) -> Platform:
    """`os[/arch[/variant]]` as `docker pull --platform` sends it; empty: the default."""
    if not text:
        return default
    parts = text.lower().split("/")
    if len(parts) > 3 or not all(parts):
        raise InvalidParameter(f"invalid platform {text!r}: expected os[/arch[/variant]]")
    if len(parts) == 1:
        return Platform(parts[0], default.architecture, default.variant)
    arch, variant = normalize_arch(parts[1], parts[2] if len(parts) == 3 else "")
    return Platform(parts[0], arch, variant)


def _entry_platform(desc: Descriptor) -> Platform | None:
    p = desc.platform
    if not p or not isinstance(p.get("os"), str) or not isinstance(p.get("architecture"), str):
        return None
    arch, variant = normalize_arch(p["architecture"], str(p.get("variant") or ""))
    return Platform(p["os"], arch, variant)


def is_attestation(desc: Descriptor) -> bool:
    return desc.annotations.get("vnd.docker.reference.type") == "attestation-manifest"


def choose(index: Index, want: Platform) -> Descriptor:
    """The entry for want (the host's platform unless asked), skipping attestations."""
    available: list[str] = []
    for desc in index.manifests:
        platform = _entry_platform(desc)
        if platform is None or is_attestation(desc) or platform.os == "unknown":
            continue
        if desc.media_type and desc.media_type not in (MEDIA_DOCKER_MANIFEST,
                                                       MEDIA_OCI_MANIFEST):
            continue
        available.append(str(platform))
        if platform.os == want.os and platform.architecture == want.architecture and (
                not want.variant or platform.variant == want.variant):
            return desc
    raise NotFound(f"no matching manifest for {want} in the manifest list entries "
                   f"(available: {', '.join(available) or 'none'})")

