"""Docker's image delete rules, checked against what dockerd 20.10 answered."""

import pytest

from stowd.engine.errors import Conflict
from stowd.engine.images.delete import ImageUser, is_single_reference, plan_delete
from stowd.engine.images.reference import parse

IMAGE = "sha256:da776d637cb24e3e17c8c9b3e3e67994d40fcdec612fa8b650abf8da315562a2"
DIGEST = "sha256:" + "1" * 64
STOPPED = ImageUser("e7d8c30b0b79", running=False)
RUNNING = ImageUser("99c6c91e6057", running=True)


def refs(*names: str):  # type: ignore[no-untyped-def]
    return [parse(n, default_tag=False) if "@" in n else parse(n) for n in names]


def plan(name: str, image_refs: list[str], users: list[ImageUser] | None = None,
         force: bool = False) -> tuple[list[str], bool]:
    requested = None
    try:
        requested = parse(name)
    except Exception:
        pass
    result = plan_delete(name, requested, IMAGE, refs(*image_refs), users or [], force)
    return [r.familiar() for r in result.untag], result.delete


def test_single_reference() -> None:
    assert is_single_reference(refs("a:1"))
    assert is_single_reference(refs("a:1", f"a@{DIGEST}"))
    assert not is_single_reference(refs("a:1", "a:2"))
    assert not is_single_reference(refs("a:1", f"b@{DIGEST}"))
    assert not is_single_reference([])


def test_one_of_several_tags_is_only_untagged() -> None:
    assert plan("imp:t1", ["imp:t1", "imp:t2"]) == (["imp:t1"], False)
    # ... even while a container uses the image.
    assert plan("imp:t1", ["imp:t1", "imp:t2"], [RUNNING]) == (["imp:t1"], False)


def test_the_last_tag_takes_the_image() -> None:
    assert plan("imp", ["imp:latest"]) == (["imp:latest"], True)


def test_the_last_tag_of_a_used_image_needs_force() -> None:
    with pytest.raises(Conflict) as info:
        plan("imp:t2", ["imp:t2"], [STOPPED])
    assert info.value.message == (
        'conflict: unable to remove repository reference "imp:t2" (must force) - container '
        "e7d8c30b0b79 is using its referenced image da776d637cb2")


def test_forced_last_tag_of_a_used_image_leaves_it_dangling() -> None:
    assert plan("imp:t2", ["imp:t2"], [STOPPED], force=True) == (["imp:t2"], False)
    assert plan("imp:t2", ["imp:t2"], [RUNNING], force=True) == (["imp:t2"], False)


def test_by_id_with_tags_in_several_repositories_needs_force() -> None:
    with pytest.raises(Conflict) as info:
        plan("da776d637cb2", ["imp:t1", "bb/x:1"])
    assert info.value.message == ("conflict: unable to delete da776d637cb2 (must be forced) - "
                                  "image is referenced in multiple repositories")
    # dockerd says the same for two tags of one repository.
    with pytest.raises(Conflict):
        plan("da776d637cb2", ["imp:t1", "imp:t2"])
    assert plan("da776d637cb2", ["imp:t1", "bb/x:1"], force=True) == (["imp:t1", "bb/x:1"],
                                                                      True)


def test_by_id_with_one_tag_untags_and_deletes() -> None:
    assert plan("da77", ["imp:x"]) == (["imp:x"], True)
    assert plan(IMAGE, ["imp:x", f"imp@{DIGEST}"]) == (["imp:x", f"imp@{DIGEST}"], True)
    assert plan(IMAGE.removeprefix("sha256:"), []) == ([], True)


def test_by_id_of_an_image_a_stopped_container_uses() -> None:
    with pytest.raises(Conflict) as info:
        plan("da776d637cb2", ["imp:x"], [STOPPED])
    assert info.value.message == ("conflict: unable to delete da776d637cb2 (must be forced) - "
                                  "image is being used by stopped container e7d8c30b0b79")
    assert plan("da776d637cb2", ["imp:x"], [STOPPED], force=True) == (["imp:x"], False)


def test_an_image_a_running_container_uses_cannot_be_forced() -> None:
    for force in (False, True):
        with pytest.raises(Conflict) as info:
            plan("da776d637cb2", ["imp:x", "other:y"], [RUNNING], force=force)
        assert info.value.message == (
            "conflict: unable to delete da776d637cb2 (cannot be forced) - image is being used "
            "by running container 99c6c91e6057")


def test_a_repository_digest_goes_with_its_last_tag() -> None:
    assert plan("imp:t1", ["imp:t1", f"imp@{DIGEST}", "other:1"]) == (
        ["imp:t1", f"imp@{DIGEST}"], False)
    assert plan(f"imp@{DIGEST}", ["imp:t1", f"imp@{DIGEST}"]) == ([f"imp@{DIGEST}"], False)
