"""Image lookup (tags, digests, full and short IDs) and the image list filters, on a real store."""

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from stowd.engine.errors import InvalidParameter, NotFound
from stowd.engine.images import listing
from stowd.engine.images.reference import parse
from stowd.engine.images.store import Image, ImageStore
from stowd.engine.store import Store


@pytest.fixture
def images(tmp_path: Path) -> Iterator[ImageStore]:
    db = Store(tmp_path / "stowd.db")
    yield ImageStore(db, tmp_path)
    db.close()


def add(images: ImageStore, created: str, tags: list[str], labels: dict[str, str] | None = None,
        digests: list[str] | None = None) -> Image:
    """An image without layers (lookups and filters only look at records and configs)."""
    config = json.dumps({"created": created, "os": "linux", "config": {"Labels": labels},
                         "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    image, _ = images.add_image(config, [], [parse(t) for t in tags], digests)
    return image


def image_with_prefix(images: ImageStore, first: str, taken: set[str]) -> Image:
    """Add images until one's ID starts with `first` (a 1 in 16 chance each)."""
    for n in range(400):
        image = add(images, f"2024-01-01T00:00:{n % 60:02d}Z", [], {"n": str(n)})
        if image.id[7] == first and image.id not in taken:
            return image
    raise AssertionError("no such ID found")


def test_find_by_tag_id_short_id_and_digest(images: ImageStore) -> None:
    digest = "sha256:" + "d" * 64
    image = add(images, "2024-01-01T00:00:00Z", ["busybox:latest", "x/y:1"],
                digests=[f"busybox@{digest}"])
    hexid = image.id.removeprefix("sha256:")
    for name in ("busybox", "busybox:latest", "docker.io/library/busybox:latest",
                 "library/busybox", "x/y:1", image.id, hexid, hexid[:12], f"sha256:{hexid[:5]}",
                 f"busybox@{digest}", f"docker.io/library/busybox@{digest}"):
        assert images.resolve(name).id == image.id, name
    assert image.repo_tags == ["busybox:latest", "x/y:1"]


@pytest.mark.parametrize("name", ["nope", "busybox:1", "x/y", "ffffffffffff",
                                  f"other@sha256:{'d' * 64}"])
def test_unknown_names_are_not_found(images: ImageStore, name: str) -> None:
    add(images, "2024-01-01T00:00:00Z", ["busybox:latest", "x/y:1"],
        digests=[f"busybox@sha256:{'d' * 64}"])
    with pytest.raises(NotFound) as info:
        images.resolve(name)
    assert info.value.message == f"No such image: {name}"


@pytest.mark.parametrize("name", ["Bad", "a//b", "busybox@sha256:abc"])
def test_malformed_names_are_invalid(images: ImageStore, name: str) -> None:
    with pytest.raises(InvalidParameter):
        images.resolve(name)


def test_an_ambiguous_short_id_is_not_found(images: ImageStore) -> None:
    first = image_with_prefix(images, "a", set())
    second = image_with_prefix(images, "a", {first.id})
    with pytest.raises(NotFound, match="No such image: a "):
        images.resolve("a")
    common = 1
    while first.id[7:7 + common + 1] == second.id[7:7 + common + 1]:
        common += 1
    assert images.resolve(first.id[7:7 + common + 1]).id == first.id


def test_a_tag_wins_over_an_id_prefix(images: ImageStore) -> None:
    image = add(images, "2024-01-01T00:00:00Z", [])
    prefix = image.id[7:13]
    other = add(images, "2024-01-02T00:00:00Z", [f"{prefix}:latest"], {"other": "1"})
    assert images.resolve(prefix).id == other.id
    assert images.resolve(f"sha256:{prefix}").id == image.id


def test_tag_moves_and_untag(images: ImageStore) -> None:
    first = add(images, "2024-01-01T00:00:00Z", ["a:1"])
    second = add(images, "2024-01-02T00:00:00Z", ["b:1"], {"x": "y"})
    image, ref = images.tag("a:1", "b", "1")
    assert (image.id, ref.familiar()) == (first.id, "b:1")
    assert images.resolve("b:1").id == first.id
    assert images.resolve(second.id).repo_tags == []
    images.untag(first.id, parse("b:1"))
    assert images.resolve(first.id).repo_tags == ["a:1"]


# list filters -------------------------------------------------------------------------------------


def names(selected: list[listing.Listed]) -> list[list[str]]:
    return [item.repo_tags for item in selected]


@pytest.fixture
def three(images: ImageStore) -> ImageStore:
    add(images, "2024-01-01T00:00:00Z", ["old:1"], {"tier": "base"})
    add(images, "2024-02-01T00:00:00Z", ["mid:1", "bb/x:1", "localhost:5000/bb/y:2"],
        {"tier": "app", "extra": ""})
    add(images, "2024-03-01T00:00:00Z", [], {"tier": "app"})
    return images


def select(images: ImageStore, **filters: list[str]) -> list[list[str]]:
    return names(listing.select(images.all(), filters, images.resolve,
                                now=1_800_000_000.0))


def test_list_is_newest_first(three: ImageStore) -> None:
    assert select(three) == [[], ["bb/x:1", "localhost:5000/bb/y:2", "mid:1"], ["old:1"]]


def test_dangling_filter(three: ImageStore) -> None:
    assert select(three, dangling=["true"]) == [[]]
    assert select(three, dangling=["0"]) == [["bb/x:1", "localhost:5000/bb/y:2", "mid:1"],
                                             ["old:1"]]
    with pytest.raises(InvalidParameter, match=r"Invalid filter 'dangling=\[maybe\]'"):
        select(three, dangling=["maybe"])


def test_label_filter(three: ImageStore) -> None:
    assert len(select(three, label=["tier=app"])) == 2
    assert select(three, label=["tier=app", "extra"]) == [["bb/x:1", "localhost:5000/bb/y:2",
                                                          "mid:1"]]
    assert select(three, label=["nope"]) == []


@pytest.mark.parametrize(("pattern", "shown"), [
    ("bb*", []),  # `*` stops at `/` (path.Match)
    ("bb/*", [["bb/x:1"]]),
    ("*:1", [["mid:1"], ["old:1"]]),
    ("mid", [["mid:1"]]),
    ("docker.io/library/mid", []),  # patterns match familiar names
    ("localhost:5000/bb/*", [["localhost:5000/bb/y:2"]]),
    ("[mo]*", [["mid:1"], ["old:1"]]),
])
def test_reference_filter(three: ImageStore, pattern: str, shown: list[list[str]]) -> None:
    assert select(three, reference=[pattern]) == shown


def test_before_since_until(three: ImageStore) -> None:
    assert select(three, before=["mid:1"]) == [["old:1"]]
    assert select(three, since=["mid:1"]) == [[]]
    assert select(three, since=["old:1"], before=["mid:1"]) == []
    assert select(three, until=["2024-01-15T00:00:00Z"]) == [["old:1"]]
    assert select(three, until=[str(1706745600 + 1)]) == [
        ["bb/x:1", "localhost:5000/bb/y:2", "mid:1"], ["old:1"]]
    with pytest.raises(NotFound):
        select(three, before=["nope"])


def test_path_match_regex() -> None:
    assert listing.path_match_regex("a?c").match("abc")
    assert not listing.path_match_regex("a?c").match("a/c")
    assert listing.path_match_regex(r"a\*").match("a*")
    assert listing.path_match_regex("[^a]x").match("bx")
    with pytest.raises(InvalidParameter):
        listing.path_match_regex("[ab")
