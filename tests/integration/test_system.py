"""/_ping, /version, /info, /events, the /vX.Y prefix, errors: what clients see first."""

import http.client
import json
import os
import platform
import socket
import subprocess
import time
import uuid
from typing import Any

import docker
import pytest

from tests.daemon import Daemon
from tests.integration.conftest import Cli
from tests.waits import until

TOO_OLD = ("client version {v} is too old. Minimum supported API version is 1.24, please "
           "upgrade your client to a newer version")
TOO_NEW = "client version {v} is too new. Maximum supported API version is 1.44"
COMMON = {"Api-Version": "1.44", "Ostype": "linux", "Docker-Experimental": "false"}


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 10) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


def call(daemon: Daemon, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = UnixHTTPConnection(str(daemon.socket))
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def get_json(daemon: Daemon, path: str) -> Any:
    status, _, body = call(daemon, "GET", path)
    assert status == 200, body
    return json.loads(body)


def assert_common_headers(headers: dict[str, str]) -> None:
    for key, value in COMMON.items():
        assert headers.get(key) == value, key
    assert headers["Server"].startswith("stowd/") and headers["Server"].endswith("(linux)")


# --- /_ping ------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["", "/v1.24", "/v1.41", "/v1.44"])
def test_ping_get(daemon: Daemon, prefix: str) -> None:
    status, headers, body = call(daemon, "GET", prefix + "/_ping")
    assert (status, body) == (200, b"OK")
    assert_common_headers(headers)
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert headers["Cache-Control"] == "no-cache, no-store, must-revalidate"
    assert headers["Pragma"] == "no-cache"


@pytest.mark.parametrize("prefix", ["", "/v1.44"])
def test_ping_head(daemon: Daemon, prefix: str) -> None:
    status, headers, body = call(daemon, "HEAD", prefix + "/_ping")
    assert (status, body) == (200, b"")
    assert headers["Content-Length"] == "0"
    assert_common_headers(headers)
    assert headers["Cache-Control"] == "no-cache, no-store, must-revalidate"
    assert headers["Pragma"] == "no-cache"


def test_ping_through_clients(client: docker.DockerClient, cli: Cli) -> None:
    assert client.ping() is True
    assert cli("version", "--format", "{{.Server.APIVersion}}").stdout.strip() == "1.44"


# --- the version prefix --------------------------------------------------------------------


def test_every_version_from_1_24_to_1_44_is_accepted(daemon: Daemon) -> None:
    for minor in range(24, 45):
        status, _, body = call(daemon, "GET", f"/v1.{minor}/version")
        assert status == 200, (minor, body)
        assert json.loads(body)["ApiVersion"] == "1.44"


@pytest.mark.parametrize("v", ["1.23", "1.12", "1"])
def test_too_old_is_a_plain_text_400(daemon: Daemon, v: str) -> None:
    # dockerd answers clients older than 1.24 in text, which they print as-is.
    status, headers, body = call(daemon, "GET", f"/v{v}/_ping")
    assert status == 400
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert body.decode() == TOO_OLD.format(v=v) + "\n"
    assert_common_headers(headers)


@pytest.mark.parametrize(("v", "path"), [("1.45", "/_ping"), ("1.99", "/containers/json"),
                                         ("2.0", "/info")])
def test_too_new_is_a_json_400(daemon: Daemon, v: str, path: str) -> None:
    status, headers, body = call(daemon, "GET", f"/v{v}{path}")
    assert status == 400
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"message": TOO_NEW.format(v=v)}
    assert_common_headers(headers)


def test_old_pinned_clients_work(daemon: Daemon, client: docker.DockerClient) -> None:
    assert get_json(daemon, "/v1.32/containers/json") == []
    for version in ("1.24", "1.32", "1.41"):
        pinned = docker.APIClient(base_url=daemon.url, version=version, timeout=30)
        try:
            assert pinned.version()["ApiVersion"] == "1.44"
            assert isinstance(pinned.containers(all=True), list)
            assert pinned.info()["Driver"] == "overlay2"
        finally:
            pinned.close()


@pytest.mark.parametrize("path", ["/_ping", "/version", "/info", "/containers/json",
                                  "/images/json"])
def test_routes_answer_with_and_without_prefix(daemon: Daemon, path: str) -> None:
    bare = call(daemon, "GET", path)
    versioned = call(daemon, "GET", "/v1.44" + path)
    assert bare[0] == versioned[0] == 200


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/nope"), ("GET", "/v1.44/nope"), ("GET", "/v1.99/nope"), ("POST", "/_ping"),
    ("DELETE", "/version"), ("PUT", "/v1.44/info"), ("GET", "/containers/json/extra"),
    ("OPTIONS", "/_ping"), ("GET", "/v/_ping"), ("GET", "/vx.y/_ping"),
])
def test_unknown_route_or_method_is_page_not_found(daemon: Daemon, method: str,
                                                   path: str) -> None:
    status, headers, body = call(daemon, method, path)
    assert status == 404
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"message": "page not found"}


@pytest.mark.parametrize("prefix", ["", "/v1.44"])
@pytest.mark.parametrize(("body", "ctype"), [
    (b"{bad", "application/json"), (b'{"Image": "busybox"', "application/json"),
    (b"\xff\xfe", "application/json"), (b"[1, 2]", "application/json"),
    (b'{"Image": "busybox"}', "text/plain"),
])
def test_malformed_bodies_are_400(daemon: Daemon, prefix: str, body: bytes,
                                  ctype: str) -> None:
    status, headers, raw = call(daemon, "POST", prefix + "/containers/create", body=body,
                                headers={"Content-Type": ctype})
    assert status == 400, raw
    assert headers["Content-Type"] == "application/json"
    message = json.loads(raw)["message"]
    assert isinstance(message, str) and message
    assert_common_headers(headers)


def test_engine_errors_are_docker_json(daemon: Daemon) -> None:
    status, headers, body = call(daemon, "GET", "/v1.44/containers/no-such-thing/json")
    assert status == 404
    assert headers["Content-Type"] == "application/json"
    assert set(json.loads(body)) == {"message"}
    assert_common_headers(headers)


# --- /version ------------------------------------------------------------------------------


def test_version_body(daemon: Daemon, client: docker.DockerClient) -> None:
    body = client.version()
    assert body == get_json(daemon, "/version") == get_json(daemon, "/v1.24/version")
    assert body["ApiVersion"] == "1.44"
    assert body["MinAPIVersion"] == "1.24"
    assert body["Os"] == "linux"
    assert body["Arch"] == {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(),
                                                                       platform.machine())
    assert body["KernelVersion"] == platform.release()
    for key in ("Version", "GitCommit", "GoVersion", "BuildTime", "Platform", "Components"):
        assert key in body
    engine = body["Components"][0]
    assert engine["Name"] == "Engine" and engine["Version"] == body["Version"]
    assert engine["Details"]["ApiVersion"] == "1.44"
    assert engine["Details"]["MinAPIVersion"] == "1.24"
    names = [c["Name"] for c in body["Components"]]
    assert "runc" in names or "crun" in names
    assert all(c["Version"] for c in body["Components"])


def test_docker_version_prints_the_range(cli: Cli) -> None:
    out = cli("version").stdout
    assert "API version:      1.44 (minimum version 1.24)" in out


# --- /info ---------------------------------------------------------------------------------


def test_info_fields(daemon: Daemon, client: docker.DockerClient) -> None:
    info = client.info()
    assert info["Driver"] == "overlay2"
    assert info["CgroupVersion"] in ("1", "2")
    assert info["CgroupDriver"] == "cgroupfs"
    assert info["NCPU"] == os.cpu_count()
    assert info["MemTotal"] > 0
    assert info["OSType"] == "linux"
    assert info["KernelVersion"] == platform.release()
    assert info["DockerRootDir"] == str(daemon.data_root)
    assert info["ServerVersion"]
    assert info["Images"] >= 1  # the session's busybox
    assert info["DefaultRuntime"] in info["Runtimes"]
    assert dict(info["DriverStatus"])["Backing Filesystem"]
    counts = ("Containers", "ContainersRunning", "ContainersPaused", "ContainersStopped")
    assert all(isinstance(info[k], int) for k in counts)
    assert info["Containers"] == sum(info[k] for k in counts[1:])


def _counts(client: docker.DockerClient) -> tuple[int, int, int, int]:
    info = client.info()
    return (info["Containers"], info["ContainersRunning"], info["ContainersPaused"],
            info["ContainersStopped"])


def test_info_counts_follow_containers(client: docker.DockerClient) -> None:
    total, running, paused, stopped = _counts(client)
    ctr = client.containers.run("busybox", ["sleep", "60"], detach=True)
    assert _counts(client) == (total + 1, running + 1, paused, stopped)
    created = client.containers.create("busybox", ["true"])
    assert _counts(client) == (total + 2, running + 1, paused, stopped + 1)
    ctr.kill()
    ctr.wait(timeout=30)
    assert _counts(client) == (total + 2, running, paused, stopped + 2)
    ctr.remove()
    created.remove()
    assert _counts(client) == (total, running, paused, stopped)


def test_docker_info_through_the_cli(cli: Cli) -> None:
    out = cli("info", "--format", "{{json .}}").stdout
    info = json.loads(out)
    assert info["Driver"] == "overlay2"
    assert info["ServerVersion"]
    assert not info.get("ServerErrors")  # the CLI decoded every field it needs


# --- /events -------------------------------------------------------------------------------


def _open_events(daemon: Daemon, path: str = "/v1.44/events") -> tuple[socket.socket, float]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(str(daemon.socket))
    t0 = time.monotonic()
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    return sock, t0


def _read_headers(sock: socket.socket) -> tuple[bytes, bytes]:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, "connection closed before headers"
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head, rest


def _read_events(sock: socket.socket, rest: bytes, want: int) -> list[dict[str, Any]]:
    """Decode chunked JSON lines until `want` events have arrived."""
    buf, payload, events = rest, b"", []
    while len(events) < want:
        while True:
            size_line, sep, tail = buf.partition(b"\r\n")
            if not sep:
                break
            size = int(size_line, 16)
            if len(tail) < size + 2:
                break
            payload += tail[:size]
            buf = tail[size + 2:]
        *lines, payload = payload.split(b"\n")
        events += [json.loads(line) for line in lines if line.strip()]
        if len(events) < want:
            chunk = sock.recv(65536)
            assert chunk, "events stream closed"
            buf += chunk
    return events


def test_events_flushes_headers_at_once(daemon: Daemon) -> None:
    sock, t0 = _open_events(daemon)
    try:
        head, _ = _read_headers(sock)
        assert time.monotonic() - t0 < 1.0  # no event needed to get the headers out
        assert head.startswith(b"HTTP/1.1 200 OK")
        assert b"Content-Type: application/json" in head
        assert b"Api-Version: 1.44" in head
    finally:
        sock.close()


def test_events_stream_container_events(daemon: Daemon, client: docker.DockerClient) -> None:
    sock, _ = _open_events(daemon)
    try:
        _, rest = _read_headers(sock)
        ctr = client.containers.run("busybox", ["true"], detach=True, name="events-probe")
        events = _read_events(sock, rest, 3)
    finally:
        sock.close()
    # dockerd's order: the container joins its network between create and start.
    assert (events[1]["Type"], events[1]["Action"]) == ("network", "connect")
    assert events[1]["Actor"]["Attributes"]["container"] == ctr.id
    create, start = events[0], events[2]
    assert [create["Action"], start["Action"]] == ["create", "start"]
    for event in (create, start):
        assert event["Type"] == "container"
        assert event["Actor"]["ID"] == ctr.id
        assert event["Actor"]["Attributes"]["name"] == "events-probe"
        assert event["Actor"]["Attributes"]["image"] == "busybox"
        assert event["scope"] == "local"
        assert isinstance(event["time"], int) and isinstance(event["timeNano"], int)
        assert event["time"] == event["timeNano"] // 1_000_000_000
        # The pre-1.52 fields old clients read.
        assert event["status"] == event["Action"] and event["id"] == ctr.id
        assert event["from"] == "busybox"
    ctr.wait(timeout=30)


def test_events_since_until_replays_and_ends(client: docker.DockerClient) -> None:
    since = time.time()
    ctr = client.containers.create("busybox", ["true"], name="events-replay")
    ctr.remove()
    until = time.time() + 0.2
    events = list(client.events(since=since, until=until, decode=True,
                                filters={"container": ctr.id}))
    assert [e["Action"] for e in events] == ["create", "destroy"]


def test_events_filtered_by_network(client: docker.DockerClient, cli: Cli) -> None:
    """`docker events --filter network=<name>` shows that network's events only (the key
    was accepted and ignored: every event came through)."""
    since = time.time()
    net = client.networks.create(f"evnet-{uuid.uuid4().hex[:6]}")
    other = client.networks.create(f"evother-{uuid.uuid4().hex[:6]}")
    ctr = client.containers.create("busybox", ["true"])
    net.connect(ctr)
    other.connect(ctr)
    net.disconnect(ctr)
    ctr.remove()
    net.remove()
    other.remove()
    until = time.time() + 0.2
    shown = list(client.events(since=since, until=until, decode=True,
                               filters={"network": net.name}))
    assert [(e["Type"], e["Action"]) for e in shown] == [
        ("network", "create"), ("network", "connect"), ("network", "disconnect"),
        ("network", "destroy")]
    assert {e["Actor"]["ID"] for e in shown} == {net.id}
    out = cli("events", "--since", str(since), "--until", str(until), "--filter",
              f"network={net.id[:12]}", "--format", "{{.Type}} {{.Action}}").stdout
    assert out.split("\n")[:4] == ["network create", "network connect",
                                    "network disconnect", "network destroy"]


def test_events_subscriber_is_dropped_when_the_client_goes(daemon: Daemon,
                                                          client: docker.DockerClient) -> None:
    before = client.info()["NEventsListener"]
    sock, _ = _open_events(daemon)
    _read_headers(sock)
    assert client.info()["NEventsListener"] == before + 1
    sock.close()
    until(lambda: client.info()["NEventsListener"] == before, 5,
          "the listener stayed counted", every=0.1)


def test_cli_events(cli: Cli, client: docker.DockerClient) -> None:
    since = str(int(time.time()) - 1)
    ctr = client.containers.create("busybox", ["true"], name="events-cli")
    ctr.remove()
    out = cli("events", "--since", since, "--until", str(int(time.time()) + 1),
              "--filter", f"container={ctr.id}", "--format", "{{.Type}} {{.Action}}",
              timeout=30).stdout
    assert out.splitlines() == ["container create", "container destroy"]


def test_docker_cli_is_not_stalled_by_events(cli: Cli, api: docker.APIClient) -> None:
    before = api.info()["NEventsListener"]
    proc = subprocess.Popen(["docker", "events", "--format", "{{.Action}}"], env=cli.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        until(lambda: proc.poll() is not None or api.info()["NEventsListener"] > before,
              what="docker events subscribed")
        assert proc.poll() is None  # connected and waiting, not failed
    finally:
        proc.terminate()
        proc.wait(timeout=10)
