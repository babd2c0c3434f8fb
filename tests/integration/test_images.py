"""Images through docker-py and the docker CLI: load, save, import, list, inspect, tag, delete.

Every archive is built here (tests/unit/test_images_tarballs.py); containers run on the
loaded images prove that whiteouts and opaque directories hide what they should.
"""

import hashlib
import io
import json
import re
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest
import requests

from stowd.engine.seed import busybox_binary, busybox_rootfs_tar
from tests.daemon import Daemon
from tests.integration.conftest import Cli
from tests.unit.test_images_tarballs import (
    ImageSpec,
    directory,
    docker_save_tar,
    file,
    layer_tar,
    oci_layout_tar,
    opaque,
    sha256,
    whiteout,
)
from tests.waits import url

PREFIX = "stowd-test"


@pytest.fixture(scope="module")
def base_layer() -> bytes:
    """A busybox root filesystem as a layer tar, so loaded images can run `sh`."""
    binary = busybox_binary()
    assert binary, "busybox-static must be installed"
    buf = io.BytesIO()
    busybox_rootfs_tar(binary, buf)
    return buf.getvalue()


@pytest.fixture(scope="module", autouse=True)
def nothing_left_behind(daemon: Daemon) -> Iterator[None]:
    """The tests here leave the shared daemon with the images and layers it had."""
    api = docker.APIClient(base_url=daemon.url)
    before = (image_ids(api), layer_dirs(daemon))
    yield
    after = (image_ids(api), layer_dirs(daemon))
    api.close()
    assert after == before
    assert list((daemon.data_root / "images" / "tmp").iterdir()) == []


@pytest.fixture
def made(client: docker.DockerClient) -> Iterator[list[str]]:
    """Names and IDs of images a test creates: removed (forced) afterwards."""
    created: list[str] = []
    yield created
    for ctr in client.containers.list(all=True):
        ctr.remove(force=True)
    for name in reversed(created):
        try:
            client.images.remove(name, force=True)
        except docker.errors.NotFound:
            pass


def run(client: docker.DockerClient, image: str, script: str) -> str:
    ctr = client.containers.run(image, ["sh", "-c", script], detach=True)
    try:
        assert ctr.wait(timeout=30)["StatusCode"] == 0, ctr.logs()
        return str(ctr.logs().decode())
    finally:
        ctr.remove(force=True)


def raw(daemon: Daemon, method: str, path: str, **kwargs: object) -> requests.Response:
    """A request as sent, without docker-py's interpretation."""
    api = docker.APIClient(base_url=daemon.url)
    try:
        return api.request(method, url(api, path), **kwargs)
    finally:
        api.close()


def multi_layer_image(base: bytes, tag: str) -> ImageSpec:
    """busybox, then files, then a gzipped layer of deletions; empty layers in between."""
    files = layer_tar([
        directory("data"), file("data/a", "A"), file("data/b", "B"), file("data/keep", "K"),
        directory("gone"), file("gone/x", "x"),
        directory("opq"), file("opq/old1", "1"), file("opq/old2", "2"),
        file("file", "from layer 1\n"),
    ])
    deletions = layer_tar([
        directory("data"), whiteout("data/a"), file("data/c", "C"),
        whiteout("gone"),
        directory("opq"), opaque("opq"), file("opq/new", "N"),
    ])
    empty = layer_tar([])
    return ImageSpec([base, files, empty, deletions, empty], tags=[tag], cmd=["sh"],
                     labels={"org.stowd.test": "multi"}, compress={3})


SCRIPT = "ls -A /data; echo --; ls -A /opq; echo --; ls -d /gone 2>&1 || true; cat /file"
EXPECTED = "b\nc\nkeep\n--\nnew\n--\nls: /gone: No such file or directory\nfrom layer 1\n"


# load -------------------------------------------------------------------------------------------


def test_load_a_multi_layer_save_archive_and_run_it(client: docker.DockerClient,
                                                    base_layer: bytes, made: list[str]) -> None:
    spec = multi_layer_image(base_layer, f"{PREFIX}/multi:1")
    made.append(spec.id)
    loaded = client.images.load(docker_save_tar([spec]))
    assert [(i.id, i.tags) for i in loaded] == [(spec.id, [f"{PREFIX}/multi:1"])]
    attrs = loaded[0].attrs
    assert attrs["RootFS"]["Layers"] == [sha256(layer) for layer in spec.layers]
    assert attrs["Config"]["Labels"] == {"org.stowd.test": "multi"}
    assert run(client, f"{PREFIX}/multi:1", SCRIPT) == EXPECTED


def test_load_an_oci_layout_with_the_cli(cli: Cli, client: docker.DockerClient,
                                         base_layer: bytes, made: list[str],
                                         tmp_path: Path) -> None:
    spec = multi_layer_image(base_layer, "")
    spec.compress = {1, 3}
    made.append(spec.id)
    archive = tmp_path / "oci.tar"
    archive.write_bytes(oci_layout_tar(
        [(spec, {"io.containerd.image.name": f"docker.io/{PREFIX}/oci:1",
                 "org.opencontainers.image.ref.name": "1"}),
         (spec, {"org.opencontainers.image.ref.name": f"{PREFIX}/oci:ref"})],
        nested_index=True))
    out = cli("load", "-i", str(archive)).stdout
    assert out == f"Loaded image: {PREFIX}/oci:1\nLoaded image: {PREFIX}/oci:ref\n"
    image = client.images.get(f"{PREFIX}/oci:1")
    assert image.id == spec.id
    assert sorted(image.tags) == [f"{PREFIX}/oci:1", f"{PREFIX}/oci:ref"]
    assert image.attrs["RepoDigests"][0].startswith(f"{PREFIX}/oci@sha256:")
    # The recorded digest names the image too.
    assert client.images.get(image.attrs["RepoDigests"][0]).id == spec.id
    assert run(client, f"{PREFIX}/oci:ref", SCRIPT) == EXPECTED


def test_load_untagged_images_reports_their_ids(daemon: Daemon, base_layer: bytes,
                                                made: list[str]) -> None:
    legacy = ImageSpec([base_layer, layer_tar([file("u1", "1")])])
    oci = ImageSpec([base_layer, layer_tar([file("u2", "2")])])
    made.extend([legacy.id, oci.id])
    for data, spec in ((docker_save_tar([legacy]), legacy),
                       (oci_layout_tar([(oci, {"org.opencontainers.image.ref.name": "v1"})]),
                        oci)):
        reply = raw(daemon, "POST", "/images/load", data=data)
        assert reply.status_code == 200
        assert reply.headers["Content-Type"] == "application/json"
        assert [json.loads(line) for line in reply.text.splitlines()] == [
            {"stream": f"Loaded image ID: {spec.id}\n"}]


def test_load_progress_lines(api: docker.APIClient, base_layer: bytes, made: list[str]) -> None:
    top = layer_tar([file("p", "x" * 3_000_000)])
    spec = ImageSpec([base_layer, top], tags=[f"{PREFIX}/progress:1"])
    made.append(spec.id)
    lines = list(api.load_image(docker_save_tar([spec]), quiet=False))
    progress = [line for line in lines if line.get("status") == "Loading layer"]
    # Only the layer the daemon lacked is loaded (busybox's is there already).
    assert {line["id"] for line in progress} == {sha256(top)[7:19]}
    last = progress[-1]
    assert last["progressDetail"] == {"current": len(top), "total": len(top)}
    size = f"{len(top) / 1e6:.4g}MB"
    assert last["progress"] == f"[{'=' * 50}>]  {size}/{size}"
    assert lines[-1] == {"stream": f"Loaded image: {PREFIX}/progress:1\n"}


def test_load_moves_a_tag_and_emits_events(api: docker.APIClient, base_layer: bytes,
                                           made: list[str]) -> None:
    first = ImageSpec([base_layer, layer_tar([file("v", "1")])], tags=[f"{PREFIX}/moved:1"])
    second = ImageSpec([base_layer, layer_tar([file("v", "2")])], tags=[f"{PREFIX}/moved:1"])
    made.extend([first.id, second.id])
    since = time.time() - 1
    list(api.load_image(docker_save_tar([first])))
    lines = list(api.load_image(docker_save_tar([second])))
    assert lines == [
        {"stream": f"The image {PREFIX}/moved:1 already exists, renaming the old one with ID "
                   f"{first.id} to empty string\n"},
        {"stream": f"Loaded image: {PREFIX}/moved:1\n"}]
    assert api.inspect_image(first.id)["RepoTags"] == []
    events = [(e["Action"], e["Actor"]["ID"], e["Actor"]["Attributes"]["name"])
              for e in api.events(since=since, until=time.time() + 1, decode=True,
                                  filters={"type": "image"})]
    assert events[-3:] == [("load", second.id, second.id),
                           ("tag", second.id, f"{PREFIX}/moved:1"),
                           ("untag", first.id, first.id)]


def layer_dirs(daemon: Daemon) -> set[str]:
    return {p.name for p in (daemon.data_root / "layers").iterdir()}


def image_ids(api: docker.APIClient) -> set[str]:
    return {i["Id"] for i in api.images(all=True)}


def test_a_layer_digest_mismatch_is_refused_and_leaves_nothing(
        daemon: Daemon, api: docker.APIClient, base_layer: bytes) -> None:
    good = layer_tar([file("m1", "1")])
    bad = ImageSpec([base_layer, good, layer_tar([file("m2", "2")])],
                    tags=[f"{PREFIX}/bad:1"],
                    diff_ids=[sha256(base_layer), sha256(good), "sha256:" + "0" * 64])
    before = (image_ids(api), layer_dirs(daemon))
    reply = raw(daemon, "POST", "/images/load", data=docker_save_tar([bad]))
    assert reply.status_code == 200  # dockerd's: the error is a line of the stream
    message = (f'invalid diffID for layer 2: expected "sha256:{"0" * 64}", got '
               f'"{sha256(bad.layers[2])}"')
    assert [json.loads(line) for line in reply.text.splitlines()] == [
        {"errorDetail": {"message": message}, "error": message}]
    assert (image_ids(api), layer_dirs(daemon)) == before
    assert list((daemon.data_root / "images" / "tmp").iterdir()) == []


def test_a_mismatch_after_progress_lines_is_reported_in_band(
        daemon: Daemon, base_layer: bytes) -> None:
    top = layer_tar([file("n", "1")])
    bad = ImageSpec([base_layer, top], diff_ids=[sha256(base_layer), "sha256:" + "1" * 64])
    reply = raw(daemon, "POST", "/images/load", params={"quiet": "0"},
                data=docker_save_tar([bad]))
    assert reply.status_code == 200
    last = json.loads(reply.text.splitlines()[-1])
    message = f'invalid diffID for layer 1: expected "sha256:{"1" * 64}", got "{sha256(top)}"'
    assert last == {"errorDetail": {"message": message}, "error": message}


GZIPPED = ImageSpec([layer_tar([file("t", "gz")])], compress={0})


@pytest.mark.parametrize(("make", "message"), [
    (lambda base: b"this is not a tar archive" * 100, "invalid tar archive"),
    (lambda base: docker_save_tar([ImageSpec([base], tags=["Upper:1"])]),
     "invalid reference format: repository name must be lowercase"),
    (lambda base: docker_save_tar([ImageSpec([base], tags=["untagged"])]),
     'invalid tag "untagged"'),
    (lambda base: docker_save_tar([ImageSpec([base])], manifest={"not": "a list"}),
     "manifest.json is not a list"),
    (lambda base: oci_layout_tar([(GZIPPED, {})], corrupt_blob=GZIPPED.id),
     f"invalid archive: blob {GZIPPED.id} has digest"),
    # Junk after a gzip stream leaves the diff ID alone; the blob digest catches it.
    (lambda base: oci_layout_tar([(GZIPPED, {})], corrupt_blob=sha256(GZIPPED.stored_layer(0))),
     f"invalid archive: layer blob {sha256(GZIPPED.stored_layer(0))} has digest"),
    (lambda base: docker_save_tar([ImageSpec([layer_tar([file("w")])], os="windows")]),
     "cannot load windows image on linux"),
])
def test_bad_archives_are_refused(daemon: Daemon, api: docker.APIClient, base_layer: bytes,
                                  make, message: str) -> None:  # type: ignore[no-untyped-def]
    before = (image_ids(api), layer_dirs(daemon))
    reply = raw(daemon, "POST", "/images/load", data=make(base_layer))
    assert reply.status_code == 200, reply.text  # dockerd's: an error line in the stream
    last = json.loads(reply.text.splitlines()[-1])
    assert message in last["error"] and last["errorDetail"]["message"] == last["error"]
    assert (image_ids(api), layer_dirs(daemon)) == before
    # docker-py raises ImageLoadError for it
    with pytest.raises(docker.errors.ImageLoadError, match=re.escape(message)):
        docker.DockerClient(base_url=daemon.url).images.load(make(base_layer))


def test_the_cli_shows_a_refused_load(cli: Cli, tmp_path: Path) -> None:
    archive = tmp_path / "junk.tar"
    archive.write_bytes(b"junk" * 1000)
    result = cli("load", "-i", str(archive), check=False)
    assert result.returncode != 0
    assert "invalid tar archive" in result.stderr


# save -------------------------------------------------------------------------------------------


def members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: (tar.extractfile(m).read() if m.isfile() else b"")  # type: ignore[union-attr]
                for m in tar.getmembers()}


def test_save_writes_the_legacy_format_with_the_original_layer_bytes(
        client: docker.DockerClient, base_layer: bytes, made: list[str]) -> None:
    spec = multi_layer_image(base_layer, f"{PREFIX}/saved:1")
    made.append(spec.id)
    client.images.load(docker_save_tar([spec]))
    data = b"".join(client.images.get(f"{PREFIX}/saved:1").save(named=True))
    files = members(data)
    manifest = json.loads(files["manifest.json"])
    assert manifest[0]["RepoTags"] == [f"{PREFIX}/saved:1"]
    assert manifest[0]["Config"] == spec.id.removeprefix("sha256:") + ".json"
    assert files[manifest[0]["Config"]] == spec.config()
    layers = [files[name] for name in manifest[0]["Layers"]]
    # Byte for byte what was loaded (gzipped layers come back as their tar).
    assert layers == spec.layers
    repositories = json.loads(files["repositories"])
    assert repositories == {f"{PREFIX}/saved": {"1": manifest[0]["Layers"][-1].split("/")[0]}}


def test_save_then_load_round_trips_with_the_cli(cli: Cli, client: docker.DockerClient,
                                                 base_layer: bytes, made: list[str],
                                                 tmp_path: Path) -> None:
    spec = multi_layer_image(base_layer, f"{PREFIX}/rt:1")
    made.append(spec.id)
    client.images.load(docker_save_tar([spec]))
    archive = tmp_path / "rt.tar"
    cli("save", "-o", str(archive), f"{PREFIX}/rt:1")
    cli("rmi", f"{PREFIX}/rt:1")
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get(spec.id)
    assert cli("load", "-i", str(archive)).stdout == f"Loaded image: {PREFIX}/rt:1\n"
    assert client.images.get(f"{PREFIX}/rt:1").id == spec.id
    assert run(client, f"{PREFIX}/rt:1", SCRIPT) == EXPECTED
    # And through a pipe, as `docker save busybox | docker load` is typed.
    piped = subprocess.run(f"docker save {PREFIX}/rt:1 | docker load", shell=True,
                           capture_output=True, text=True, env=cli.env, timeout=60, check=False)
    assert (piped.returncode, piped.stdout) == (0, f"Loaded image: {PREFIX}/rt:1\n")


def test_save_busybox_pipe_load_keeps_its_id(cli: Cli, client: docker.DockerClient) -> None:
    before = client.images.get("busybox").id
    piped = subprocess.run("docker save busybox | docker load", shell=True, capture_output=True,
                           text=True, env=cli.env, timeout=60, check=False)
    assert (piped.returncode, piped.stdout) == (0, "Loaded image: busybox:latest\n")
    assert client.images.get("busybox").id == before


def test_save_several_names(daemon: Daemon, client: docker.DockerClient, base_layer: bytes,
                            made: list[str]) -> None:
    one = ImageSpec([base_layer, layer_tar([file("s", "1")])], tags=[f"{PREFIX}/s:1"])
    two = ImageSpec([base_layer, layer_tar([file("s", "2")])],
                    tags=[f"{PREFIX}/s:2", f"{PREFIX}/other:x"])
    made.extend([one.id, two.id])
    client.images.load(docker_save_tar([one, two]))
    reply = raw(daemon, "GET", "/images/get",
                params=[("names", f"{PREFIX}/s"), ("names", one.id[7:19])])
    assert reply.status_code == 200 and reply.headers["Content-Type"] == "application/x-tar"
    manifest = json.loads(members(reply.content)["manifest.json"])
    # A bare repository name saves all of its tags; an ID adds none.
    assert sorted((m["Config"][:12], tuple(m["RepoTags"] or ())) for m in manifest) == sorted(
        [(one.id[7:19], (f"{PREFIX}/s:1",)), (two.id[7:19], (f"{PREFIX}/s:2",))])
    by_id = members(raw(daemon, "GET", f"/images/{two.id}/get").content)
    assert json.loads(by_id["manifest.json"])[0]["RepoTags"] is None
    assert "repositories" not in by_id


def chain_ids(spec: ImageSpec) -> list[str]:
    chains: list[str] = []
    for layer in spec.layers:
        diff_id = sha256(layer)
        chains.append(diff_id if not chains else "sha256:" + hashlib.sha256(
            f"{chains[-1]} {diff_id}".encode()).hexdigest())
    return chains


def test_save_without_a_tar_split_record_tars_the_layer_again(
        daemon: Daemon, client: docker.DockerClient, base_layer: bytes,
        made: list[str]) -> None:
    spec = multi_layer_image(base_layer, f"{PREFIX}/retar:1")
    made.append(spec.id)
    client.images.load(docker_save_tar([spec]))
    deletions = chain_ids(spec)[3]
    (daemon.data_root / "layers" / deletions.removeprefix("sha256:") / "tar-split.gz").unlink()
    data = b"".join(client.images.get(f"{PREFIX}/retar:1").save(named=True))
    client.images.remove(f"{PREFIX}/retar:1")
    # The re-tarred layer has another digest: the archive carries a config that says so,
    # and the image comes back under a new ID, whiteouts intact.
    loaded = client.images.load(data)
    made.append(loaded[0].id)
    assert loaded[0].id != spec.id
    assert loaded[0].attrs["RootFS"]["Layers"][:3] == [sha256(x) for x in spec.layers[:3]]
    assert run(client, f"{PREFIX}/retar:1", SCRIPT) == EXPECTED


def test_save_cuts_the_connection_when_a_layer_is_damaged(
        daemon: Daemon, client: docker.DockerClient, base_layer: bytes,
        made: list[str]) -> None:
    big = layer_tar([file("payload", b"p" * 3_000_000)])
    spec = ImageSpec([base_layer, big], tags=[f"{PREFIX}/damaged:1"])
    made.append(spec.id)
    client.images.load(docker_save_tar([spec]))
    diff = daemon.data_root / "layers" / chain_ids(spec)[1].removeprefix("sha256:") / "diff"
    (diff / "payload").write_bytes(b"short")
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        raw(daemon, "GET", f"/images/{PREFIX}/damaged:1/get")
    # The daemon carries on.
    assert client.images.get(f"{PREFIX}/damaged:1").id == spec.id


@pytest.mark.parametrize(("path", "status", "message"), [
    ("/images/nope/get", 404, "No such image: nope"),
    ("/images/busybox:nope/get", 404, "No such image: busybox:nope"),
    ("/images/get?names=busybox&names=nope", 404, "No such image: nope"),
    ("/images/get", 400, "no image names given"),
    ("/images/Bad/get", 400, "must be lowercase"),
])
def test_save_errors(daemon: Daemon, path: str, status: int, message: str) -> None:
    reply = raw(daemon, "GET", path)
    assert reply.status_code == status
    assert message in reply.json()["message"]


# import -----------------------------------------------------------------------------------------


def test_import_with_changes(cli: Cli, client: docker.DockerClient, base_layer: bytes,
                             made: list[str], tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs.tar"
    rootfs.write_bytes(base_layer)
    changes = ["CMD echo hi", "ENTRYPOINT [\"/bin/sh\",\"-c\"]", "ENV A=1 B=\"two words\"",
               "WORKDIR /w", "EXPOSE 80 53/udp", "USER nobody", "LABEL a=b"]
    args = [arg for change in changes for arg in ("-c", change)]
    image_id = cli("import", *args, "-m", "a message", str(rootfs), f"{PREFIX}/imp:1").stdout
    made.append(image_id.strip())
    attrs = client.images.get(f"{PREFIX}/imp:1").attrs
    config = attrs["Config"]
    assert attrs["Id"] == image_id.strip()
    assert attrs["Comment"] == "a message"
    assert config["Cmd"] == ["/bin/sh", "-c", "echo hi"]
    assert config["Entrypoint"] == ["/bin/sh", "-c"]
    assert config["Env"] == ["A=1", "B=two words"]
    assert config["WorkingDir"] == "/w"
    assert config["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}}
    assert config["User"] == "nobody"
    assert config["Labels"] == {"a": "b"}


@pytest.mark.parametrize(("params", "message"), [
    ({"repo": f"{PREFIX}/x", "changes": "FOO bar"}, "foo is not a valid change command"),
    ({"repo": f"{PREFIX}/x", "changes": "ENV"}, "ENV requires at least one argument"),
    ({"repo": f"{PREFIX}/x", "tag": "a:b"}, "invalid tag format"),
    ({"repo": "Upper"}, "invalid reference format: repository name must be lowercase"),
    ({"repo": f"{PREFIX}/x@sha256:{'a' * 64}"}, "cannot import digest reference"),
])
def test_import_refuses_bad_parameters_before_reading(daemon: Daemon, api: docker.APIClient,
                                                      base_layer: bytes, params: dict[str, str],
                                                      message: str) -> None:
    before = image_ids(api)
    reply = raw(daemon, "POST", "/images/create", params={"fromSrc": "-", **params},
                data=base_layer)
    assert (reply.status_code, reply.json()) == (400, {"message": message})
    assert image_ids(api) == before


def test_import_of_a_non_tar_is_refused(daemon: Daemon, api: docker.APIClient) -> None:
    before = image_ids(api)
    reply = raw(daemon, "POST", "/images/create", params={"fromSrc": "-", "repo": "x"},
                data=b"garbage" * 100)
    assert reply.status_code == 400
    assert "invalid layer archive" in reply.json()["message"]
    assert image_ids(api) == before


# list and inspect ------------------------------------------------------------------------------


# As API 1.44 has them: no VirtualSize.
SUMMARY_KEYS = {"Containers", "Created", "Id", "Labels", "ParentId", "RepoDigests", "RepoTags",
                "SharedSize", "Size"}


@pytest.fixture
def listed(client: docker.DockerClient, base_layer: bytes, made: list[str]) -> list[ImageSpec]:
    """Three labelled images, created a month apart, the newest untagged."""
    specs = []
    for n, (tags, label) in enumerate([([f"{PREFIX}/list:a"], "one"),
                                       ([f"{PREFIX}/list:b", f"{PREFIX}/sub/list:b"], "two"),
                                       ([], "three")]):
        spec = ImageSpec([base_layer, layer_tar([file("l", str(n))])], tags=tags,
                         labels={"org.stowd.list": label}, created=f"2024-0{n + 1}-01T00:00:00Z")
        made.append(spec.id)
        client.images.load(docker_save_tar([spec]))
        specs.append(spec)
    return specs


def ids_of(images: list[dict[str, object]]) -> list[str]:
    return [str(i["Id"]) for i in images]


def test_list_shape_and_filters(api: docker.APIClient, listed: list[ImageSpec]) -> None:
    label = {"label": "org.stowd.list"}
    rows = api.images(filters=label)
    assert len(rows) == 3
    assert all(set(row) == SUMMARY_KEYS for row in rows)
    newest, middle, oldest = rows
    assert newest["RepoTags"] == [] and newest["RepoDigests"] == []
    assert middle["RepoTags"] == [f"{PREFIX}/list:b", f"{PREFIX}/sub/list:b"]
    assert oldest["Labels"] == {"org.stowd.list": "one"}
    assert newest["Created"] > middle["Created"] > oldest["Created"]
    assert ids_of(api.images(filters={**label, "dangling": True})) == [newest["Id"]]
    assert ids_of(api.images(filters={"label": "org.stowd.list=two"})) == [middle["Id"]]
    assert ids_of(api.images(filters={**label, "before": f"{PREFIX}/list:b"})) == [oldest["Id"]]
    assert ids_of(api.images(filters={**label, "since": f"{PREFIX}/list:a"})) == [
        newest["Id"], middle["Id"]]
    # reference: path.Match on familiar names; only matching tags are shown.
    by_ref = api.images(filters={"reference": f"{PREFIX}/sub/*"})
    assert [(r["Id"], r["RepoTags"]) for r in by_ref] == [
        (middle["Id"], [f"{PREFIX}/sub/list:b"])]
    assert api.images(filters={"reference": f"{PREFIX}*"}) == []
    assert api.images(name=f"{PREFIX}/list")[0]["Id"] == middle["Id"]


@pytest.mark.parametrize(("filters", "status", "message"), [
    ('{"bogus":{"x":true}}', 400, "bogus"),
    ('{"dangling":{"maybe":true}}', 400, "Invalid filter 'dangling=[maybe]'"),
    ('{"before":{"nope":true}}', 404, "No such image: nope"),
    ("{nope", 400, "invalid filter"),
])
def test_list_filter_errors(daemon: Daemon, filters: str, status: int, message: str) -> None:
    reply = raw(daemon, "GET", "/images/json", params={"filters": filters})
    assert reply.status_code == status
    assert message in reply.json()["message"]


INSPECT_KEYS = {"Id", "RepoTags", "RepoDigests", "Parent", "Comment", "Created", "Container",
                "ContainerConfig", "DockerVersion", "Author", "Config", "Architecture", "Os",
                "Size", "GraphDriver", "RootFS", "Metadata"}


def test_inspect_by_every_kind_of_name(api: docker.APIClient) -> None:
    attrs = api.inspect_image("busybox")
    assert set(attrs) == INSPECT_KEYS
    hexid = attrs["Id"].removeprefix("sha256:")
    for name in ("busybox:latest", "docker.io/library/busybox", "library/busybox:latest",
                 attrs["Id"], hexid, hexid[:12], f"sha256:{hexid[:12]}"):
        assert api.inspect_image(name)["Id"] == attrs["Id"], name
    assert attrs["RootFS"]["Type"] == "layers"
    assert attrs["Metadata"]["LastTagTime"]
    # One layer: no LowerDir, as dockerd's overlay2 answers.
    assert len(attrs["RootFS"]["Layers"]) == 1 and "LowerDir" not in attrs["GraphDriver"]["Data"]


@pytest.mark.parametrize(("name", "status", "message"), [
    ("nope", 404, "No such image: nope"),
    ("busybox:nope", 404, "No such image: busybox:nope"),
    ("ffffffffffff", 404, "No such image: ffffffffffff"),
    ("Bad", 400, "invalid reference format: repository name must be lowercase"),
    (f"busybox@sha256:{'a' * 64}", 404, f"No such image: busybox@sha256:{'a' * 64}"),
])
def test_inspect_errors(daemon: Daemon, name: str, status: int, message: str) -> None:
    reply = raw(daemon, "GET", f"/images/{name}/json")
    assert (reply.status_code, reply.json()) == (status, {"message": message})


# tag and delete --------------------------------------------------------------------------------


def test_tag(daemon: Daemon, api: docker.APIClient, cli: Cli, made: list[str]) -> None:
    made.extend([f"{PREFIX}/tag:1", f"{PREFIX}/tag:2", f"{PREFIX}/tag:4"])
    assert api.tag("busybox", f"{PREFIX}/tag", "1") is True
    cli("tag", "busybox", f"{PREFIX}/tag:2")
    reply = raw(daemon, "POST", "/images/busybox/tag",
                params={"repo": f"{PREFIX}/tag:3", "tag": "4"})
    assert reply.status_code == 201
    tags = api.inspect_image("busybox")["RepoTags"]
    assert {f"{PREFIX}/tag:1", f"{PREFIX}/tag:2", f"{PREFIX}/tag:4"} <= set(tags)
    assert f"{PREFIX}/tag:3" not in tags
    for name in made:
        api.remove_image(name)


@pytest.mark.parametrize(("name", "params", "status", "message"), [
    ("nope", {"repo": "x"}, 404, "No such image: nope"),
    ("busybox", {"repo": "Bad"}, 400, "must be lowercase"),
    ("busybox", {"repo": "x", "tag": "a:b"}, 400, "invalid tag format"),
    ("busybox", {"repo": f"x@sha256:{'a' * 64}"}, 400, "refusing to create a tag with a digest"),
    ("busybox", {"repo": "a" * 64}, 400, "cannot specify 64-byte hexadecimal strings"),
    ("busybox", {}, 400, "repository name must have at least one component"),
])
def test_tag_errors(daemon: Daemon, name: str, params: dict[str, str], status: int,
                    message: str) -> None:
    reply = raw(daemon, "POST", f"/images/{name}/tag", params=params)
    assert reply.status_code == status
    assert message in reply.json()["message"]


def load_one(client: docker.DockerClient, base: bytes, tags: list[str], marker: str) -> ImageSpec:
    spec = ImageSpec([base, layer_tar([file("del", marker)])], tags=tags)
    client.images.load(docker_save_tar([spec]))
    return spec


def test_delete_untags_then_deletes(api: docker.APIClient, client: docker.DockerClient,
                                    daemon: Daemon, base_layer: bytes, made: list[str]) -> None:
    spec = load_one(client, base_layer, [f"{PREFIX}/del:1", f"{PREFIX}/del:2"], "d1")
    made.append(spec.id)
    top_chain = "sha256:" + hashlib.sha256(
        f"{sha256(base_layer)} {sha256(spec.layers[1])}".encode()).hexdigest()
    assert api.remove_image(f"{PREFIX}/del:1") == [{"Untagged": f"{PREFIX}/del:1"}]
    assert api.remove_image(f"{PREFIX}/del:2") == [
        {"Untagged": f"{PREFIX}/del:2"}, {"Deleted": spec.id}, {"Deleted": top_chain}]
    assert top_chain.removeprefix("sha256:") not in layer_dirs(daemon)
    # busybox's layer, which the image shared, stays.
    assert sha256(base_layer).removeprefix("sha256:") in layer_dirs(daemon)


def test_delete_by_id_of_an_image_with_several_repositories(
        api: docker.APIClient, client: docker.DockerClient, base_layer: bytes,
        made: list[str]) -> None:
    spec = load_one(client, base_layer, [f"{PREFIX}/r1:1", f"{PREFIX}/r2:1"], "d2")
    made.append(spec.id)
    with pytest.raises(docker.errors.APIError) as info:
        api.remove_image(spec.id[7:19])
    assert info.value.status_code == 409
    assert info.value.explanation == (
        f"conflict: unable to delete {spec.id[7:19]} (must be forced) - image is referenced "
        "in multiple repositories")
    report = api.remove_image(spec.id[7:19], force=True)
    assert report[:3] == [{"Untagged": f"{PREFIX}/r1:1"}, {"Untagged": f"{PREFIX}/r2:1"},
                          {"Deleted": spec.id}]


def test_delete_of_an_image_in_use(api: docker.APIClient, client: docker.DockerClient,
                                   base_layer: bytes, made: list[str]) -> None:
    spec = load_one(client, base_layer, [f"{PREFIX}/used:1"], "d3")
    made.append(spec.id)
    ctr = client.containers.create(f"{PREFIX}/used:1", ["sleep", "60"])
    short = ctr.id[:12]
    with pytest.raises(docker.errors.APIError) as info:
        api.remove_image(f"{PREFIX}/used:1")
    assert info.value.status_code == 409
    assert info.value.explanation == (
        f'conflict: unable to remove repository reference "{PREFIX}/used:1" (must force) - '
        f"container {short} is using its referenced image {spec.id[7:19]}")
    with pytest.raises(docker.errors.APIError) as info:
        api.remove_image(spec.id)
    assert info.value.explanation == (
        f"conflict: unable to delete {spec.id[7:19]} (must be forced) - image is being used "
        f"by stopped container {short}")
    ctr.start()
    with pytest.raises(docker.errors.APIError) as info:
        api.remove_image(spec.id, force=True)
    assert "(cannot be forced) - image is being used by running container" in \
        info.value.explanation
    ctr.remove(force=True)
    ctr = client.containers.create(spec.id, ["true"])
    # Forced while a stopped container uses it: untagged, kept for the container.
    assert api.remove_image(f"{PREFIX}/used:1", force=True) == [
        {"Untagged": f"{PREFIX}/used:1"}]
    assert api.inspect_image(spec.id)["RepoTags"] == []
    ctr.remove()
    assert api.remove_image(spec.id)[0] == {"Deleted": spec.id}


@pytest.mark.parametrize(("name", "status", "message"), [
    ("nope", 404, "No such image: nope"),
    ("busybox:nope", 404, "No such image: busybox:nope"),
    ("Bad", 400, "invalid reference format: repository name must be lowercase"),
])
def test_delete_errors(daemon: Daemon, name: str, status: int, message: str) -> None:
    reply = raw(daemon, "DELETE", f"/images/{name}")
    assert (reply.status_code, reply.json()) == (status, {"message": message})


def test_delete_with_the_cli(cli: Cli, client: docker.DockerClient, base_layer: bytes,
                             made: list[str]) -> None:
    spec = load_one(client, base_layer, [f"{PREFIX}/clidel:1"], "d4")
    made.append(spec.id)
    out = cli("rmi", f"{PREFIX}/clidel:1").stdout.splitlines()
    assert out[:2] == [f"Untagged: {PREFIX}/clidel:1", f"Deleted: {spec.id}"]
    result = cli("rmi", f"{PREFIX}/clidel:1", check=False)
    assert result.returncode == 1
    assert f"No such image: {PREFIX}/clidel:1" in result.stderr
