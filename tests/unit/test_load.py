"""docker load: archive members, links inside the archive, manifests and OCI indexes."""

import io
import json
import tarfile
from pathlib import Path

import pytest

from stowd.engine.errors import InvalidParameter
from stowd.engine.images import load
from stowd.engine.images.load import (
    Spool,
    check_config,
    clean_member_name,
    descriptor_name,
    parse_docker_manifest,
    parse_repo_tag,
    plan_archive,
    platform_matches,
    resolve_in_archive,
    spool_archive,
)
from tests.unit.test_images_tarballs import (
    ArchiveWriter,
    ImageSpec,
    docker_save_tar,
    file,
    layer_tar,
    oci_layout_tar,
    sha256,
)

# member names and links -------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "cleaned"), [
    ("a/layer.tar", "a/layer.tar"), ("./a/b", "a/b"), ("/abs/x", "abs/x"),
    ("../../etc/passwd", "etc/passwd"), ("a/../../b", "b"), ("./", ""), ("a//b/", "a/b"),
])
def test_clean_member_name(name: str, cleaned: str) -> None:
    assert clean_member_name(name) == cleaned


LINKS = {
    "b/layer.tar": ("sym", "../a/layer.tar"),
    "c/layer.tar": ("sym", "/a/layer.tar"),
    "d": ("sym", "a"),
    "e/layer.tar": ("sym", "../../../../a/layer.tar"),
    "f/layer.tar": ("hard", "a/layer.tar"),
    "loop1": ("sym", "loop2"),
    "loop2": ("sym", "loop1"),
    "up/layer.tar": ("sym", "../../../etc/passwd"),
}


@pytest.mark.parametrize(("name", "resolved"), [
    ("a/layer.tar", "a/layer.tar"),
    ("b/layer.tar", "a/layer.tar"),  # dockerd writes repeated layers as such links
    ("c/layer.tar", "a/layer.tar"),  # absolute: from the archive's root
    ("d/layer.tar", "a/layer.tar"),  # a linked directory on the way
    ("e/layer.tar", "a/layer.tar"),  # `..` stops at the root
    ("f/layer.tar", "a/layer.tar"),  # hard links name archive members
    ("up/layer.tar", "etc/passwd"),  # never outside: the archive's own etc/passwd
])
def test_links_resolve_inside_the_archive(name: str, resolved: str) -> None:
    assert resolve_in_archive(name, LINKS) == resolved


def test_a_link_loop_is_refused() -> None:
    with pytest.raises(InvalidParameter, match="too many levels of links"):
        resolve_in_archive("loop1/x", LINKS)


def spool_of(data: bytes, tmp_path: Path) -> Spool:
    root = tmp_path / "spool"
    root.mkdir()
    return spool_archive(io.BytesIO(data), root)


def test_spool_keeps_links_off_the_disk(tmp_path: Path) -> None:
    out = ArchiveWriter()
    out.add("a/layer.tar", b"A")
    out.add_symlink("b/layer.tar", "../a/layer.tar")
    out.add_symlink("evil", "/etc")
    out.add("../../outside", b"clamped")
    spool = spool_of(out.close(), tmp_path)
    on_disk = sorted(str(p.relative_to(spool.root)) for p in spool.root.rglob("*"))
    assert on_disk == ["a", "a/layer.tar", "outside"]
    assert spool.read("b/layer.tar") == b"A"
    assert spool.path("evil/passwd") is None  # /etc of the archive, which has none
    assert not (tmp_path / "outside").exists()


def test_spool_reads_a_gzipped_archive_and_what_follows_its_end(tmp_path: Path) -> None:
    image = ImageSpec([layer_tar([file("x", "1")])], tags=["x:1"])
    data = docker_save_tar([image], compress_outer=True)
    source = io.BytesIO(data + b"\0" * 5000)
    root = tmp_path / "s"
    root.mkdir()
    spool_archive(source, root)
    assert source.read() == b""


@pytest.mark.parametrize("data", [b"", b"garbage" * 100, b"\x1f\x8b" + b"x" * 100])
def test_spool_refuses_what_is_no_tar(tmp_path: Path, data: bytes) -> None:
    with pytest.raises(InvalidParameter, match="invalid tar archive"):
        spool_of(data, tmp_path)


def test_spool_refuses_a_file_where_a_directory_is(tmp_path: Path) -> None:
    out = ArchiveWriter()
    out.add("a", b"file")
    out.add("a/layer.tar", b"x")
    with pytest.raises(InvalidParameter, match="invalid tar archive"):
        spool_of(out.close(), tmp_path)


# manifests and configs ------------------------------------------------------------------------


def test_parse_docker_manifest() -> None:
    doc = [{"Config": "c.json", "RepoTags": ["a:1"], "Layers": ["l/layer.tar"]},
           {"Config": "d.json", "RepoTags": None, "Layers": []}]
    assert parse_docker_manifest(doc) == [("c.json", ["l/layer.tar"], ["a:1"]),
                                          ("d.json", [], [])]


@pytest.mark.parametrize("doc", [
    {}, [1], [{"RepoTags": []}], [{"Config": "c", "Layers": "x"}],
    [{"Config": "c", "Layers": [], "RepoTags": "a:1"}],
])
def test_parse_docker_manifest_refuses(doc: object) -> None:
    with pytest.raises(InvalidParameter, match=r"manifest\.json"):
        parse_docker_manifest(doc)


@pytest.mark.parametrize(("text", "familiar"), [
    ("busybox:latest", "busybox:latest"), ("docker.io/library/busybox:1", "busybox:1"),
    ("localhost:5000/x:y", "localhost:5000/x:y"),
])
def test_parse_repo_tag(text: str, familiar: str) -> None:
    assert parse_repo_tag(text).familiar() == familiar


@pytest.mark.parametrize("text", ["busybox", f"busybox@sha256:{'a' * 64}", "Bad:1", 5])
def test_parse_repo_tag_refuses(text: object) -> None:
    with pytest.raises(InvalidParameter):
        parse_repo_tag(text)


def test_check_config() -> None:
    image = ImageSpec([b"a", b"b"])
    assert check_config(image.config(), "c") == [sha256(b"a"), sha256(b"b")]
    with pytest.raises(InvalidParameter, match="cannot load windows image on linux"):
        check_config(ImageSpec([b"a"], os="windows").config(), "c")
    with pytest.raises(InvalidParameter, match="no RootFS"):
        check_config(b'{"os":"linux"}', "c")
    with pytest.raises(InvalidParameter, match="diff_ids"):
        check_config(b'{"rootfs":{"type":"layers","diff_ids":["md5:x"]}}', "c")
    with pytest.raises(InvalidParameter, match="invalid image config"):
        check_config(b"[]", "c")


@pytest.mark.parametrize(("annotations", "name"), [
    ({"io.containerd.image.name": "docker.io/library/busybox:latest",
      "org.opencontainers.image.ref.name": "latest"}, "busybox:latest"),
    ({"org.opencontainers.image.ref.name": "example.com/x:1"}, "example.com/x:1"),
    ({"org.opencontainers.image.ref.name": "x:1"}, "x:1"),
    ({"org.opencontainers.image.ref.name": "latest"}, None),  # a tag alone names nothing
    ({}, None),
])
def test_descriptor_name(annotations: dict[str, str], name: str | None) -> None:
    ref = descriptor_name({"annotations": annotations})
    assert (ref.familiar() if ref else None) == name


def test_platform_matches() -> None:
    assert platform_matches({}, "amd64")
    assert platform_matches({"platform": {"os": "linux", "architecture": "amd64"}}, "amd64")
    assert not platform_matches({"platform": {"os": "linux", "architecture": "arm64"}}, "amd64")
    assert not platform_matches({"platform": {"os": "unknown", "architecture": "unknown"}},
                                "amd64")


# whole archives → plans -------------------------------------------------------------------------


def test_plan_of_a_docker_save_archive(tmp_path: Path) -> None:
    empty = layer_tar([])
    image = ImageSpec([layer_tar([file("a", "1")]), empty, layer_tar([file("b")]), empty],
                      tags=["x:1", "y/z:2"], compress={2})
    untagged = ImageSpec([layer_tar([file("c")])])
    spool = spool_of(docker_save_tar([image, untagged]), tmp_path)
    plans = plan_archive(spool, "amd64")
    assert [p.id for p in plans] == [image.id, untagged.id]
    assert [t.familiar() for t in plans[0].tags] == ["x:1", "y/z:2"]
    assert plans[1].tags == []
    # The repeated empty layer is a link to its first copy.
    assert spool.file(plans[0].layers[3].name) == spool.file(plans[0].layers[1].name)


def test_plan_of_an_oci_layout_with_nested_indexes(tmp_path: Path) -> None:
    image = ImageSpec([layer_tar([file("a", "1")]), layer_tar([file("b", "2")])], compress={0})
    named = {"io.containerd.image.name": "docker.io/library/oci:1"}
    data = oci_layout_tar([(image, named), (image, {})], nested_index=True)
    plans = plan_archive(spool_of(data, tmp_path), "amd64")
    assert [p.id for p in plans] == [image.id, image.id]
    assert [t.familiar() for t in plans[0].tags] == ["oci:1"]
    assert plans[0].repo_digests[0].startswith("oci@sha256:")
    assert all(layer.digest for layer in plans[0].layers)


def test_plan_refuses_an_index_without_this_platform(tmp_path: Path) -> None:
    image = ImageSpec([layer_tar([file("a")])], architecture="arm64")
    data = oci_layout_tar([(image, {})], nested_index=True, other_platform=False)
    with pytest.raises(InvalidParameter, match="no matching manifest for linux/amd64"):
        plan_archive(spool_of(data, tmp_path), "amd64")


def test_plan_refuses_a_tampered_oci_blob(tmp_path: Path) -> None:
    image = ImageSpec([layer_tar([file("a")])])
    data = oci_layout_tar([(image, {})], corrupt_blob=image.id)
    with pytest.raises(InvalidParameter, match="has digest"):
        plan_archive(spool_of(data, tmp_path), "amd64")


def test_plan_refuses_a_layer_count_mismatch(tmp_path: Path) -> None:
    image = ImageSpec([layer_tar([file("a")])], diff_ids=[sha256(b"1"), sha256(b"2")])
    with pytest.raises(InvalidParameter, match="layers length mismatch: expected 2, got 1"):
        plan_archive(spool_of(docker_save_tar([image]), tmp_path), "amd64")


def test_plan_refuses_a_missing_layer(tmp_path: Path) -> None:
    image = ImageSpec([layer_tar([file("a")])])
    config = image.config()
    manifest = [{"Config": "c.json", "RepoTags": ["x:1"], "Layers": ["nope/layer.tar"]}]
    out = ArchiveWriter()
    out.add("c.json", config)
    out.add("manifest.json", json.dumps(manifest).encode())
    with pytest.raises(InvalidParameter, match=r"nope/layer\.tar is missing"):
        plan_archive(spool_of(out.close(), tmp_path), "amd64")


def test_plan_refuses_a_layer_link_out_of_the_archive(tmp_path: Path) -> None:
    image = ImageSpec([layer_tar([file("a")])], tags=["x:1"])
    out = ArchiveWriter()
    out.add("c.json", image.config())
    out.add_symlink("l/layer.tar", "../../../../../../etc/passwd")
    out.add("manifest.json", json.dumps(
        [{"Config": "c.json", "RepoTags": ["x:1"], "Layers": ["l/layer.tar"]}]).encode())
    with pytest.raises(InvalidParameter, match="is missing"):
        plan_archive(spool_of(out.close(), tmp_path), "amd64")


def test_plan_refuses_a_bad_tag_before_storing_anything(tmp_path: Path) -> None:
    good = ImageSpec([layer_tar([file("a")])], tags=["ok:1"])
    bad = ImageSpec([layer_tar([file("b")])], tags=["NotLower:1"])
    with pytest.raises(InvalidParameter, match="must be lowercase"):
        plan_archive(spool_of(docker_save_tar([good, bad]), tmp_path), "amd64")


@pytest.mark.parametrize(("members", "message"), [
    ({"repositories": b"{}"}, "pre-1.10"),
    ({"hello": b"x"}, "no manifest.json or index.json"),
    ({"manifest.json": b"{nope"}, "manifest.json is not valid JSON"),
])
def test_plan_refuses_other_archives(tmp_path: Path, members: dict[str, bytes],
                                     message: str) -> None:
    out = ArchiveWriter()
    for name, data in members.items():
        out.add(name, data)
    with pytest.raises(InvalidParameter, match=message):
        plan_archive(spool_of(out.close(), tmp_path), "amd64")


def test_json_members_have_a_size_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(load, "MAX_JSON", 10)
    out = ArchiveWriter()
    out.add("manifest.json", b"[" + b" " * 20 + b"]")
    with pytest.raises(InvalidParameter, match="too large"):
        plan_archive(spool_of(out.close(), tmp_path), "amd64")


def test_builder_layers_are_plain_tars() -> None:
    with tarfile.open(fileobj=io.BytesIO(layer_tar([file("a", "1")]))) as tar:
        assert tar.getnames() == ["a"]


def test_plan_of_a_docker_25_archive_reads_manifest_json_over_index_json(tmp_path: Path) -> None:
    """Docker 25+ writes both forms: layers as blobs, `<dir>/layer.tar` links to them."""
    layer = layer_tar([file("a", "1")])
    image = ImageSpec([layer], tags=["new:1"])
    out = ArchiveWriter()
    blob = f"blobs/sha256/{sha256(layer).removeprefix('sha256:')}"
    config = f"blobs/sha256/{image.id.removeprefix('sha256:')}"
    out.add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    out.add("index.json", b'{"schemaVersion":2,"manifests":[]}')
    out.add(blob, layer)
    out.add(config, image.config())
    out.add_symlink("abc/layer.tar", f"../{blob}")
    out.add("manifest.json", json.dumps(
        [{"Config": config, "RepoTags": ["new:1"], "Layers": [blob]}]).encode())
    spool = spool_of(out.close(), tmp_path)
    plans = plan_archive(spool, "amd64")
    assert [(p.id, [t.familiar() for t in p.tags]) for p in plans] == [(image.id, ["new:1"])]
    assert spool.read("abc/layer.tar") == layer
