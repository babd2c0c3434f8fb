"""API versions: the accepted range, dockerd's comparison and messages, and the /vX.Y routes."""

import re
from pathlib import Path

import pytest

from stowd.api import versions
from stowd.api.app import make_app
from stowd.config import Settings
from stowd.engine.engine import Engine

TOO_OLD = ("client version {v} is too old. Minimum supported API version is 1.24, please "
           "upgrade your client to a newer version")
TOO_NEW = "client version {v} is too new. Maximum supported API version is 1.44"


def test_range_advertised() -> None:
    assert versions.MIN_API_VERSION == "1.24"
    assert versions.MAX_API_VERSION == "1.44"
    assert versions.DEFAULT_API_VERSION == "1.44"


@pytest.mark.parametrize("minor", range(24, 45))
def test_every_version_in_range_is_accepted(minor: int) -> None:
    assert versions.check(f"1.{minor}") == (1, minor)


@pytest.mark.parametrize("v", ["1.23", "1.12", "1.9", "1", "0.99", "."])
def test_too_old(v: str) -> None:
    with pytest.raises(versions.VersionOutOfRange) as info:
        versions.check(v)
    assert info.value.message == TOO_OLD.format(v=v)


@pytest.mark.parametrize("v", ["1.45", "1.100", "2.0", "2", "1.44.1"])
def test_too_new(v: str) -> None:
    with pytest.raises(versions.VersionOutOfRange) as info:
        versions.check(v)
    assert info.value.message == TOO_NEW.format(v=v)


@pytest.mark.parametrize(("a", "b", "result"), [
    ("1.24", "1.24", 0), ("1.9", "1.24", -1), ("1.100", "1.44", 1), ("1.44.0", "1.44", 0),
    ("1", "1.0", 0), ("2", "1.99", 1), ("1.x", "1.0", 0),
])
def test_compare_like_dockerd(a: str, b: str, result: int) -> None:
    assert versions.compare(a, b) == result
    assert versions.compare(b, a) == -result


def test_extra_parts_are_accepted() -> None:
    assert versions.check("1.44.0") == (1, 44)
    assert versions.check("1.24.0") == (1, 24)


@pytest.mark.parametrize(("v", "plain"), [
    (None, False), ("1.24", False), ("1.44", False), ("1.45", False), ("1.23", True),
    ("1", True), ("1.9", True),
])
def test_plain_text_errors_below_1_24(v: str | None, plain: bool) -> None:
    assert versions.wants_plain_text_errors(v) is plain


def test_strict_parse() -> None:
    assert versions.parse("1.44") == (1, 44)
    with pytest.raises(versions.InvalidParameter):
        versions.parse("1")


def test_every_route_is_registered_bare_and_versioned(tmp_path: Path) -> None:
    """Each registered route resolves bare and under any /vX.Y prefix, to the same handler,
    with the version handed on in match_info."""
    import asyncio

    from aiohttp.test_utils import make_mocked_request

    app = make_app(Engine(Settings(data_root=tmp_path, exec_root=tmp_path)))
    routes = [(r.method, r.resource.get_info()) for r in app.router.routes() if r.resource]
    assert routes

    def sample(info: dict[str, str]) -> str:
        if "path" in info:
            return info["path"]
        return re.sub(r"\{[^}]+\}", "x", info["formatter"])

    async def check() -> None:
        for method, info in routes:
            path = sample(info)
            bare = await app.router.resolve(make_mocked_request(method, path))
            versioned = await app.router.resolve(make_mocked_request(method, "/v1.41" + path))
            assert bare.http_exception is None, (method, path)
            assert versioned.http_exception is None, (method, path)
            assert bare.handler is versioned.handler, (method, path)
            assert versioned["version"] == "1.41" and "version" not in bare

    asyncio.run(check())
