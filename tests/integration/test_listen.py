"""Listening safely: socket mode, loopback TCP, refusals, mutual TLS, browser guards.

Extra daemons listen on 127.0.0.1 only. Non-loopback addresses appear only in daemons that
must refuse to start; no test sends a byte to anything but loopback.
"""

import contextlib
import grp
import http.client
import os
import socket
import ssl
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import requests
from docker.tls import TLSConfig

from tests.daemon import REPO, Daemon
from tests.unit.test_listen import Pki, make_pki
from tests.waits import until


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("daemons need root")


def _start(hosts_tail: list[str], extra_args: list[str] | None = None) -> Daemon:
    d = Daemon(extra_args=extra_args)
    d.hosts = [d.url, *hosts_tail]  # the unix socket too: wait_ready and cleanup use it
    try:
        d.start()
        for host in hosts_tail:
            _wait_listening(d, host)
    except BaseException:
        d.cleanup()
        raise
    return d


def _wait_listening(d: Daemon, host: str, timeout: float = 20.0) -> None:
    """wait_ready saw the unix socket; a TCP listener (TLS context loaded first) may come later."""
    if not host.startswith("tcp://"):
        return
    addr, _, port = host.removeprefix("tcp://").rpartition(":")
    def listening() -> bool:
        assert d.proc is not None and d.proc.poll() is None, d.log()
        with contextlib.suppress(OSError), socket.create_connection((addr, int(port)), 1):
            return True
        return False

    until(listening, timeout, f"stowd did not listen on {host}")


def _wait_exit(d: Daemon, timeout: float = 20) -> int:
    assert d.proc is not None
    try:
        return d.proc.wait(timeout=timeout)
    finally:
        d.proc = None


def tcp_request(port: int, path: str, headers: dict[str, str] | None = None,
                method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest(method, path, skip_host="Host" in (headers or {}))
        for key, value in (headers or {}).items():
            conn.putheader(key, value)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=10)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(self.unix_path)


# --- the unix socket ----------------------------------------------------------------------


def test_unix_socket_is_0660_root_and_group(daemon: Daemon) -> None:
    st = os.stat(daemon.socket)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660
    assert st.st_uid == 0
    try:
        expected_gid = grp.getgrnam("docker").gr_gid
    except KeyError:
        expected_gid = 0
    assert st.st_gid == expected_gid


def test_unix_socket_ignores_origin(daemon: Daemon) -> None:
    # A browser cannot reach a unix socket; local proxies that forward browser headers
    # (Portainer, say) keep working.
    conn = UnixHTTPConnection(str(daemon.socket))
    conn.request("GET", "/_ping", headers={"Origin": "http://evil.example",
                                           "Host": "evil.example"})
    assert conn.getresponse().status == 200
    conn.close()


def test_socket_in_use_is_refused(daemon: Daemon) -> None:
    _need_root()
    d = Daemon()
    d.hosts = [daemon.url]
    try:
        d.start(wait=False)
        assert _wait_exit(d) == 1
        assert "is in use: another daemon is serving it" in d.log()
        assert daemon.socket.exists()
        assert daemon.client().ping()
    finally:
        d.cleanup()


def test_second_daemon_on_the_same_data_root_is_refused(daemon: Daemon) -> None:
    _need_root()
    d = Daemon()
    d.data_root = daemon.data_root
    try:
        d.start(wait=False)
        assert _wait_exit(d) == 1
        assert f"is running with --data-root {daemon.data_root}" in d.log()
    finally:
        d.data_root = d.root / "data"  # cleanup must not touch the session daemon's root
        d.cleanup()
    assert daemon.client().ping()


# --- refusing unsafe addresses ------------------------------------------------------------


@pytest.mark.parametrize("host", ["tcp://0.0.0.0:{port}", "tcp://[::]:{port}"])
def test_non_loopback_plain_tcp_refuses_to_start(host: str) -> None:
    _need_root()
    port = free_port()
    d = Daemon()
    d.hosts = [d.url, host.format(port=port)]
    try:
        d.start(wait=False)
        assert _wait_exit(d) == 1
        log = d.log()
        assert "refusing to serve the Docker API without TLS" in log
        assert "--tlsverify" in log and "--insecure-tcp" in log
        assert not d.socket.exists()  # nothing was bound
        assert not d.data_root.exists()  # and no state was touched
    finally:
        d.cleanup()


def test_port_in_use_fails_before_state() -> None:
    _need_root()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        d = Daemon()
        d.hosts = [d.url, f"tcp://127.0.0.1:{port}"]
        try:
            d.start(wait=False)
            assert _wait_exit(d) == 1
            assert f"cannot listen on tcp://127.0.0.1:{port}: Address already in use" in d.log()
            assert not d.socket.exists()
            assert not (d.data_root / "stowd.db").exists()
        finally:
            d.cleanup()


# --- plain TCP on loopback ---------------------------------------------------------------


@pytest.fixture(scope="module")
def tcp_daemon() -> Iterator[tuple[Daemon, int]]:
    _need_root()
    port = free_port()
    d = _start([f"tcp://127.0.0.1:{port}"])
    yield d, port
    d.cleanup()


def test_loopback_tcp_serves_docker_py(tcp_daemon: tuple[Daemon, int]) -> None:
    _, port = tcp_daemon
    c = docker.DockerClient(base_url=f"tcp://127.0.0.1:{port}", version="auto", timeout=30)
    try:
        assert c.ping()
        assert c.version()["ApiVersion"] == "1.44"
        assert c.containers.list(all=True) == []
    finally:
        c.close()


def test_loopback_tcp_serves_the_cli(tcp_daemon: tuple[Daemon, int]) -> None:
    _, port = tcp_daemon
    env = dict(os.environ, DOCKER_HOST=f"tcp://127.0.0.1:{port}",
               DOCKER_CONFIG="/tmp/stowd-docker-cfg")
    env.pop("DOCKER_CONTEXT", None)
    out = subprocess.run(["docker", "version", "--format", "{{.Server.APIVersion}}"],
                         capture_output=True, text=True, env=env, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1.44"


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "api.moby.localhost"])
def test_loopback_host_headers_are_served(tcp_daemon: tuple[Daemon, int], host: str) -> None:
    _, port = tcp_daemon
    status, _, body = tcp_request(port, "/_ping", {"Host": f"{host}:{port}"})
    assert (status, body) == (200, b"OK")


@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}",
                                  "127.0.0.1.nip.io:{port}"])
def test_dns_rebinding_host_is_refused(tcp_daemon: tuple[Daemon, int], host: str) -> None:
    _, port = tcp_daemon
    status, headers, body = tcp_request(port, "/v1.44/containers/json",
                                        {"Host": host.format(port=port)})
    assert status == 403
    assert headers["Content-Type"] == "application/json"
    assert b"DNS rebinding" in body


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_browser_origin_is_refused(tcp_daemon: tuple[Daemon, int], method: str) -> None:
    _, port = tcp_daemon
    status, _, body = tcp_request(port, "/containers/json",
                                  {"Host": f"127.0.0.1:{port}", "Origin": "http://evil.example"},
                                  method=method)
    assert status == 403
    assert b"Origin header" in body


def test_guards_hold_for_pings_answered_from_the_cache(tcp_daemon: tuple[Daemon, int]) -> None:
    """A ping the fast lane has kept (api/fastlane.py) is refused all the same when it
    carries an Origin, or a Host that is not loopback, on the same path and method."""
    _, port = tcp_daemon
    for _ in range(2):  # the second is answered from the kept bytes
        status, _, body = tcp_request(port, "/_ping", {"Host": f"127.0.0.1:{port}"})
        assert (status, body) == (200, b"OK")
    status, _, body = tcp_request(port, "/_ping", {"Host": f"127.0.0.1:{port}",
                                                   "Origin": "http://evil.example"})
    assert status == 403 and b"Origin header" in body
    status, _, body = tcp_request(port, "/_ping", {"Host": f"evil.example:{port}"})
    assert status == 403 and b"DNS rebinding" in body


# --- mutual TLS ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(autouse=True)
def _no_ca_bundle_override(monkeypatch: pytest.MonkeyPatch) -> None:
    # requests lets REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE override a session's `verify` path,
    # which would replace docker-py's TLSConfig(ca_cert=...) with the system bundle.
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)


@pytest.fixture(scope="module")
def tls_daemon(pki: Pki) -> Iterator[tuple[Daemon, int]]:
    _need_root()
    port = free_port()
    d = _start([f"tcp://127.0.0.1:{port}"],
               ["--tlsverify", "--tlscacert", str(pki.ca), "--tlscert", str(pki.server_cert),
                "--tlskey", str(pki.server_key)])
    yield d, port
    d.cleanup()


def test_tls_docker_py_with_a_client_certificate(tls_daemon: tuple[Daemon, int],
                                                 pki: Pki) -> None:
    _, port = tls_daemon
    tls = TLSConfig(client_cert=(str(pki.client_cert), str(pki.client_key)),
                    ca_cert=str(pki.ca), verify=True)
    c = docker.DockerClient(base_url=f"tcp://127.0.0.1:{port}", tls=tls, version="auto",
                            timeout=30)
    try:
        assert c.ping()
        assert c.version()["ApiVersion"] == "1.44"
        assert c.info()["Containers"] == 0
    finally:
        c.close()


def test_tls_cli_with_a_client_certificate(tls_daemon: tuple[Daemon, int], pki: Pki) -> None:
    _, port = tls_daemon
    env = dict(os.environ, DOCKER_CONFIG="/tmp/stowd-docker-cfg")
    for key in ("DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH"):
        env.pop(key, None)
    base = ["docker", "-H", f"tcp://127.0.0.1:{port}", "--tlsverify", "--tlscacert",
            str(pki.ca)]
    ok = subprocess.run([*base, "--tlscert", str(pki.client_cert), "--tlskey",
                         str(pki.client_key), "version", "--format",
                         "{{.Server.APIVersion}} {{.Server.MinAPIVersion}}"],
                        capture_output=True, text=True, env=env, timeout=60, check=False)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "1.44 1.24"
    # A certificate the server's CA did not sign is refused at the handshake.
    refused = subprocess.run([*base, "--tlscert", str(pki.rogue_cert), "--tlskey",
                              str(pki.rogue_key), "version"],
                             capture_output=True, text=True, env=env, timeout=60, check=False)
    assert refused.returncode != 0
    assert "1.44" not in refused.stdout


def _handshake(port: int, cert: tuple[Path, Path] | None, ca: Path) -> bytes:
    ctx = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall(b"GET /_ping HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
        return data


def test_tls_with_the_trusted_client_certificate(tls_daemon: tuple[Daemon, int],
                                                 pki: Pki) -> None:
    _, port = tls_daemon
    reply = _handshake(port, (pki.client_cert, pki.client_key), pki.ca)
    assert reply.startswith(b"HTTP/1.1 200 OK") and reply.endswith(b"OK")


@pytest.mark.parametrize("who", ["no certificate", "certificate from another CA"])
def test_tls_refuses_clients_without_a_trusted_certificate(
        tls_daemon: tuple[Daemon, int], pki: Pki, who: str) -> None:
    d, port = tls_daemon
    cert = None if who == "no certificate" else (pki.rogue_cert, pki.rogue_key)
    # TLS 1.3 clients finish their side of the handshake before the server checks the
    # client certificate; the server then sends an alert and closes: no HTTP answer comes.
    try:
        reply = _handshake(port, cert, pki.ca)
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        reply = b""
    assert reply == b""
    assert "Traceback" not in d.log()


def test_tls_docker_py_without_a_certificate_is_refused(tls_daemon: tuple[Daemon, int],
                                                        pki: Pki) -> None:
    _, port = tls_daemon
    c = docker.APIClient(base_url=f"https://127.0.0.1:{port}", version="1.44", timeout=10,
                         tls=TLSConfig(ca_cert=str(pki.ca), verify=True))
    try:
        with pytest.raises(requests.exceptions.ConnectionError):
            c.ping()
    finally:
        c.close()


def test_tls_port_does_not_speak_plain_http(tls_daemon: tuple[Daemon, int]) -> None:
    _, port = tls_daemon
    with contextlib.suppress(ConnectionError, http.client.HTTPException, OSError):
        status, _, _ = tcp_request(port, "/_ping", {"Host": "127.0.0.1"})
        assert status != 200


def test_tls_listener_still_refuses_origin(tls_daemon: tuple[Daemon, int], pki: Pki) -> None:
    _, port = tls_daemon
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    ctx.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    try:
        conn.request("GET", "/_ping", headers={"Origin": "https://evil.example"})
        assert conn.getresponse().status == 403
    finally:
        conn.close()


# --- the command line --------------------------------------------------------------------


def _stowd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stowd", *args], capture_output=True,
                          text=True, timeout=30, check=False, cwd=str(REPO),
                          env=dict(os.environ, PYTHONPATH=str(REPO)))


def test_stowd_help_and_version() -> None:
    top = _stowd("--help")
    assert top.returncode == 0
    assert top.stdout.startswith("usage: stowd ")
    assert "serve" in top.stdout and "Docker Engine API" in top.stdout
    serve = _stowd("serve", "--help")
    assert serve.returncode == 0
    for flag in ("--host", "--data-root", "--exec-root", "--runtime", "--log-level",
                 "--tlsverify", "--tlscacert", "--tlscert", "--tlskey", "--insecure-tcp"):
        assert flag in serve.stdout
    version = _stowd("--version")
    assert version.returncode == 0
    assert version.stdout.startswith("stowd ") and "API 1.44, minimum 1.24" in version.stdout


def test_bad_flags_say_what_to_do() -> None:
    bad = _stowd("serve", "--frobnicate")
    assert bad.returncode == 2
    assert "unrecognized arguments: --frobnicate" in bad.stderr
    assert "Run 'stowd serve --help'" in bad.stderr
    assert "Traceback" not in bad.stderr
    unsafe = _stowd("serve", "-H", "tcp://0.0.0.0:2375", "--data-root", "/nonexistent/stowd")
    assert unsafe.returncode == 1
    assert unsafe.stderr.startswith("stowd: refusing to serve the Docker API without TLS")
    assert "Traceback" not in unsafe.stderr
