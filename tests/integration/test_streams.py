"""Streams: `docker run` in the foreground, attach, logs -f, exec, through real clients."""

import json
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator

import docker
import pytest
from docker.errors import APIError, NotFound

from tests.daemon import Daemon
from tests.integration.conftest import Cli
from tests.registry import free_port
from tests.waits import event_seen, until, url


def _exists(api: docker.APIClient, cid: str) -> bool:
    try:
        api.inspect_container(cid)
    except NotFound:
        return False
    return True


def _gone(api: docker.APIClient, cid: str, timeout: float = 10) -> None:
    until(lambda: not _exists(api, cid), timeout, f"{cid[:12]} still exists")


# --- docker run, with the real CLI --------------------------------------------------------


def test_run_rm_prints_and_removes(cli: Cli, api: docker.APIClient) -> None:
    res = cli("run", "--rm", "busybox", "echo", "hi")
    assert res.stdout == "hi\n"
    assert api.containers(all=True) == []


def test_run_exit_code_and_stderr(cli: Cli) -> None:
    res = cli("run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 7",
              check=False)
    assert res.returncode == 7
    assert res.stdout == "out\n" and res.stderr == "err\n"


def test_run_stdin_pipe(cli: Cli) -> None:
    assert cli("run", "-i", "--rm", "busybox", "cat", input="hello\n").stdout == "hello\n"
    big = "".join(f"line {i}\n" for i in range(20000))
    assert cli("run", "-i", "--rm", "busybox", "wc", "-l", input=big).stdout.strip() == "20000"


def test_run_binary_stdin_passes_untouched(daemon: Daemon) -> None:
    import hashlib
    import os

    data = os.urandom(3_000_000)  # contains ctrl-p ctrl-q pairs: no TTY, so no detaching
    proc = subprocess.run(["docker", "run", "-i", "--rm", "busybox", "md5sum"], input=data,
                          capture_output=True, env={"DOCKER_HOST": daemon.url,
                                                    "PATH": "/usr/local/bin:/usr/bin:/bin"},
                          timeout=60, check=True)
    assert proc.stdout.split()[0].decode() == hashlib.md5(data).hexdigest()


def test_run_detached_returns_at_once(cli: Cli, api: docker.APIClient) -> None:
    t0 = time.monotonic()
    cid = cli("run", "-d", "busybox", "sleep", "30").stdout.strip()
    assert time.monotonic() - t0 < 5
    assert api.inspect_container(cid)["State"]["Running"]


def test_run_without_rm_keeps_container_and_output(cli: Cli, api: docker.APIClient) -> None:
    name = f"keep-{uuid.uuid4().hex[:6]}"
    res = cli("run", "--name", name, "busybox", "sh", "-c", "seq 1 500")
    assert res.stdout.split() == [str(i) for i in range(1, 501)]
    assert api.inspect_container(name)["State"]["ExitCode"] == 0
    assert cli("logs", name).stdout.split()[-1] == "500"


def test_start_attach_and_wait(cli: Cli) -> None:
    name = f"sa-{uuid.uuid4().hex[:6]}"
    cli("create", "--name", name, "busybox", "sh", "-c", "echo started; exit 3")
    res = cli("start", "-a", name, check=False)
    assert res.returncode == 3 and res.stdout == "started\n"
    assert cli("wait", name).stdout.strip() == "3"


def test_attach_to_running_container(cli: Cli) -> None:
    name = f"att-{uuid.uuid4().hex[:6]}"
    cli("run", "-d", "--name", name, "busybox", "sh", "-c",
        "sleep 1; echo from-attach; exit 5")
    res = cli("attach", name, check=False)
    assert res.stdout == "from-attach\n"
    assert res.returncode == 5


def test_rm_happens_even_when_client_goes_away(daemon: Daemon, api: docker.APIClient) -> None:
    env = {"DOCKER_HOST": daemon.url, "PATH": "/usr/local/bin:/usr/bin:/bin"}
    name = f"gone-{uuid.uuid4().hex[:6]}"
    proc = subprocess.Popen(["docker", "run", "--rm", "--name", name, "busybox", "sleep", "2"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        until(lambda: _exists(api, name), 10, f"docker run never created {name}")
    finally:
        proc.kill()
        proc.wait()
    _gone(api, name, timeout=15)


# --- attach through the API: framing, half-close, stdin, detach ----------------------------


def _raw_attach(daemon: Daemon, path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(str(daemon.socket))
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: docker\r\nConnection: Upgrade\r\n"
                 "Upgrade: tcp\r\nContent-Length: 0\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101 UPGRADED"), head
    return sock


def _read_until(sock: socket.socket, text: bytes, timeout: float = 10) -> bytes:
    sock.settimeout(timeout)
    out = b""
    while text not in out:
        chunk = sock.recv(65536)
        assert chunk, f"the stream ended before {text!r}: {out!r}"
        out += chunk
    return out


def _read_all(sock: socket.socket, timeout: float = 10) -> bytes:
    sock.settimeout(timeout)
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


def test_attach_before_start_sees_first_byte_with_half_close(
        daemon: Daemon, api: docker.APIClient) -> None:
    cid = api.create_container("busybox", ["sh", "-c", "echo first; echo second >&2"])["Id"]
    sock = _raw_attach(daemon, f"/v1.44/containers/{cid}/attach?stream=1&stdout=1&stderr=1")
    sock.shutdown(socket.SHUT_WR)  # what the CLI does at once without stdin
    api.start(cid)
    data = _read_all(sock)
    assert b"\x01\x00\x00\x00\x00\x00\x00\x06first\n" in data
    assert b"\x02\x00\x00\x00\x00\x00\x00\x07second\n" in data


def test_attach_stdin_once_closes_stdin_on_eof(daemon: Daemon, api: docker.APIClient) -> None:
    res = api.post(url(api, "/containers/create"), json={
        "Image": "busybox", "Cmd": ["sh", "-c", "cat; echo after-eof"], "OpenStdin": True,
        "StdinOnce": True})
    cid = res.json()["Id"]
    sock = _raw_attach(daemon, f"/v1.44/containers/{cid}/attach?stream=1&stdin=1&stdout=1")
    api.start(cid)
    sock.sendall(b"typed\n")
    sock.shutdown(socket.SHUT_WR)
    data = _read_all(sock)
    # cat's echo and the line after EOF may come in one frame or two (conmon reads what
    # is there): what counts is that both arrive on stdout, in order.
    assert _stdout_of(data) == b"typed\nafter-eof\n"
    assert api.wait(cid, timeout=10)["StatusCode"] == 0


def _stdout_of(data: bytes) -> bytes:
    """The stdout payload of a multiplexed stream (it must hold nothing else)."""
    out, i = b"", 0
    while i < len(data):
        kind, size = data[i], int.from_bytes(data[i + 4:i + 8], "big")
        assert kind == 1, data
        out += data[i + 8:i + 8 + size]
        i += 8 + size
    return out


def test_detach_keys_leave_container_running(daemon: Daemon, api: docker.APIClient) -> None:
    cid = api.create_container("busybox", ["cat"], stdin_open=True, tty=True)["Id"]
    api.start(cid)
    sock = _raw_attach(daemon, f"/v1.44/containers/{cid}/attach?stream=1&stdin=1&stdout=1"
                               "&detachKeys=ctrl-x,x")
    sock.sendall(b"abc\n")
    seen = _read_until(sock, b"abc")  # the terminal echoes it: cat has it
    sock.sendall(b"\x18x")
    assert b"abc" in seen + _read_all(sock)
    assert api.inspect_container(cid)["State"]["Running"]
    # Attach again: stdin still reaches the container.
    sock = _raw_attach(daemon, f"/v1.44/containers/{cid}/attach?stream=1&stdin=1&stdout=1")
    sock.sendall(b"again\n")
    sock.settimeout(5)
    got = b""
    while b"again" not in got:
        got += sock.recv(4096)
    sock.close()


def test_attach_errors(api: docker.APIClient) -> None:
    with pytest.raises(NotFound):
        api.attach("no-such-container", stream=False)
    cid = api.create_container("busybox", ["sleep", "30"])["Id"]
    api.start(cid)
    api.pause(cid)
    with pytest.raises(APIError) as err:
        api.attach(cid, stream=False)
    assert err.value.status_code == 409
    api.unpause(cid)


def test_client_disconnect_mid_stream_leaks_nothing(daemon: Daemon,
                                                    api: docker.APIClient) -> None:
    cid = api.create_container("busybox", ["sh", "-c", "yes | head -c 50000000; sleep 2"])["Id"]
    sock = _raw_attach(daemon, f"/v1.44/containers/{cid}/attach?stream=1&stdout=1")
    api.start(cid)
    sock.recv(65536)
    sock.close()
    assert api.wait(cid, timeout=30)["StatusCode"] == 0
    # The daemon still answers, and the next attach works.
    assert api.version()["ApiVersion"] == "1.44"


def test_resize_changes_the_tty(api: docker.APIClient) -> None:
    cid = api.create_container("busybox", ["sh", "-c", "sleep 1; stty size -F /dev/stdout"],
                               tty=True)["Id"]
    api.start(cid)
    api.resize(cid, height=41, width=133)
    assert api.wait(cid, timeout=10)["StatusCode"] == 0
    assert api.logs(cid).strip() == b"41 133"
    with pytest.raises(APIError) as err:
        api.resize(cid, height=10, width=10)
    assert err.value.status_code == 409


# --- logs -f -----------------------------------------------------------------------------


def test_logs_follow_streams_and_ends_at_exit(client: docker.DockerClient) -> None:
    ctr = client.containers.run("busybox", ["sh", "-c",
                                            "for i in 1 2 3; do echo n$i; sleep 0.3; done"],
                                detach=True)
    t0 = time.monotonic()
    lines = [line for line in ctr.logs(stream=True, follow=True)]
    assert b"".join(lines) == b"n1\nn2\nn3\n"
    assert time.monotonic() - t0 < 10


def test_logs_follow_cli_with_tail_and_timestamps(cli: Cli) -> None:
    name = f"lf-{uuid.uuid4().hex[:6]}"
    cli("run", "-d", "--name", name, "busybox", "sh", "-c",
        "echo one; echo two; sleep 0.5; echo three")
    res = cli("logs", "-f", "--tail", "1", "-t", name)
    lines = res.stdout.splitlines()
    assert [line.split(" ", 1)[1] for line in lines] in (["two", "three"], ["three"])


def test_fast_output_cut_by_conmon_reads_back_whole(client: docker.DockerClient,
                                                   api: docker.APIClient,
                                                   daemon: Daemon) -> None:
    """A fast writer's lines straddle conmon's 8 KB reads, so its log holds a piece (`P`)
    every few KB. Those blocks stay on the vectorised path (before, each fell to the
    line-by-line reader: 7 MB/s for `docker logs`), and every read shape, `since` in the
    middle and a follower included, answers the lines the container wrote."""
    from stowd.engine import k8sfile
    from stowd.engine.core.container import parse_time_nanos
    from stowd.engine.timespec import unix_nanos

    line = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n"  # 65 bytes
    count = 60_000
    cmd = ["sh", "-c", f"yes {line[:-1].decode()} | head -n {count}"]
    follower_got: list[bytes] = []
    ctr = client.containers.create("busybox", cmd)
    follower = threading.Thread(target=lambda: follower_got.append(
        b"".join(ctr.logs(stream=True, follow=True))))
    ctr.start()
    follower.start()
    ctr.wait(timeout=60)
    follower.join(60)
    log = (daemon.data_root / "containers" / ctr.id / "ctr.log").read_bytes()
    assert log.count(b" stdout P ") >= 100  # conmon cut lines
    encoded = k8sfile.encode(log, streams={1, 2}, framed=True, timestamps=False)
    assert encoded is not None and encoded.open_from == len(log)
    assert ctr.logs() == line * count
    assert follower_got == [line * count]
    stamped = ctr.logs(timestamps=True).splitlines()
    assert len(stamped) == count
    middle = stamped[count // 2].split(b" ", 1)[0].decode()
    since_seconds = parse_time_nanos(middle) / 1e9
    since = api.logs(ctr.id, since=since_seconds)
    # docker-py sends str() of a float, which is not quite the middle line's time (the
    # CLI sends exact nanoseconds, tested below): the lines at or after what it sent.
    key = k8sfile.time_key(unix_nanos(str(since_seconds)))
    assert since == line * sum(1 for stamp in stamped if stamp[:29] >= key)
    assert abs(since.count(b"\n") - count // 2) < 200
    assert ctr.logs(tail=3) == line * 3
    ctr.remove()


def test_cli_since_a_lines_own_time_includes_it(cli: Cli) -> None:
    """`docker logs --since <time a line was stamped with>` (what a client resuming a log
    does) starts at that line: the CLI sends seconds with nine decimals, which a float
    would round past the line about half the time."""
    name = f"ls-{uuid.uuid4().hex[:6]}"
    cli("run", "--name", name, "busybox", "sh", "-c", "for i in 1 2 3 4 5 6 7 8; do echo l$i; done")
    stamped = cli("logs", "-t", name).stdout.splitlines()
    assert len(stamped) == 8
    for at in range(8):
        stamp = stamped[at].split(" ", 1)[0]
        shown = cli("logs", "--since", stamp, name).stdout.splitlines()
        earlier_same_time = sum(1 for line in stamped[:at] if line.startswith(stamp + " "))
        assert shown == [f"l{i}" for i in range(at + 1 - earlier_same_time, 9)], stamp


def test_cli_tail_counts_output_without_a_newline(cli: Cli) -> None:
    """What dockerd 20.10 prints for the same container: output that ended without a
    newline is the last message, and `--tail` counts it (it came on top of the tail)."""
    name = f"lt-{uuid.uuid4().hex[:6]}"
    cli("run", "--name", name, "busybox", "sh", "-c", 'echo out; echo two; printf "nonl"')
    assert cli("logs", "--tail", "1", name).stdout == "nonl"
    assert cli("logs", "--tail", "2", name).stdout == "two\nnonl"
    assert cli("logs", name).stdout == "out\ntwo\nnonl"


def test_cli_logs_details(cli: Cli) -> None:
    """`docker logs --details` shows the attributes the log options pick, as dockerd 20.10
    printed for the same container (after the time with -t)."""
    name = f"ld-{uuid.uuid4().hex[:6]}"
    cli("run", "--name", name, "-l", "ab=c d", "--log-opt", "labels-regex=^a",
        "--log-opt", "env-regex=^F", "-e", "FOO=x y,z", "-e", "FAR=1", "busybox", "echo",
        "hello")
    assert cli("logs", "--details", name).stdout == "FAR=1,FOO=x+y%2Cz,ab=c+d hello\n"
    stamped = cli("logs", "--details", "-t", name).stdout
    assert stamped.split(" ", 1)[1] == "FAR=1,FOO=x+y%2Cz,ab=c+d hello\n"
    plain = f"ld-{uuid.uuid4().hex[:6]}"
    cli("run", "--name", plain, "busybox", "echo", "plain")
    assert cli("logs", "--details", plain).stdout == " plain\n"
    assert cli("logs", plain).stdout == "plain\n"


def test_log_max_size_is_honoured(client: docker.DockerClient) -> None:
    ctr = client.containers.run(
        "busybox", ["sh", "-c", "i=0; while [ $i -lt 3000 ]; do echo line-$i-padding-padding; "
                    "i=$((i+1)); done"],
        detach=True, log_config={"Type": "json-file", "Config": {"max-size": "20k"}})
    ctr.wait(timeout=20)
    out = ctr.logs()
    assert len(out) <= 40 * 1024
    assert out.endswith(b"line-2999-padding-padding\n")


def test_log_max_file_rotates_and_reads_across_files(client: docker.DockerClient,
                                                     daemon: Daemon) -> None:
    script = ("i=0; while [ $i -lt 40 ]; do j=0; while [ $j -lt 50 ]; do "
              "echo line-$i-$j-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx; j=$((j+1)); done; "
              "i=$((i+1)); sleep 0.05; done")
    ctr = client.containers.run("busybox", ["sh", "-c", script], detach=True, log_config={
        "Type": "json-file", "Config": {"max-size": "16k", "max-file": "3"}})
    ctr.wait(timeout=30)
    log_dir = daemon.data_root / "containers" / ctr.id
    files = sorted(p.name for p in log_dir.iterdir() if p.name.startswith("ctr.log"))
    assert files == ["ctr.log", "ctr.log.1", "ctr.log.2"]
    out = ctr.logs().decode().splitlines()
    assert out[-1].startswith("line-39-49-")
    # Lines come in order across the rotated files, with none lost in between.
    numbers = [int(line.split("-")[1]) * 50 + int(line.split("-")[2]) for line in out]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    assert len(out) > 300
    assert ctr.logs(tail=5).decode().splitlines() == out[-5:]
    assert len(ctr.logs(tail=600).decode().splitlines()) == min(600, len(out))


def test_bad_log_options_are_400(api: docker.APIClient) -> None:
    for config in ({"max-size": "lots"}, {"max-file": "0", "max-size": "1m"},
                   {"nonsense": "1"}, {"labels-regex": "(unclosed"}):
        res = api.post(url(api, "/containers/create"), json={
            "Image": "busybox", "Cmd": ["true"],
            "HostConfig": {"LogConfig": {"Type": "json-file", "Config": config}}})
        assert res.status_code == 400, (config, res.text)


# --- exec --------------------------------------------------------------------------------


@pytest.fixture
def running(client: docker.DockerClient) -> Iterator[docker.models.containers.Container]:
    ctr = client.containers.run("busybox", ["sleep", "300"], detach=True)
    yield ctr
    ctr.remove(force=True)


def test_exec_cli(cli: Cli, running: docker.models.containers.Container) -> None:
    assert cli("exec", running.id, "echo", "hi").stdout == "hi\n"
    assert cli("exec", running.id, "sh", "-c", "exit 3", check=False).returncode == 3
    assert cli("exec", "-i", running.id, "cat", input="piped\n").stdout == "piped\n"
    res = cli("exec", "-e", "FOO=bar", "-w", "/tmp", "-u", "65534", running.id,
              "sh", "-c", 'echo "$FOO $(pwd) $(id -u)"')
    assert res.stdout == "bar /tmp 65534\n"
    res = cli("exec", running.id, "no-such-command", check=False)
    assert res.returncode == 126 and "executable file not found" in res.stdout + res.stderr


def test_exec_api_inspect_and_conflicts(api: docker.APIClient,
                                        running: docker.models.containers.Container) -> None:
    exec_id = api.exec_create(running.id, ["sh", "-c", "echo out; echo err >&2; exit 2"])["Id"]
    info = api.exec_inspect(exec_id)
    assert info["Running"] is False and info["ExitCode"] is None
    assert info["ProcessConfig"]["entrypoint"] == "sh"
    out = api.exec_start(exec_id, demux=True)
    assert out == (b"out\n", b"err\n")
    info = api.exec_inspect(exec_id)
    assert info["ExitCode"] == 2 and info["Running"] is False
    with pytest.raises(APIError) as err:
        api.exec_start(exec_id)
    assert err.value.status_code == 409
    with pytest.raises(NotFound):
        api.exec_inspect("nope")
    with pytest.raises(APIError) as err:
        api.exec_create(running.id, [])
    assert err.value.status_code == 400
    detached = api.exec_create(running.id, ["sh", "-c", "sleep 0.2; exit 9"])["Id"]
    assert not api.exec_start(detached, detach=True)
    until(lambda: not api.exec_inspect(detached)["Running"]
          and api.exec_inspect(detached)["ExitCode"] is not None, 10, "the exec never ended")
    assert api.exec_inspect(detached)["ExitCode"] == 9
    api.pause(running.id)
    with pytest.raises(APIError) as err:
        api.exec_create(running.id, ["true"])
    assert err.value.status_code == 409 and "paused" in err.value.explanation
    api.unpause(running.id)
    stopped = api.create_container("busybox", ["true"])["Id"]
    with pytest.raises(APIError) as err:
        api.exec_create(stopped, ["true"])
    assert err.value.status_code == 409 and "is not running" in err.value.explanation


# --- interactive, under tmux -------------------------------------------------------------


class Tmux:
    def __init__(self, session: str) -> None:
        self.session = session

    def start(self, command: str, width: int = 100, height: int = 30) -> None:
        subprocess.run(["tmux", "new-session", "-d", "-s", self.session, "-x", str(width),
                        "-y", str(height), command], check=True)

    def keys(self, *keys: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.session, *keys], check=True)

    def screen(self) -> str:
        proc = subprocess.run(["tmux", "capture-pane", "-t", self.session, "-p"],
                              capture_output=True, text=True, check=False)
        return proc.stdout

    def resize(self, width: int, height: int) -> None:
        subprocess.run(["tmux", "resize-window", "-t", self.session, "-x", str(width), "-y",
                        str(height)], check=True)

    def wait_for(self, text: str, timeout: float = 10) -> str:
        screen = [""]

        def shows() -> bool:
            screen[0] = self.screen()
            return text in screen[0]

        until(shows, timeout, f"{text!r} never appeared on screen", every=0.1)
        return screen[0]

    def kill(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.session], check=False,
                       capture_output=True)


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    if shutil.which("tmux") is None:
        pytest.fail("tmux is required (apt-get install tmux; make test installs it)")
    t = Tmux(f"stowd-{uuid.uuid4().hex[:8]}")
    yield t
    t.kill()


def test_interactive_run_resize_detach_attach(tmux: Tmux, daemon: Daemon,
                                              api: docker.APIClient) -> None:
    name = f"it-{uuid.uuid4().hex[:6]}"
    tmux.start(f"DOCKER_HOST={daemon.url} docker run -it --name {name} busybox sh; "
               "echo run-exited=$?; sleep 30")
    tmux.wait_for("/ #")
    tmux.keys("echo $((6*7)); stty size", "Enter")
    tmux.wait_for("42\n30 100")
    since = time.time()
    tmux.resize(80, 24)
    event_seen(api, since, {"container": name, "event": "resize"},
               lambda e: e["Actor"]["Attributes"].get("width") == "80")
    tmux.keys("stty size", "Enter")
    tmux.wait_for("24 80")
    tmux.keys("C-p", "C-q")
    tmux.wait_for("run-exited=0")
    assert api.inspect_container(name)["State"]["Running"]
    tmux.kill()
    since = time.time()
    tmux.start(f"DOCKER_HOST={daemon.url} docker attach {name}; echo attach-exited=$?; "
               "sleep 30")
    event_seen(api, since, {"container": name, "event": "attach"})
    tmux.keys("echo again-$((1+1))", "Enter")
    tmux.wait_for("again-2")
    tmux.keys("exit 3", "Enter")
    tmux.wait_for("attach-exited=3")
    assert api.inspect_container(name)["State"]["ExitCode"] == 3


def test_interactive_exec(tmux: Tmux, daemon: Daemon,
                          running: docker.models.containers.Container) -> None:
    tmux.start(f"DOCKER_HOST={daemon.url} docker exec -it {running.id} sh; "
               "echo exec-exited=$?; sleep 30", width=90, height=25)
    tmux.wait_for("/ #")
    tmux.keys("stty size; tty", "Enter")
    tmux.wait_for("25 90")
    tmux.resize(70, 20)
    # An exec's resize publishes no event: ask the terminal until it has the new size.
    until(lambda: tmux.keys("clear; stty size", "Enter") or "20 70" in tmux.screen(),
          timeout=10, every=0.3, what="the exec's terminal resized")
    tmux.keys("exit 4", "Enter")
    tmux.wait_for("exec-exited=4")


# --- events --------------------------------------------------------------------------------


def test_events_of_a_lifecycle(client: docker.DockerClient, api: docker.APIClient) -> None:
    since = time.time() - 1
    ctr = client.containers.run("busybox", ["sleep", "30"], detach=True, labels={"ev": "1"})
    exec_id = api.exec_create(ctr.id, ["true"])["Id"]
    api.exec_start(exec_id)
    ctr.pause()
    ctr.unpause()
    ctr.rename(f"renamed-{uuid.uuid4().hex[:6]}")
    ctr.kill()
    ctr.wait(timeout=10)
    ctr.remove()
    until = time.time() + 1
    seen: list[dict[str, object]] = []

    def collect() -> None:
        for ev in api.events(since=since, until=until, decode=True,
                             filters={"container": ctr.id}):
            seen.append(ev)

    t = threading.Thread(target=collect)
    t.start()
    t.join(15)
    actions = [e["Action"] for e in seen]
    # dockerd writes the entrypoint, a space and the arguments: "true " for a bare `true`
    for want in ("create", "start", "exec_create: true ", "exec_start: true ", "exec_die",
                 "pause", "unpause", "rename", "kill", "die", "destroy"):
        assert want in actions, (want, actions)
    die = next(e for e in seen if e["Action"] == "die")
    assert die["Actor"]["Attributes"]["exitCode"] == "137"  # type: ignore[index]
    assert die["Actor"]["Attributes"]["ev"] == "1"  # type: ignore[index]
    assert die["Type"] == "container" and isinstance(die["timeNano"], int)
    assert json.dumps(die)


def test_attach_websocket(daemon: Daemon, api: docker.APIClient) -> None:
    import asyncio

    import aiohttp

    cid = api.create_container("busybox", ["sh", "-c", "read line; echo got-$line"],
                               stdin_open=True)["Id"]
    api.start(cid)

    async def talk() -> bytes:
        conn = aiohttp.UnixConnector(path=str(daemon.socket))
        async with aiohttp.ClientSession(connector=conn) as session, session.ws_connect(
                f"http://docker/v1.44/containers/{cid}/attach/ws?stream=1&stdin=1&stdout=1"
        ) as ws:
            await ws.send_bytes(b"ping\n")
            out = b""
            async for msg in ws:
                out += msg.data if isinstance(msg.data, bytes) else b""
                if b"got-ping" in out:
                    break
            return out

    assert b"got-ping\n" in asyncio.run(asyncio.wait_for(talk(), 15))


def test_run_rm_of_missing_command_fails_and_removes(cli: Cli, api: docker.APIClient) -> None:
    res = cli("run", "--rm", "busybox", "no-such-command", check=False, timeout=30)
    assert res.returncode == 127
    assert "executable file not found" in res.stderr
    until(lambda: api.containers(all=True) == [], 10, "run --rm left its container")


def test_run_of_a_missing_image_reports_it_missing(client: docker.DockerClient,
                                                   cli: Cli) -> None:
    # A registry nobody listens on (no test reaches the internet): the create is a 404,
    # then the pull the clients try says why it failed.
    name = f"127.0.0.1:{free_port()}/no-such-image-anywhere"
    with pytest.raises(docker.errors.APIError) as err:
        client.containers.run(name, ["true"])
    assert "connection refused" in str(err.value.explanation)
    res = cli("run", "--rm", name, check=False)
    assert res.returncode == 125
    assert f"Unable to find image '{name}:latest' locally" in res.stderr
    assert "connection refused" in res.stderr


def test_attach_with_logs_replays_the_log(daemon: Daemon, api: docker.APIClient) -> None:
    """attach?logs=1 sends the log so far (streamed a block at a time), framed by stream
    without a TTY, raw over the websocket; then nothing more for a stopped container."""
    import asyncio

    import aiohttp

    cid = api.create_container("busybox", ["sh", "-c",
                                           "seq 1 20000; echo oops >&2; printf tail"])["Id"]
    api.start(cid)
    assert api.wait(cid, timeout=30)["StatusCode"] == 0
    expected = "".join(f"{i}\n" for i in range(1, 20001)).encode()
    sock = api.attach_socket(cid, params={"logs": 1, "stdout": 1, "stderr": 1, "stream": 0})
    raw = b""
    while chunk := sock.read(65536):
        raw += chunk
    sock.close()
    frames, pos = [], 0
    while pos < len(raw):
        size = int.from_bytes(raw[pos + 4:pos + 8], "big")
        frames.append((raw[pos], raw[pos + 8:pos + 8 + size]))
        pos += 8 + size
    assert b"".join(d for s, d in frames if s == 1) == expected + b"tail"
    assert [d for s, d in frames if s == 2] == [b"oops\n"]

    async def replay() -> bytes:
        conn = aiohttp.UnixConnector(path=str(daemon.socket))
        async with aiohttp.ClientSession(connector=conn) as session, session.ws_connect(
                f"http://docker/v1.44/containers/{cid}/attach/ws?logs=1&stdout=1") as ws:
            out = b""
            async for msg in ws:
                out += msg.data if isinstance(msg.data, bytes) else b""
            return out

    assert asyncio.run(asyncio.wait_for(replay(), 15)) == expected + b"tail"
