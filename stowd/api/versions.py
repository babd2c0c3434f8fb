"""API versions: the range stowd serves and helpers for version-gated shapes."""

from stowd.engine.errors import InvalidParameter

MIN_API_VERSION = "1.24"
MAX_API_VERSION = "1.44"
DEFAULT_API_VERSION = MAX_API_VERSION


def parse(version: str) -> tuple[int, int]:
    major, _, minor = version.partition(".")
    if not major.isdigit() or not minor.isdigit():
        raise InvalidParameter(f"invalid API version: {version}")
    return int(major), int(minor)


MIN = parse(MIN_API_VERSION)
MAX = parse(MAX_API_VERSION)


def check(version: str) -> tuple[int, int]:
    """The requested version as a tuple, or Docker's 400 when it is out of range."""
    v = parse(version)
    if v < MIN:
        raise InvalidParameter(
            f"client version {version} is too old. Minimum supported API version is "
            f"{MIN_API_VERSION}, please upgrade your client to a newer version"
        )
    if v > MAX:
        raise InvalidParameter(
            f"client version {version} is too new. Maximum supported API version is "
            f"{MAX_API_VERSION}"
        )
    return v
