"""Image references, parsed and normalized as Docker's distribution/reference does.

`busybox` is `docker.io/library/busybox:latest`; the familiar form drops the default
registry and the `library/` namespace again for display (`busybox:latest`).
"""

import re
from dataclasses import dataclass

from stowd.engine.errors import InvalidParameter

DEFAULT_DOMAIN = "docker.io"
OFFICIAL_NAMESPACE = "library"
DEFAULT_TAG = "latest"

_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST = re.compile(r"^[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}$")
NAME_MAX = 255
_DOMAIN = re.compile(
    r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"(?::[0-9]+)?$|^\[[a-fA-F0-9:]+\](?::[0-9]+)?$"
)
_HEX64 = re.compile(r"^[a-f0-9]{64}$")


@dataclass(frozen=True)
class Reference:
    domain: str
    path: str  # repository path within the domain, e.g. library/busybox
    tag: str | None = None
    digest: str | None = None

    @property
    def repository(self) -> str:
        """The full repository name, e.g. docker.io/library/busybox."""
        return f"{self.domain}/{self.path}"

    @property
    def familiar_repository(self) -> str:
        if self.domain == DEFAULT_DOMAIN:
            return self.path.removeprefix(OFFICIAL_NAMESPACE + "/")
        return self.repository

    def __str__(self) -> str:
        return self.familiar()

    def full(self) -> str:
        return self._with_suffix(self.repository)

    def familiar(self) -> str:
        return self._with_suffix(self.familiar_repository)

    def _with_suffix(self, repo: str) -> str:
        out = repo
        if self.tag:
            out += ":" + self.tag
        if self.digest:
            out += "@" + self.digest
        return out

    def with_tag(self, tag: str) -> "Reference":
        return Reference(self.domain, self.path, tag, None)


def is_image_id_like(text: str) -> bool:
    """A full or short image ID, with or without the sha256: prefix."""
    t = text.removeprefix("sha256:")
    return bool(re.fullmatch(r"[a-f0-9]{1,64}", t))


def parse(text: str, default_tag: bool = True) -> Reference:
    """Parse a user's image name; raise InvalidParameter for a malformed one."""
    if not text or text != text.strip():
        raise InvalidParameter(f"invalid reference format: {text!r}" if text else
                               "invalid reference format")
    remainder = text
    digest = None
    if "@" in remainder:
        remainder, digest = remainder.split("@", 1)
        if not _DIGEST.match(digest):
            raise InvalidParameter("invalid reference format")
        algorithm, _, hex_part = digest.partition(":")
        if algorithm == "sha256" and not _HEX64.match(hex_part):
            raise InvalidParameter("invalid checksum digest length" if len(hex_part) != 64
                                   else "invalid checksum digest format")
    tag = None
    slash = remainder.rfind("/")
    colon = remainder.rfind(":")
    if colon > slash:
        remainder, tag = remainder[:colon], remainder[colon + 1:]
        if not _TAG.match(tag):
            raise InvalidParameter("invalid reference format")
    if not remainder:
        raise InvalidParameter("invalid reference format")
    if len(remainder) > NAME_MAX:
        raise InvalidParameter(f"repository name must not be more than {NAME_MAX} characters")
    parts = remainder.split("/")
    first = parts[0]
    if len(parts) > 1 and ("." in first or ":" in first or first == "localhost"
                           or first != first.lower()):
        domain, path_parts = first, parts[1:]
        if not _DOMAIN.match(domain):
            raise InvalidParameter("invalid reference format")
    else:
        domain, path_parts = DEFAULT_DOMAIN, parts
    if domain == "index.docker.io":
        domain = DEFAULT_DOMAIN
    path = "/".join(path_parts)
    if path != path.lower():
        raise InvalidParameter("invalid reference format: repository name must be lowercase")
    for comp in path_parts:
        if not _COMPONENT.match(comp):
            raise InvalidParameter("invalid reference format")
    if domain == DEFAULT_DOMAIN and len(path_parts) == 1:
        path = f"{OFFICIAL_NAMESPACE}/{path}"
    if _HEX64.match(path.rsplit("/", 1)[-1]) and domain == DEFAULT_DOMAIN and tag is None:
        raise InvalidParameter(
            f"invalid repository name ({text}), cannot specify 64-byte hexadecimal strings"
        )
    if tag is None and digest is None and default_tag:
        tag = DEFAULT_TAG
    return Reference(domain, path, tag, digest)


def tag_reference(repo: str, tag: str) -> Reference:
    """The `repo` and `tag` parameters of image tag and import → the tag to set.

    As Docker's RepoTagReference: a `tag` given replaces one written in `repo`; without
    either, the tag is `latest`."""
    if not repo:
        raise InvalidParameter("invalid reference format: repository name must have at "
                               "least one component")
    ref = parse(repo, default_tag=False)
    if ref.digest:
        raise InvalidParameter("refusing to create a tag with a digest reference")
    if tag:
        if not _TAG.match(tag):
            raise InvalidParameter("invalid tag format")
        return ref.with_tag(tag)
    return ref.with_tag(ref.tag or DEFAULT_TAG)
