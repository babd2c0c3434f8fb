"""Exec detach keys with a TTY: the attachment ends, the exec'd process goes on (dockerd)."""

import os
import pty
import select
import signal
import socket
import subprocess
import time

import docker

from tests.integration.conftest import Cli
from tests.waits import until


def _read_until(read: "object", marker: bytes, timeout: float = 10) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while marker not in seen:
        assert time.monotonic() < deadline, seen
        chunk = read()  # type: ignore[operator]
        if chunk is None:
            continue
        if not chunk:
            break
        seen += chunk
    return seen


def _exec_running(api: docker.APIClient, exec_id: str) -> bool:
    return bool(api.exec_inspect(exec_id)["Running"])


def test_detach_keys_end_the_attachment_not_the_process(client: docker.DockerClient) -> None:
    api = client.api
    c = client.containers.run("busybox", ["sleep", "300"], detach=True, name="dk-py")
    exec_id = api.exec_create(c.id, ["sh", "-c", "echo started; exec sleep 301"], tty=True,
                              stdin=True, detach_keys="ctrl-x")["Id"]
    assert api.exec_inspect(exec_id)["DetachKeys"] == "GA=="  # b"\x18", as dockerd shows it
    sock = api.exec_start(exec_id, tty=True, socket=True)
    # no public API: docker-py's attach socket is read-only; its docs write to ._sock
    raw: socket.socket = sock._sock  # the hijacked connection
    raw.settimeout(10)
    _read_until(lambda: raw.recv(4096), b"started")
    raw.sendall(b"\x18")  # ctrl-x
    # the daemon closes the stream at once (without waiting for the process)
    raw.settimeout(5)
    while raw.recv(4096):  # socket.timeout here: the attachment did not end
        pass
    raw.close()
    assert _exec_running(api, exec_id)
    assert "sleep 301" in c.exec_run(["ps", "-o", "args"]).output.decode()
    # the process still runs and ends normally later
    os.kill(api.exec_inspect(exec_id)["Pid"], signal.SIGKILL)
    until(lambda: not _exec_running(api, exec_id), 10, "the exec still runs")


def test_cli_detach_keys(cli: Cli, client: docker.DockerClient) -> None:
    client.containers.run("busybox", ["sleep", "300"], detach=True, name="dk-cli")
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        ["docker", "exec", "-it", "--detach-keys", "ctrl-x", "dk-cli", "sh", "-c",
         "echo started; exec sleep 302"],
        stdin=slave, stdout=slave, stderr=slave, env=cli.env, start_new_session=True)
    os.close(slave)

    def read() -> bytes | None:
        ready, _, _ = select.select([master], [], [], 0.2)
        if not ready:
            return None
        try:
            return os.read(master, 4096)
        except OSError:
            return b""

    try:
        _read_until(read, b"started")
        os.write(master, b"\x18")
        # what the CLI does against dockerd 20.10 too: it says so and exits 1
        assert proc.wait(timeout=15) == 1
        assert b"read escape sequence" in _read_until(read, b"read escape sequence")
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    ps = cli("exec", "dk-cli", "ps", "-o", "args").stdout
    assert "sleep 302" in ps
