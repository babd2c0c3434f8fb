"""`docker run` options, checked from inside the container (not only in inspect), and the
options stowd refuses, with dockerd's words."""

import json
import os
import socket
import uuid
from pathlib import Path

import docker
import pytest

from tests.daemon import Daemon
from tests.integration.conftest import Cli

V1_MEMORY = Path("/sys/fs/cgroup/memory")
HOST_LIBS = ["-v", "/usr:/usr:ro", "-v", "/usr/lib:/lib:ro", "-v", "/lib64:/lib64:ro"]


def _sh(cli: Cli, *args: str, check: bool = True) -> str:
    """`docker run --rm <args...>`: the last argument is a shell script."""
    *opts, script = args
    return cli("run", "--rm", *opts, "busybox", "sh", "-c", script, check=check).stdout


def _refused(cli: Cli, *args: str) -> str:
    res = cli("run", "--rm", *args, "busybox", "true", check=False)
    assert res.returncode != 0, res.stdout
    return res.stderr


def test_process_options_take_effect(cli: Cli) -> None:
    out = _sh(cli, "--security-opt", "no-new-privileges", "--ulimit", "nofile=100:200",
              "--ulimit", "nproc=50", "--oom-score-adj", "500",
              "grep NoNewPrivs /proc/self/status; ulimit -n; ulimit -Hn; ulimit -u;"
              "cat /proc/self/oom_score_adj")
    assert out.split() == ["NoNewPrivs:", "1", "100", "200", "50", "500"]
    out = _sh(cli, "grep NoNewPrivs /proc/self/status; cat /proc/self/oom_score_adj")
    assert out.split() == ["NoNewPrivs:", "0", "0"]


def test_init_is_pid_one_and_reaps(cli: Cli) -> None:
    out = _sh(cli, "--init", "tr '\\0' ' ' < /proc/1/cmdline; echo;"
              "(sleep 0.1 &); sleep 0.8; ps -o pid,stat,comm | grep -c ' Z ' || true")
    lines = out.splitlines()
    assert lines[0].startswith("/sbin/docker-init -- sh -c"), out
    assert lines[-1].strip() == "0"  # the orphaned sleep was reaped by tini


def test_devices_and_device_cgroup_rules(cli: Cli) -> None:
    out = _sh(cli, "--device", "/dev/null:/dev/mynull:rw",
              "[ -c /dev/mynull ] && echo x > /dev/mynull && echo wrote; ls -l /dev/mynull")
    assert out.startswith("wrote") and "1,   3" in out
    # Major 42 (no driver) is not allowed by default: mknod works, opening it does not;
    # once a rule allows it, open reaches the (missing) driver.
    script = "mknod /dev/t c 42 0; (cat /dev/t) 2>&1; true"
    assert "Operation not permitted" in _sh(cli, script)
    assert "No such device or address" in _sh(cli, "--device-cgroup-rule", "c 42:* rm", script)
    stderr = _refused(cli, "--device", "/dev/nonexistent-i14")
    assert ('error gathering device information while adding custom device '
            '"/dev/nonexistent-i14": no such file or directory') in stderr


def test_pid_modes(cli: Cli) -> None:
    out = _sh(cli, "--pid", "host", "cat /proc/1/comm; ls -d /proc/[0-9]* | wc -l")
    comm, count = out.split()
    assert comm != "sh" and int(count) > 5
    cli("run", "-d", "--name", "pidowner", "busybox", "sleep", "60")
    out = _sh(cli, "--pid", "container:pidowner", "tr '\\0' ' ' < /proc/1/cmdline")
    assert out.strip() == "sleep 60"
    assert "No such container: nosuch-i14" in _refused(cli, "--pid", "container:nosuch-i14")


def test_ipc_modes(cli: Cli) -> None:
    cli("run", "-d", "--name", "ipcdonor", "--ipc", "shareable", "busybox", "sh", "-c",
        "echo from-donor > /dev/shm/x; sleep 60")
    out = _sh(cli, "--ipc", "container:ipcdonor",
              "until [ -e /dev/shm/x ]; do sleep 0.05; done; cat /dev/shm/x;"
              "echo from-joiner > /dev/shm/y; readlink /proc/self/ns/ipc")
    assert out.splitlines()[0] == "from-donor"
    donor_ns = cli("exec", "ipcdonor", "sh", "-c", "cat /dev/shm/y; readlink /proc/self/ns/ipc")
    assert donor_ns.stdout.split() == ["from-joiner", out.splitlines()[1]]
    cli("run", "-d", "--name", "ipcprivate", "busybox", "sleep", "60")
    assert "non-shareable IPC (hint: use IpcMode:shareable for the donor container)" in \
        _refused(cli, "--ipc", "container:ipcprivate")
    marker = f"stowd-i14-{uuid.uuid4().hex[:8]}"
    Path("/dev/shm", marker).write_text("host")
    try:
        assert _sh(cli, "--ipc", "host", f"cat /dev/shm/{marker}") == "host"
    finally:
        Path("/dev/shm", marker).unlink()
    assert _sh(cli, "--ipc", "none", "ls /dev/shm 2>&1; grep -c ' /dev/shm ' /proc/mounts",
               check=False).split()[-1] == "0"
    assert "Invalid IPC mode: foo" in _refused(cli, "--ipc", "foo")


def test_uts_userns_and_cgroupns_modes(cli: Cli, daemon: Daemon) -> None:
    assert _sh(cli, "--uts", "host", "hostname").strip() == socket.gethostname()
    assert "conflicting options: hostname and the UTS mode" in _refused(
        cli, "--uts", "host", "--hostname", "x")
    assert _sh(cli, "--userns", "host", "id -u").strip() == "0"
    private = _sh(cli, "--cgroupns", "private", "cat /proc/self/cgroup")
    shared = _sh(cli, "--cgroupns", "host", "cat /proc/self/cgroup")
    assert daemon.cgroup_parent not in private
    assert daemon.cgroup_parent in shared


def test_default_seccomp_is_an_allowlist(client: docker.DockerClient, daemon: Daemon,
                                         cli: Cli) -> None:
    ctr = client.containers.create("busybox", ["true"])
    client.api.start(ctr.id)
    ctr.wait(timeout=20)
    spec = json.loads((daemon.data_root / "containers" / ctr.id / "bundle" /
                       "config.json").read_text())
    sec = spec["linux"]["seccomp"]
    assert sec["defaultAction"] == "SCMP_ACT_ERRNO" and sec["defaultErrnoRet"] == 1
    allowed = {n for c in sec["syscalls"] if c["action"] == "SCMP_ACT_ALLOW" for n in c["names"]}
    assert "read" in allowed and "ptrace" in allowed
    assert not allowed & {"io_uring_setup", "keyctl", "add_key", "mount", "unshare"}
    # In a container: syscalls not in the list are refused, clone3 answers ENOSYS.
    probe = ("import ctypes,os;l=ctypes.CDLL(None,use_errno=True)\n"
             "for n in (425,250,248,435):\n"
             " l.syscall(n,0,0,0);print(os.strerror(ctypes.get_errno()))")
    out = cli("run", "--rm", *HOST_LIBS, "busybox", "/usr/bin/python3", "-c", probe).stdout
    assert out.splitlines() == ["Operation not permitted"] * 3 + ["Function not implemented"]
    out = cli("run", "--rm", "--security-opt", "seccomp=unconfined", *HOST_LIBS, "busybox",
              "/usr/bin/python3", "-c", probe).stdout
    assert "Operation not permitted" not in out
    assert _sh(cli, "--security-opt", "seccomp=unconfined",
               "grep '^Seccomp:' /proc/self/status").split() == ["Seccomp:", "0"]


def test_strace_works_in_a_container(cli: Cli) -> None:
    out = cli("run", "--rm", *HOST_LIBS, "busybox", "/usr/bin/strace", "-e", "trace=getppid",
              "/bin/busybox", "true").stderr
    assert "+++ exited with 0 +++" in out


def test_custom_seccomp_profile_is_used_as_given(cli: Cli, tmp_path: Path) -> None:
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}))
    out = _sh(cli, "--security-opt", f"seccomp={profile}",
              "mkdir /x 2>&1; true")
    assert "Permission denied" in out  # errno 13 as the profile says


def test_privileged_gets_host_devices_rw_sys_and_no_filter(cli: Cli) -> None:
    out = _sh(cli, "--privileged", "ls /dev | wc -l; grep '^Seccomp:' /proc/self/status;"
              "grep ' /sys ' /proc/mounts; grep -c /proc/kcore /proc/mounts || true")
    lines = out.splitlines()
    assert int(lines[0]) > 20
    assert lines[1].split() == ["Seccomp:", "0"]
    assert " rw," in lines[2]
    assert lines[3] == "0"  # nothing masked


def test_masked_readonly_and_systempaths(client: docker.DockerClient, cli: Cli) -> None:
    out = _sh(cli, "--security-opt", "systempaths=unconfined",
              "grep -cE ' /proc/(kcore|sys) ' /proc/mounts || true")
    assert out.strip() == "0"
    hc = client.api.create_host_config()
    hc["MaskedPaths"] = ["/proc/cpuinfo"]
    hc["ReadonlyPaths"] = []
    ctr = client.api.create_container("busybox", ["sh", "-c", "wc -c < /proc/cpuinfo;"
                                                  "grep -c ' /proc/sys ' /proc/mounts || true"],
                                      host_config=hc)
    client.api.start(ctr["Id"])
    client.api.wait(ctr["Id"], timeout=20)
    assert client.api.logs(ctr["Id"]).decode().split() == ["0", "0"]


def test_cgroup_memory_options(cli: Cli, daemon: Daemon) -> None:
    if not V1_MEMORY.exists():
        pytest.skip("memory.swappiness and oom_control exist on cgroup v1 only")
    cid = cli("run", "-d", "--memory-swappiness", "0", "--oom-kill-disable", "-m", "64m",
              "busybox", "sleep", "60").stdout.strip()
    base = V1_MEMORY / daemon.cgroup_parent / cid
    assert (base / "memory.swappiness").read_text().strip() == "0"
    assert "oom_kill_disable 1" in (base / "memory.oom_control").read_text()


def test_blkio_device_limits(cli: Cli, daemon: Daemon) -> None:
    dev = next((f"/dev/{d}" for d in ("vda", "sda", "nvme0n1", "xvda")
                if os.path.exists(f"/dev/{d}")), None)
    blkio = Path("/sys/fs/cgroup/blkio")
    if dev is None or not blkio.exists():
        pytest.skip("needs a block device and the v1 blkio controller")
    st = os.stat(dev)
    cid = cli("run", "-d", "--device-read-bps", f"{dev}:1mb", "--device-write-iops",
              f"{dev}:100", "busybox", "sleep", "60").stdout.strip()
    base = blkio / daemon.cgroup_parent / cid
    majmin = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    assert f"{majmin} 1048576" in (base / "blkio.throttle.read_bps_device").read_text()
    assert f"{majmin} 100" in (base / "blkio.throttle.write_iops_device").read_text()


def test_sysctls_hosts_dns_and_groups(cli: Cli, daemon: Daemon) -> None:
    out = _sh(cli, "--sysctl", "net.ipv4.ip_forward=1", "--sysctl", "kernel.msgmax=12345",
              "cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/msgmax")
    assert out.split() == ["1", "12345"]
    gateway = daemon.bridge_subnet.rsplit(".", 1)[0] + ".1"
    out = _sh(cli, "--add-host", "gw:host-gateway", "--add-host", "other:10.1.2.3",
              "--dns-search", "a.example", "--dns-option", "ndots:3",
              "cat /etc/hosts /etc/resolv.conf")
    assert f"{gateway}\tgw" in out and "10.1.2.3\tother" in out
    assert "search a.example" in out and "options ndots:3" in out
    out = _sh(cli, "--user", "0:0", "--group-add", "10", "--group-add", "nogroup", "id")
    assert "gid=0(root)" in out and "10" in out and "65534(nogroup)" in out
    # The primary group is a supplementary one too, as dockerd's (Groups: 1000 5, and 0 alone).
    groups = "grep ^Groups: /proc/self/status"
    assert _sh(cli, "--user", "1000:1000", "--group-add", "5", groups).split() == [
        "Groups:", "5", "1000"]
    assert _sh(cli, "--user", "1000", groups).split() == ["Groups:", "0"]
    assert _sh(cli, groups).split() == ["Groups:", "0"]
    assert "Unable to find group nosuch: no matching entries in group file" in _refused(
        cli, "--group-add", "nosuch")


def test_annotations_reach_the_spec(client: docker.DockerClient, daemon: Daemon) -> None:
    hc = client.api.create_host_config()
    hc["Annotations"] = {"org.example.note": "hello"}
    ctr = client.api.create_container("busybox", ["true"], host_config=hc)
    client.api.start(ctr["Id"])
    client.api.wait(ctr["Id"], timeout=20)
    spec = json.loads((daemon.data_root / "containers" / ctr["Id"] / "bundle" /
                       "config.json").read_text())
    assert spec["annotations"]["org.example.note"] == "hello"


@pytest.mark.parametrize(("args", "message"), [
    (["--storage-opt", "size=1G"],
     "--storage-opt is supported only for overlay over xfs with 'pquota' mount option"),
    (["--gpus", "all"], 'could not select device driver "" with capabilities: [[gpu]]'),
    (["--isolation", "hyperv"], "Invalid isolation: \"hyperv\" - linux only supports 'default'"),
    (["--runtime", "nosuch"], "Unknown runtime specified nosuch"),
    (["--security-opt", "foo=bar"], 'invalid --security-opt 2: "foo=bar"'),
    (["--security-opt", "apparmor=myprofile"], "AppArmor is not enabled on this host"),
    (["--security-opt", "label=type:foo_t"], "SELinux label options are not supported"),
    (["--oom-score-adj", "2000"], "Invalid value 2000, range for oom score adj is [-1000, 1000]"),
    (["--sysctl", "net.ipv4.ip_forward=1", "--network", "host"],
     'sysctl "net.ipv4.ip_forward" not allowed in host network namespace'),
    (["--cpu-rt-runtime", "2000", "--cpu-rt-period", "1000"],
     "cpu real-time runtime cannot be higher than cpu real-time period"),
])
def test_refused_options(cli: Cli, args: list[str], message: str) -> None:
    if "apparmor" in args[-1] and Path("/sys/module/apparmor/parameters/enabled").exists():
        pytest.skip("this host has AppArmor")
    stderr = _refused(cli, *args)
    assert message in stderr
    assert not cli("ps", "-aq").stdout.strip()  # nothing was created


def test_refused_through_the_api(client: docker.DockerClient) -> None:
    for hc, message in (({"KernelMemory": 10 << 20}, "kernel memory limits are not supported"),
                        ({"PidMode": "foo"}, "invalid PID mode: foo"),
                        ({"SecurityOpt": ["seccomp={bad"]}, "Decoding seccomp profile failed"),
                        ({"Ulimits": [{"Name": "nofile", "Soft": 2, "Hard": 1}]},
                         "ulimit soft limit must be less than or equal to hard limit")):
        with pytest.raises(docker.errors.APIError) as err:
            client.api.create_container("busybox", ["true"], host_config=hc)
        assert err.value.status_code == 400 and message in str(err.value.explanation)


def test_info_lists_security_options(client: docker.DockerClient) -> None:
    info = client.info()
    assert "name=seccomp,profile=builtin" in info["SecurityOptions"]
    assert info["InitBinary"]


def test_network_disabled_leaves_only_lo(client: docker.DockerClient) -> None:
    out = client.containers.run("busybox", ["sh", "-c", "ip -o link | wc -l"],
                                network_disabled=True, remove=True)
    assert out.decode().strip() == "1"


def test_daemon_default_ulimits_and_init_path(tmp_path: Path) -> None:
    init = tmp_path / "my-init"
    init.write_bytes(Path("/usr/bin/tini-static").read_bytes())
    init.chmod(0o755)
    d = Daemon(extra_args=["--default-ulimit", "nofile=321:654", "--default-ulimit",
                           "nproc=77", "--init-path", str(init)])
    d.start()
    try:
        d.import_busybox()
        client = d.client()
        script = "ulimit -n; ulimit -Hn; ulimit -u; tr '\\0' ' ' < /proc/1/cmdline"
        out = client.containers.run("busybox", ["sh", "-c", script], init=True, remove=True,
                                    ulimits=[docker.types.Ulimit(name="nproc", soft=5,
                                                                 hard=5)])
        lines = out.decode().splitlines()
        assert lines[:3] == ["321", "654", "5"]  # the container's own nproc wins
        assert lines[3].startswith("/sbin/docker-init -- sh -c")
        assert client.info()["InitBinary"] == str(init)
        client.close()
    finally:
        d.cleanup()
