"""API versions: the range stowd serves and helpers for version-gated shapes.

A path version is compared as dockerd compares it (moby `api/types/versions`): split on
dots, each part an integer (a part that is not a number counts as 0), missing parts are 0.
So `/v1/` is version 1.0 (too old) and `/v1.44.0/` is 1.44.
"""

from stowd.engine.errors import InvalidParameter

MIN_API_VERSION = "1.24"
MAX_API_VERSION = "1.44"
DEFAULT_API_VERSION = MAX_API_VERSION

# Below this path version dockerd answers errors in plain text, not JSON: clients that old
# print the body as-is.
PLAIN_TEXT_ERRORS_BELOW = "1.24"


class VersionOutOfRange(InvalidParameter):
    """The path version is outside [MIN_API_VERSION, MAX_API_VERSION]: Docker's 400."""


def parse(version: str) -> tuple[int, int]:
    """A strict `MAJOR.MINOR` for code that builds versions (not for request paths)."""
    major, _, minor = version.partition(".")
    if not major.isdigit() or not minor.isdigit():
        raise InvalidParameter(f"invalid API version: {version}")
    return int(major), int(minor)


def _parts(version: str) -> list[int]:
    return [int(p) if p.isdigit() else 0 for p in version.split(".")]


def compare(a: str, b: str) -> int:
    """-1, 0 or 1 as dockerd's versions.compare: numeric per dot-separated part."""
    pa, pb = _parts(a), _parts(b)
    width = max(len(pa), len(pb))
    pa += [0] * (width - len(pa))
    pb += [0] * (width - len(pb))
    return (pa > pb) - (pa < pb)


def as_tuple(version: str) -> tuple[int, int]:
    """The path version as (major, minor), the form handlers compare against."""
    parts = _parts(version) + [0, 0]
    return parts[0], parts[1]


MIN = parse(MIN_API_VERSION)
MAX = parse(MAX_API_VERSION)


def check(version: str) -> tuple[int, int]:
    """The requested version as a tuple, or Docker's 400 when it is out of range."""
    if compare(version, MIN_API_VERSION) < 0:
        raise VersionOutOfRange(
            f"client version {version} is too old. Minimum supported API version is "
            f"{MIN_API_VERSION}, please upgrade your client to a newer version"
        )
    if compare(version, MAX_API_VERSION) > 0:
        raise VersionOutOfRange(
            f"client version {version} is too new. Maximum supported API version is "
            f"{MAX_API_VERSION}"
        )
    return as_tuple(version)


def wants_plain_text_errors(version: str | None) -> bool:
    """True for path versions older than 1.24, which get errors as text/plain."""
    return version is not None and compare(version, PLAIN_TEXT_ERRORS_BELOW) < 0
