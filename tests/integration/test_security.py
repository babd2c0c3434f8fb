"""Docker's default confinement: capabilities, masked and read-only /proc, seccomp, cgroups."""

from pathlib import Path

import docker

from tests.daemon import Daemon
from tests.waits import url

DOCKER_DEFAULT_CAPS = "00000000a80425fb"  # what `docker run busybox` shows in CapEff


def _run(client: docker.DockerClient, script: str, **kwargs: object) -> str:
    ctr = client.containers.run("busybox", ["sh", "-c", script], detach=True, **kwargs)
    ctr.wait(timeout=20)
    out = ctr.logs().decode()
    ctr.remove()
    return out


def test_default_capabilities_match_docker(client: docker.DockerClient) -> None:
    out = _run(client, "grep -E 'Cap(Eff|Bnd|Prm)' /proc/self/status")
    for line in out.splitlines():
        assert line.split()[1] == DOCKER_DEFAULT_CAPS, out


def test_cap_add_and_drop_and_privileged(client: docker.DockerClient) -> None:
    out = _run(client, "grep CapEff /proc/self/status", cap_drop=["ALL"])
    assert out.split()[1] == "0000000000000000"
    out = _run(client, "grep CapEff /proc/self/status", cap_add=["NET_ADMIN"])
    assert int(out.split()[1], 16) == int(DOCKER_DEFAULT_CAPS, 16) | (1 << 12)
    out = _run(client, "unshare -n true && echo ok", privileged=True)
    assert out.strip() == "ok"


def test_proc_is_masked_and_read_only(client: docker.DockerClient) -> None:
    out = _run(client, "grep -E ' /proc/(sys|bus|irq|fs|sysrq-trigger) ' /proc/self/mountinfo;"
                       "(echo 1 > /proc/sys/kernel/domainname) 2>/dev/null || echo ro-ok;"
                       "ls /sys/firmware | wc -l; wc -c < /proc/timer_list")
    lines = out.splitlines()
    mounts = [line for line in lines if " /proc/" in line]
    assert any(" /proc/sys " in line for line in mounts)
    assert len(mounts) >= 4 and all(" ro," in line for line in mounts)
    assert "ro-ok" in lines
    assert lines[-2].strip() == "0"  # /sys/firmware is an empty tmpfs
    assert lines[-1].strip() == "0"  # /proc/timer_list is /dev/null


def test_seccomp_blocks_namespace_and_mount_syscalls(client: docker.DockerClient) -> None:
    out = _run(client, "unshare -n true 2>&1; echo rc=$?; mount -t tmpfs x /mnt 2>&1;"
                       "echo rc=$?")
    assert out.count("rc=1") == 2
    assert "Operation not permitted" in out or "permission denied" in out


def test_etc_files_and_dockerenv(client: docker.DockerClient) -> None:
    out = _run(client, "cat /etc/hostname; grep -c localhost /etc/hosts; ls /.dockerenv; "
                       "ip -o link | wc -l", hostname="myhost")
    lines = out.split()
    assert lines[0] == "myhost"
    assert int(lines[1]) >= 2
    assert lines[2] == "/.dockerenv"
    assert lines[3] == "2"  # lo and eth0 on the default bridge


def test_each_container_gets_its_own_cgroup(client: docker.DockerClient, daemon: Daemon) -> None:
    ctr = client.containers.run("busybox", ["sleep", "30"], detach=True, mem_limit="64m")
    try:
        v1 = Path("/sys/fs/cgroup/memory") / daemon.cgroup_parent / ctr.id
        v2 = Path("/sys/fs/cgroup") / daemon.cgroup_parent / ctr.id
        if v1.exists():
            assert int((v1 / "memory.limit_in_bytes").read_text()) == 64 * 1024 * 1024
            pid = client.api.inspect_container(ctr.id)["State"]["Pid"]
            assert str(pid) in (v1 / "cgroup.procs").read_text().split()
        else:
            assert int((v2 / "memory.max").read_text()) == 64 * 1024 * 1024
    finally:
        ctr.remove(force=True)
    assert not (Path("/sys/fs/cgroup/memory") / daemon.cgroup_parent / ctr.id).exists()


def test_console_size_reaches_the_tty(api: docker.APIClient) -> None:
    res = api.post(url(api, "/containers/create"), json={
        "Image": "busybox", "Tty": True, "Cmd": ["stty", "size", "-F", "/dev/stdout"],
        "HostConfig": {"ConsoleSize": [33, 111]}})
    cid = res.json()["Id"]
    api.start(cid)
    api.wait(cid, timeout=10)
    assert api.logs(cid).strip() == b"33 111"
