"""Image references: parsing, normalization and familiar names, as Docker's reference package."""

import pytest

from stowd.engine.errors import InvalidParameter
from stowd.engine.images import reference
from stowd.engine.images.reference import Reference, is_image_id_like, parse, tag_reference

HEX = "071e63ba94356f38733374f3599c0afc948bd9b72907d351965786a80fcaa52a"


@pytest.mark.parametrize(("text", "full", "familiar"), [
    ("busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36"),
    ("library/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("docker.io/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("index.docker.io/library/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("foo/bar", "docker.io/foo/bar:latest", "foo/bar:latest"),
    ("localhost/foo", "localhost/foo:latest", "localhost/foo:latest"),
    ("localhost:5000/a/b:1", "localhost:5000/a/b:1", "localhost:5000/a/b:1"),
    ("example.com/x", "example.com/x:latest", "example.com/x:latest"),
    ("Example.com/x", "Example.com/x:latest", "Example.com/x:latest"),
    ("[::1]:5000/x", "[::1]:5000/x:latest", "[::1]:5000/x:latest"),
    ("a_b.c__d-e--f", "docker.io/library/a_b.c__d-e--f:latest", "a_b.c__d-e--f:latest"),
    (f"busybox@sha256:{HEX}", f"docker.io/library/busybox@sha256:{HEX}",
     f"busybox@sha256:{HEX}"),
    (f"busybox:1@sha256:{HEX}", f"docker.io/library/busybox:1@sha256:{HEX}",
     f"busybox:1@sha256:{HEX}"),
])
def test_parse_normalizes_like_docker(text: str, full: str, familiar: str) -> None:
    ref = parse(text)
    assert ref.full() == full
    assert ref.familiar() == familiar


def test_parse_without_default_tag_keeps_a_bare_name_bare() -> None:
    assert parse("busybox", default_tag=False).tag is None
    assert parse("busybox", default_tag=False).familiar() == "busybox"


def test_familiar_repository_drops_only_docker_hub_and_library() -> None:
    assert parse("docker.io/library/x").familiar_repository == "x"
    assert parse("docker.io/org/x").familiar_repository == "org/x"
    assert parse("quay.io/library/x").familiar_repository == "quay.io/library/x"


@pytest.mark.parametrize(("text", "message"), [
    ("", "invalid reference format"),
    ("Busybox", "invalid reference format: repository name must be lowercase"),
    ("busybox:", "invalid reference format"),
    (":latest", "invalid reference format"),
    ("foo//bar", "invalid reference format"),
    ("-foo", "invalid reference format"),
    ("foo-", "invalid reference format"),
    ("foo___bar", "invalid reference format"),
    ("foo:bad tag", "invalid reference format"),
    ("foo:" + "t" * 129, "invalid reference format"),
    (" busybox", "invalid reference format"),
    ("busybox@sha256:abc", "invalid reference format"),
    ("busybox@sha256:" + "a" * 63 + "g", "invalid reference format"),
    ("busybox@sha256:" + "a" * 40, "invalid checksum digest length"),
    (HEX, "cannot specify 64-byte hexadecimal strings"),
    ("a" * 256, "must not be more than 255 characters"),
])
def test_parse_refuses_malformed_names(text: str, message: str) -> None:
    with pytest.raises(InvalidParameter, match=message):
        parse(text)


def test_a_hex_string_with_a_tag_is_a_name() -> None:
    assert parse(f"{HEX}:1").tag == "1"


@pytest.mark.parametrize(("text", "expected"), [
    ("071e", True), (HEX, True), (f"sha256:{HEX}", True), ("sha256:07", True),
    ("busybox", False), ("071E", False), ("sha256:", False), (HEX + "0", False),
])
def test_is_image_id_like(text: str, expected: bool) -> None:
    assert is_image_id_like(text) is expected


@pytest.mark.parametrize(("repo", "tag", "expected"), [
    ("imp", "", "imp:latest"),
    ("imp", "t1", "imp:t1"),
    ("imp:t3", "", "imp:t3"),
    ("imp:t3", "t4", "imp:t4"),  # dockerd: a tag parameter replaces the one in repo
    ("localhost:5000/a/b", "x", "localhost:5000/a/b:x"),
    ("imp", HEX, f"imp:{HEX}"),
])
def test_tag_reference(repo: str, tag: str, expected: str) -> None:
    assert tag_reference(repo, tag).familiar() == expected


@pytest.mark.parametrize(("repo", "tag", "message"), [
    ("", "", "repository name must have at least one component"),
    ("imp", "a:b", "invalid tag format"),
    ("imp", "-x", "invalid tag format"),
    (f"imp@sha256:{HEX}", "", "refusing to create a tag with a digest reference"),
    ("Imp", "", "must be lowercase"),
    (HEX, "", "cannot specify 64-byte hexadecimal strings"),
])
def test_tag_reference_refuses(repo: str, tag: str, message: str) -> None:
    with pytest.raises(InvalidParameter, match=message):
        tag_reference(repo, tag)


def test_with_tag_drops_a_digest() -> None:
    ref = Reference(reference.DEFAULT_DOMAIN, "library/x", "1", f"sha256:{HEX}")
    assert ref.with_tag("2").familiar() == "x:2"
