"""Facts about the host for /info and /version (blocking: read files, run --version)."""

import functools
import hashlib
import os
import platform
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class HostFacts:
    kernel: str
    arch: str
    os_name: str
    os_version: str
    hostname: str
    mem_total: int
    cgroup_version: str
    runtime_version: str
    conmon_version: str
    backing_fs: str
    ipv4_forwarding: bool
    bridge_nf_iptables: bool
    bridge_nf_ip6tables: bool
    open_fds: int

    def engine_id(self, data_root: Path) -> str:
        digest = hashlib.sha256(f"{self.hostname}:{data_root}".encode()).hexdigest().upper()
        return ":".join(digest[i:i + 4] for i in range(0, 48, 4))


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return ""


def cgroup_version() -> str:
    """"2" on a unified hierarchy, "1" on legacy or hybrid hosts."""
    return "2" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else "1"


@functools.cache
def _tool_version(path: str) -> str:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True,
                             check=False, timeout=5).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
    first = out.splitlines()[0] if out else ""
    return first.split()[-1] if first else ""


def _os_release() -> tuple[str, str]:
    fields = {}
    for line in _read("/etc/os-release").splitlines():
        key, _, value = line.partition("=")
        fields[key] = value.strip('"')
    return fields.get("PRETTY_NAME", "Linux"), fields.get("VERSION_ID", "")


def _mem_total() -> int:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0


# statfs names as `docker info` prints them under "Backing Filesystem".
_FS_NAMES = {"ext2": "extfs", "ext3": "extfs", "ext4": "extfs", "overlay": "overlayfs"}


@functools.lru_cache(maxsize=16)
def backing_fs(path: Path | str) -> str:
    """The filesystem type of the mount holding `path` (from /proc/self/mountinfo)."""
    target = os.path.realpath(path)
    while not os.path.exists(target) and target != "/":
        target = os.path.dirname(target)
    best, fstype = "", "unknown"
    for line in _read("/proc/self/mountinfo").splitlines():
        fields = line.split(" ")
        try:
            sep = fields.index("-")
        except ValueError:
            continue
        mount_point = fields[4].replace("\\040", " ")
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, fstype = mount_point, fields[sep + 1]
    return _FS_NAMES.get(fstype, fstype)


def host_facts(runtime_path: str, data_root: Path | str = "/") -> HostFacts:
    os_name, os_version = _os_release()
    try:
        fds = len(os.listdir("/proc/self/fd"))
    except OSError:
        fds = 0
    return HostFacts(
        kernel=platform.release(),
        arch={"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine()),
        os_name=os_name,
        os_version=os_version,
        hostname=socket.gethostname(),
        mem_total=_mem_total(),
        cgroup_version=cgroup_version(),
        runtime_version=_tool_version(runtime_path),
        conmon_version=_tool_version("conmon"),
        backing_fs=backing_fs(data_root),
        ipv4_forwarding=_read("/proc/sys/net/ipv4/ip_forward") == "1",
        bridge_nf_iptables=_read("/proc/sys/net/bridge/bridge-nf-call-iptables") == "1",
        bridge_nf_ip6tables=_read("/proc/sys/net/bridge/bridge-nf-call-ip6tables") == "1",
        open_fds=fds,
    )


@dataclass(frozen=True)
class SecurityFacts:
    """What the host offers for confining containers (read once, at daemon start)."""

    cgroup_v2: bool
    apparmor: bool
    seccomp: bool
    init_present: bool

    def security_options(self, default_cgroupns_private: bool = True) -> list[str]:
        """`docker info`'s SecurityOptions: the confinement in force, in dockerd's words.

        Only what stowd applies by default: its seccomp profile and cgroup namespaces. Not
        `apparmor` or `selinux` even where the host has them: stowd loads no docker-default
        AppArmor profile and sets no SELinux labels, so listing them would overstate."""
        out = []
        if self.seccomp:
            out.append("name=seccomp,profile=builtin")
        if default_cgroupns_private:
            out.append("name=cgroupns")
        return out


def security_facts(init_path: str) -> SecurityFacts:
    seccomp = False
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            seccomp = any(line.startswith("Seccomp:") for line in f)
    except OSError:
        pass
    return SecurityFacts(
        cgroup_v2=cgroup_version() == "2",
        apparmor=_read("/sys/module/apparmor/parameters/enabled") == "Y",
        seccomp=seccomp,
        init_present=os.path.exists(init_path),
    )
