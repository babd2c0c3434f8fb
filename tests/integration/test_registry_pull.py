"""Pulling from a real registry (Debian's docker-registry, started here on 127.0.0.1) through
the docker CLI and docker-py: every image is written into the registry by the test."""

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from stowd.engine.images.archive import host_arch
from tests.daemon import Daemon
from tests.integration.conftest import Cli
from tests.registry import (
    Layer,
    Pushed,
    Registry,
    SlowProxy,
    busybox_layer,
    files_layer,
    free_port,
    remove_registry_images,
)
from tests.waits import until

FIXTURES = Path(__file__).parent / "fixtures"
LAYER_STEPS = ["Pulling fs layer", "Waiting", "Downloading", "Verifying Checksum",
               "Download complete", "Extracting", "Pull complete"]
OTHER_ARCH = "arm64" if host_arch() != "arm64" else "amd64"


def multi_layers() -> list[Layer]:
    """The image dockerd's stream was recorded for (fixtures/dockerd_pull.jsonl)."""
    return [busybox_layer(marker="multi"), files_layer({"etc/a": b"a" * 300000, "etc/b": b"b"}),
            files_layer({"etc/b": None, "etc/c": b"c" * 2_000_000})]


@pytest.fixture(scope="module")
def registry() -> Iterator[Registry]:
    reg = Registry.start()
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def multi(registry: Registry) -> Pushed:
    return registry.push_image("test/multi", "v1", multi_layers())


@pytest.fixture(autouse=True)
def _remove_pulled(client: docker.DockerClient) -> Iterator[None]:
    yield
    remove_registry_images(client)


def _stream(api: docker.APIClient, repo: str, **kw: object) -> list[dict[str, object]]:
    return list(api.pull(repo, stream=True, decode=True, **kw))


def test_pull_by_tag_with_the_cli_then_run(cli: Cli, daemon: Daemon, api: docker.APIClient,
                                           registry: Registry, multi: Pushed) -> None:
    name = f"{registry.host}/test/multi:v1"
    since = int(time.time())
    res = cli("pull", name)
    assert "v1: Pulling from test/multi" in res.stdout
    assert f"Digest: {multi.digest}" in res.stdout
    assert f"Status: Downloaded newer image for {name}" in res.stdout
    out = cli("images", "--digests", "--format", "{{.Repository}} {{.Tag}} {{.Digest}}").stdout
    assert f"{registry.host}/test/multi v1 {multi.digest}" in out
    info = api.inspect_image(name)
    assert info["Id"] == multi.config_digest
    assert info["RepoDigests"] == [f"{registry.host}/test/multi@{multi.digest}"]
    assert info["RepoTags"] == [name]
    # The third layer whites out /etc/b.
    listing = cli("run", "--rm", name, "sh", "-c", "ls /etc; wc -c < /etc/c").stdout.split()
    assert "a" in listing and "c" in listing and "b" not in listing
    assert listing[-1] == "2000000"
    events = api.events(since=since, until=int(time.time()) + 1, decode=True,
                        filters={"type": "image", "event": "pull"})
    assert any(e["Actor"]["ID"] == name for e in events)
    again = cli("pull", name).stdout
    assert f"Status: Image is up to date for {name}" in again
    assert "Pull complete" not in again


def test_pull_by_digest_with_docker_py(client: docker.DockerClient, api: docker.APIClient,
                                       registry: Registry, multi: Pushed) -> None:
    image = client.images.pull(f"{registry.host}/test/multi", tag=multi.digest)
    assert image.id == multi.config_digest
    assert image.tags == []
    assert image.attrs["RepoDigests"] == [f"{registry.host}/test/multi@{multi.digest}"]
    found = api.inspect_image(f"{registry.host}/test/multi@{multi.digest}")
    assert found["Id"] == multi.config_digest


def test_pull_every_tag(cli: Cli, client: docker.DockerClient, registry: Registry) -> None:
    base = busybox_layer()
    registry.push_image("test/tags", "one", [base, files_layer({"one": b"1"})])
    registry.push_image("test/tags", "two", [base, files_layer({"two": b"2"})])
    res = cli("pull", "--all-tags", f"{registry.host}/test/tags")
    assert "one: Pulling from test/tags" in res.stdout
    assert "two: Pulling from test/tags" in res.stdout
    assert f"Status: Downloaded newer image for {registry.host}/test/tags" in res.stdout
    tags = {t for i in client.images.list(f"{registry.host}/test/tags") for t in i.tags}
    assert tags == {f"{registry.host}/test/tags:one", f"{registry.host}/test/tags:two"}


def test_an_oci_index_gives_the_host_platform_even_when_not_first(
        cli: Cli, api: docker.APIClient, registry: Registry) -> None:
    base = busybox_layer()
    other = registry.push_image("test/multiarch", None, [base, files_layer({"arch": b"other"})],
                                oci=True, arch=OTHER_ARCH)
    mine = registry.push_image("test/multiarch", None, [base, files_layer({"arch": b"host"})],
                               oci=True, arch=host_arch())
    attestation = {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                   "digest": mine.digest, "size": mine.size,
                   "platform": {"os": "unknown", "architecture": "unknown"},
                   "annotations": {"vnd.docker.reference.type": "attestation-manifest"}}
    index = registry.push_index("test/multiarch", "v1",
                                [(other, {"os": "linux", "architecture": OTHER_ARCH}),
                                 (mine, {"os": "linux", "architecture": host_arch()})],
                                extra=[attestation])
    name = f"{registry.host}/test/multiarch:v1"
    res = cli("pull", name)
    assert f"Digest: {index}" in res.stdout
    assert cli("run", "--rm", name, "cat", "/arch").stdout == "host"
    info = api.inspect_image(name)
    assert info["Id"] == mine.config_digest
    assert info["RepoDigests"] == [f"{registry.host}/test/multiarch@{index}"]
    # --platform picks the other entry.
    cli("pull", "--platform", f"linux/{OTHER_ARCH}", name)
    assert api.inspect_image(name)["Architecture"] == OTHER_ARCH
    # A platform the index lacks is an error that says what there is.
    res = cli("pull", "--platform", "linux/s390x", name, check=False)
    assert res.returncode != 0
    assert (f"no matching manifest for linux/s390x in the manifest list entries "
            f"(available: linux/{OTHER_ARCH}, linux/{host_arch()})") in res.stderr


def test_a_zstd_layer(cli: Cli, registry: Registry) -> None:
    registry.push_image("test/zstd", "v1", [busybox_layer("zstd"),
                                            files_layer({"z": b"zstd!"}, "zstd"),
                                            files_layer({"plain": b"tar"}, "none")], oci=True)
    name = f"{registry.host}/test/zstd:v1"
    cli("pull", name)
    assert cli("run", "--rm", name, "cat", "/z", "/plain").stdout == "zstd!tar"


def test_already_exists_on_a_shared_base(api: docker.APIClient, registry: Registry) -> None:
    base = busybox_layer()
    first = registry.push_image("test/base", "v1", [base])
    registry.push_image("test/child", "v1", [base, files_layer({"child": b"c"})])
    _stream(api, f"{registry.host}/test/base", tag="v1")
    lines = _stream(api, f"{registry.host}/test/child", tag="v1")
    base_id = first.manifest["layers"][0]["digest"][7:19]
    assert {"status": "Already exists", "progressDetail": {}, "id": base_id} in lines
    statuses = [line["status"] for line in lines if line.get("id") == base_id]
    assert statuses == ["Already exists"]
    assert "Pull complete" in [line["status"] for line in lines]


def _kind(line: dict[str, object]) -> tuple[str, tuple[str, ...]]:
    status = str(line.get("status", ""))
    word = status.split(":")[0] if status.startswith(("Digest", "Status")) else status
    if word.startswith("Pulling from"):
        word = "Pulling from"
    return word, tuple(sorted(line))


def _per_layer(lines: list[dict[str, object]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in lines:
        if "progressDetail" in line and line.get("id"):
            seq = out.setdefault(str(line["id"]), [])
            if not seq or seq[-1] != line["status"]:
                seq.append(str(line["status"]))
    return out


def test_the_progress_stream_has_dockerds_line_kinds(api: docker.APIClient,
                                                     registry: Registry,
                                                     multi: Pushed) -> None:
    recorded = [json.loads(x) for x in (FIXTURES / "dockerd_pull.jsonl").read_text().split("\n")
                if x]
    lines = _stream(api, f"{registry.host}/test/multi", tag="v1")
    assert {_kind(x) for x in lines} == {_kind(x) for x in recorded}
    assert lines[0] == {"status": "Pulling from test/multi", "id": "v1"}
    assert lines[-2] == {"status": f"Digest: {multi.digest}"}
    assert lines[-1] == {"status": "Status: Downloaded newer image for "
                                   f"{registry.host}/test/multi:v1"}
    # Same layer ids (the blob digests), each going through dockerd's steps in its order
    # (dockerd itself sometimes leaves "Verifying Checksum" out).
    mine, theirs = _per_layer(lines), _per_layer(recorded)
    assert mine.keys() == theirs.keys()
    for layer_id, steps in mine.items():
        assert steps == sorted(steps, key=LAYER_STEPS.index), steps
        assert set(theirs[layer_id]) - {"Waiting"} <= set(steps)
    for line in lines:
        if "progress" in line:
            detail = line["progressDetail"]
            assert isinstance(detail, dict) and detail["total"] > 0
            assert str(line["progress"]).startswith("[")


def test_errors_users_can_act_on(cli: Cli, daemon: Daemon, registry: Registry,
                                 client: docker.DockerClient, multi: Pushed) -> None:
    res = cli("pull", f"{registry.host}/test/multi:nope", check=False)
    assert (f"manifest for {registry.host}/test/multi:nope not found: manifest unknown: "
            "manifest unknown") in res.stderr
    with pytest.raises(docker.errors.NotFound) as err:
        client.images.pull(f"{registry.host}/test/nosuch", tag="v1")
    assert "manifest unknown" in str(err.value.explanation)
    closed = free_port()
    res = cli("pull", f"127.0.0.1:{closed}/x:y", check=False)
    assert (f'Get "http://127.0.0.1:{closed}/v2/": dial tcp 127.0.0.1:{closed}: connect: '
            "connection refused") in res.stderr
    with pytest.raises(docker.errors.APIError) as err2:
        client.images.pull("no-such-host.invalid:5000/x", tag="y")
    assert "no such host" in str(err2.value.explanation)
    # A manifest whose digest is not the one asked for.
    wrong = "sha256:" + "0" * 64
    res = cli("pull", f"{registry.host}/test/multi@{wrong}", check=False)
    assert "not found" in res.stderr
    # `docker run` of an image the registry lacks says what the registry said.
    res = cli("run", "--rm", f"{registry.host}/test/nosuch", check=False)
    assert res.returncode == 125
    assert f"Unable to find image '{registry.host}/test/nosuch:latest' locally" in res.stderr
    assert "manifest unknown" in res.stderr


def test_a_corrupt_blob_is_refused_and_leaves_nothing(
        cli: Cli, daemon: Daemon, registry: Registry) -> None:
    layer = files_layer({"x": os.urandom(4096)})
    pushed = registry.push_image("test/corrupt", "v1", [busybox_layer(), layer])
    digest = pushed.manifest["layers"][1]["digest"]
    path = registry.blob_path(digest)
    data = bytearray(path.read_bytes())
    data[-20] ^= 0xFF
    path.write_bytes(bytes(data))
    res = cli("pull", f"{registry.host}/test/corrupt:v1", check=False)
    assert res.returncode != 0
    assert f"filesystem layer verification failed for digest {digest}" in res.stderr
    assert cli("images", "-q", f"{registry.host}/test/corrupt").stdout == ""
    layers = os.listdir(daemon.data_root / "layers")
    assert not [d for d in layers if d.startswith("tmp-")]
    # The refused layer is not in the store (its chain would be its diff ID's, on busybox).
    assert not [d for d in layers if _holds(daemon.data_root / "layers" / d, "x")]


def _holds(layer: Path, name: str) -> bool:
    return (layer / "diff" / name).exists()


def test_docker_run_pulls_a_missing_image(cli: Cli, registry: Registry) -> None:
    registry.push_image("test/runme", "latest", [busybox_layer(),
                                                 files_layer({"hello": b"pulled"})])
    res = cli("run", "--rm", f"{registry.host}/test/runme", "cat", "/hello")
    assert res.stdout == "pulled"
    assert f"Unable to find image '{registry.host}/test/runme:latest' locally" in res.stderr
    assert "Pull complete" in res.stderr


@pytest.fixture(scope="module")
def big(registry: Registry) -> tuple[Pushed, str]:
    """An image with a 6 MB layer of random bytes, behind a proxy sending 4 MB/s."""
    pushed = registry.push_image("test/big", "v1", [busybox_layer(),
                                                    files_layer({"big": os.urandom(6 << 20)})])
    return pushed, pushed.manifest["layers"][1]["digest"]


@pytest.fixture
def proxy(registry: Registry) -> Iterator[SlowProxy]:
    p = SlowProxy(registry.port, rate=4 << 20)
    yield p
    p.stop()


def test_concurrent_pulls_share_one_download(daemon: Daemon, proxy: SlowProxy,
                                             big: tuple[Pushed, str]) -> None:
    _, digest = big
    results: list[list[dict[str, object]]] = []

    def pull() -> None:
        api = docker.APIClient(base_url=daemon.url)
        results.append(_stream(api, f"{proxy.host}/test/big", tag="v1"))
        api.close()

    threads = [threading.Thread(target=pull) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 3
    for lines in results:
        assert lines[-1]["status"] == f"Status: Downloaded newer image for {proxy.host}/test/big:v1"
        assert not any("error" in x for x in lines)
    assert proxy.blob_gets(digest) == 1


def test_a_client_leaving_mid_pull_cancels_it_and_leaves_nothing(
        daemon: Daemon, proxy: SlowProxy, big: tuple[Pushed, str],
        api: docker.APIClient) -> None:
    name = f"{proxy.host}/test/big"
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(str(daemon.socket))
    sock.sendall(f"POST /images/create?fromImage={name}&tag=v1 HTTP/1.1\r\nHost: x\r\n"
                 "Content-Length: 0\r\n\r\n".encode())
    seen = b""
    while b"Downloading" not in seen:
        chunk = sock.recv(65536)
        assert chunk, seen
        seen += chunk
    sock.close()
    layers = daemon.data_root / "layers"
    until(lambda: not [p for p in os.listdir(layers) if p.startswith("tmp-")], 15,
          "the pull's temporary layers stayed")
    with pytest.raises(docker.errors.ImageNotFound):
        api.inspect_image(f"{name}:v1")
    # The next pull works.
    lines = _stream(api, name, tag="v1")
    assert lines[-1]["status"] == f"Status: Downloaded newer image for {name}:v1"


def test_sigkill_mid_pull_then_the_next_start_and_pull_work(
        own_daemon: Daemon, proxy: SlowProxy, big: tuple[Pushed, str]) -> None:
    name = f"{proxy.host}/test/big"
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(str(own_daemon.socket))
    sock.sendall(f"POST /images/create?fromImage={name}&tag=v1 HTTP/1.1\r\nHost: x\r\n"
                 "Content-Length: 0\r\n\r\n".encode())
    seen = b""
    while b"Downloading" not in seen:
        chunk = sock.recv(65536)
        assert chunk, seen
        seen += chunk
    own_daemon.kill9()
    sock.close()
    own_daemon.start()
    api = docker.APIClient(base_url=own_daemon.url)
    api.version()  # answered once the engine has opened (and swept the store)
    layers = own_daemon.data_root / "layers"
    assert not [p for p in os.listdir(layers) if p.startswith("tmp-")]
    lines = _stream(api, name, tag="v1")
    assert lines[-1]["status"] == f"Status: Downloaded newer image for {name}:v1"
    assert api.inspect_image(f"{name}:v1")["Id"] == big[0].config_digest
    api.close()
