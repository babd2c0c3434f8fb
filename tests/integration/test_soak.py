"""Leak soak (issue 12): create, start, wait and remove containers over and over; every
host resource the daemon touches must come back to where it was.

`make test` runs 40 cycles; `make soak` runs 1,000 (marked slow). Each prints what it
checked: the daemon's fds, threads and memory, mounts, network namespaces, veths,
iptables rules, cgroups, conmon processes, exec-root entries and container directories.
"""

import contextlib
import os
import subprocess
from pathlib import Path

import docker
import pytest

from tests.daemon import Daemon, leftover_conmons
from tests.waits import until


def _count(path: Path) -> int:
    return len(list(path.iterdir())) if path.is_dir() else 0


def _settled(d: Daemon) -> None:
    """Removed trees are deleted in the background (renamed `.trash-*` first): wait."""
    def trash_left() -> bool:
        return any(p.name.startswith(".trash-") for top in ("containers", "volumes")
                   if (d.data_root / top).is_dir() for p in (d.data_root / top).iterdir())

    with contextlib.suppress(AssertionError):  # what is left shows in the host comparison
        until(lambda: not trash_left(), 30)


def snapshot(d: Daemon) -> dict[str, int]:
    assert d.proc is not None
    _settled(d)
    pid = d.proc.pid
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    field = {k: v.split()[0] for k, _, v in (line.partition(":") for line in status) if v.split()}
    mounts = Path("/proc/self/mounts").read_text()
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True,
                           check=False).stdout
    links = subprocess.run(["ip", "-o", "link", "show", "master", d.bridge],
                           capture_output=True, text=True, check=False).stdout
    cgroups = 0
    for ctrl in Path("/sys/fs/cgroup").iterdir():
        with contextlib.suppress(OSError):
            cgroups += _count(ctrl / d.cgroup_parent)
    return {
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "threads": int(field["Threads"]),
        "rss_mib": int(field["VmRSS"]) // 1024,
        "mounts": mounts.count(str(d.root)),
        "netns": _count(d.exec_root / "netns"),
        "veths": len(links.splitlines()),
        "iptables": sum(d.chain_prefix in line for line in rules.splitlines()),
        "cgroups": cgroups,
        "conmons": len(leftover_conmons(d.data_root)),
        "exec_root": sum(_count(d.exec_root / s) for s in ("sockets", "exits", "conmon",
                                                           "runtime")),
        "containers": _count(d.data_root / "containers"),
        "volumes": _count(d.data_root / "volumes"),
    }


def cycle(client: docker.DockerClient, i: int) -> None:
    """One run and remove, varied: published port, TTY, anonymous volume, plain."""
    kwargs: dict[str, object] = {}
    if i % 4 == 0:
        kwargs["ports"] = {"80/tcp": None}
    elif i % 4 == 1:
        kwargs["tty"] = True
    elif i % 4 == 2:
        kwargs["volumes"] = ["/data"]
    ctr = client.containers.create("busybox", ["sh", "-c", "echo hi"], **kwargs)
    ctr.start()
    assert ctr.wait(timeout=60)["StatusCode"] == 0
    ctr.remove(v=True)


def soak(d: Daemon, cycles: int) -> None:
    client = d.client()
    for i in range(8):  # warm-up: lazily made threads, pools and caches
        cycle(client, i)
    before = snapshot(d)
    for i in range(cycles):
        cycle(client, i)
    after = snapshot(d)
    print(f"{cycles} run/rm cycles: before {before}; after {after}")
    # fds and threads: a worker thread or a keep-alive may come and go (a few); a leak per
    # cycle shows as tens. Everything on the host must be exactly as before.
    slack = {"fds": 4, "threads": 4, "rss_mib": 20 + cycles // 50}
    grew = {k: (before[k], after[k]) for k in before
            if after[k] - before[k] > slack.get(k, 0) or after[k] < before[k] - slack.get(k, 0)}
    assert not grew, f"leaked: {grew}"


def test_soak_short(own_daemon: Daemon) -> None:
    soak(own_daemon, 40)


@pytest.mark.slow
@pytest.mark.timeout(3600)  # about 0.3 s a cycle on an idle machine, much more on a busy one
def test_soak_1000(own_daemon: Daemon) -> None:
    soak(own_daemon, 1000)
