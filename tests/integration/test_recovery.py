"""Containers outlive stowd: kill -9 the daemon, start it again, and find them as they are."""


import docker
import pytest

from tests.daemon import Daemon
from tests.waits import process_gone, until


def _conmon_pid(daemon: Daemon, cid: str) -> int:
    """The pid of the container's conmon (0 once stowd has cleaned up after its exit)."""
    try:
        return int((daemon.exec_root / "conmon" / f"{cid}.conmon.pid").read_text())
    except (OSError, ValueError):
        return 0


def _exited_while_down(conmon_pid: int) -> None:
    """Wait until the container's conmon is gone: it exits right after writing the exit
    file, so the exit is on disk for the restarted daemon to find."""
    if conmon_pid:
        process_gone(conmon_pid, timeout=20)


def test_sigkill_of_stowd_leaves_containers_running(own_daemon: Daemon) -> None:
    client = own_daemon.client()
    keeps = client.containers.run("busybox", ["sleep", "300"], detach=True, name="keeps-running")
    dies = client.containers.run("busybox", ["sh", "-c", "sleep 1; exit 9"], detach=True,
                                 name="dies-while-down")
    short = client.containers.run("busybox", ["sh", "-c", "exit 4"], detach=True, name="short")
    short.wait(timeout=10)
    created = client.containers.create("busybox", ["true"], name="just-created")
    auto = client.containers.run("busybox", ["sh", "-c", "sleep 1"], detach=True,
                                 name="auto-removed", auto_remove=True)
    pid_before = client.api.inspect_container(keeps.id)["State"]["Pid"]
    conmons = [_conmon_pid(own_daemon, c.id) for c in (dies, auto)]
    client.close()

    own_daemon.kill9()
    # `dies-while-down` and `auto-removed` exit while nobody watches.
    for pid in conmons:
        _exited_while_down(pid)
    own_daemon.start()

    client = own_daemon.client()
    st = client.api.inspect_container("keeps-running")["State"]
    assert st["Status"] == "running" and st["Pid"] == pid_before
    st = client.api.inspect_container("dies-while-down")["State"]
    assert st["Status"] == "exited" and st["ExitCode"] == 9
    assert st["FinishedAt"] > st["StartedAt"]
    assert client.api.inspect_container("short")["State"]["ExitCode"] == 4
    assert client.api.inspect_container("just-created")["State"]["Status"] == "created"
    with pytest.raises(docker.errors.NotFound):
        client.api.inspect_container("auto-removed")
    names = {c.name for c in client.containers.list(all=True)}
    assert names == {"keeps-running", "dies-while-down", "short", "just-created"}
    assert [c.name for c in client.containers.list()] == ["keeps-running"]

    # The recovered container is fully manageable: its exit is seen and recorded.
    client.api.kill("keeps-running")
    assert client.api.wait("keeps-running", timeout=10)["StatusCode"] == 137
    assert created.id == client.api.inspect_container("just-created")["Id"]
    assert auto.id not in {c.id for c in client.containers.list(all=True)}
    client.close()


def test_restart_policy_applies_to_exits_while_down(own_daemon: Daemon) -> None:
    client = own_daemon.client()
    ctr = client.containers.run("busybox", ["sh", "-c", "sleep 1; exit 1"], detach=True,
                                restart_policy={"Name": "on-failure", "MaximumRetryCount": 1})
    conmon = _conmon_pid(own_daemon, ctr.id)
    client.close()
    own_daemon.kill9()
    _exited_while_down(conmon)
    own_daemon.start()
    client = own_daemon.client()
    until(lambda: client.api.inspect_container(ctr.id)["RestartCount"] >= 1, 15,
          "the policy never restarted it", every=0.1)
    assert client.api.inspect_container(ctr.id)["RestartCount"] == 1
    client.close()
