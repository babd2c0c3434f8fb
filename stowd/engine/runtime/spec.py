"""A container's settings → an OCI runtime spec (config.json), with Docker's defaults.

The defaults follow what dockerd gives a container that asks for nothing special: its
capability set, masked and read-only /proc paths, /dev as tmpfs with devpts, mqueue and
shm, /sys read-only, and a seccomp filter with the default profile's semantics.
"""

import functools
from dataclasses import dataclass, field
from typing import Any

from stowd.engine.runtime.seccomp import DOCKER_DEFAULT_PROFILE, parse_profile, to_oci

DEFAULT_CAPABILITIES = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
]

# Every capability by its bit number (linux/capability.h).
CAPABILITY_BITS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK",
    "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
    "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
]


@functools.cache
def host_capabilities() -> list[str]:
    """The capabilities stowd itself may hand out: its own bounding set.

    Privileged containers get all of these (as Docker does), never one the host withholds,
    which the runtime would refuse."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("CapBnd:"):
                    mask = int(line.split()[1], 16)
                    return [c for bit, c in enumerate(CAPABILITY_BITS) if mask >> bit & 1]
    except OSError:
        pass
    return list(CAPABILITY_BITS)


ALL_CAPABILITIES = CAPABILITY_BITS


MASKED_PATHS = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
]

READONLY_PATHS = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
]

INIT_DESTINATION = "/sbin/docker-init"

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class ProcessUser:
    uid: int = 0
    gid: int = 0
    additional_gids: list[int] = field(default_factory=list)


@dataclass
class SpecInput:
    """Everything spec generation needs, already resolved by the engine."""

    rootfs: str
    args: list[str]
    env: list[str]
    cwd: str
    user: ProcessUser
    hostname: str
    domainname: str
    tty: bool
    open_stdin: bool
    cgroups_path: str
    hosts_path: str
    hostname_path: str
    resolv_conf_path: str
    console_size: tuple[int, int] | None = None
    privileged: bool = False
    cap_add: list[str] = field(default_factory=list)
    cap_drop: list[str] = field(default_factory=list)
    readonly_rootfs: bool = False
    resources: dict[str, Any] = field(default_factory=dict)  # OCI linux.resources limits
    # {"source", "destination", "readonly", "propagation" (default rprivate)}
    binds: list[dict[str, Any]] = field(default_factory=list)
    # {"destination", "options"}: tmpfs mounts (HostConfig.Mounts and Tmpfs)
    tmpfs: list[dict[str, Any]] = field(default_factory=list)
    netns_path: str | None = None
    shm_size: int = 64 * 1024 * 1024
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)  # HostConfig.Annotations
    # Namespaces other than the network's: "private" (a new one), "host" (none: the
    # host's), or the path of another container's (/proc/<pid>/ns/<type>).
    namespaces: dict[str, str] = field(default_factory=dict)
    # /dev/shm: "private" (its own tmpfs), "none" (not mounted), or a path to bind there
    # (the host's /dev/shm, or the IPC donor's).
    shm: str = "private"
    no_new_privileges: bool = False
    seccomp: str = ""  # "" the default profile, "unconfined", or a profile's JSON
    apparmor: str = ""  # a profile name (only where the host has AppArmor)
    systempaths_unconfined: bool = False
    masked_paths: list[str] | None = None  # None: Docker's defaults
    readonly_paths: list[str] | None = None
    rlimits: list[dict[str, Any]] = field(default_factory=list)  # OCI process.rlimits
    oom_score_adj: int | None = None
    init_path: str = ""  # the init binary to run as PID 1 (bind-mounted at /sbin/docker-init)
    devices: list[dict[str, Any]] = field(default_factory=list)  # OCI linux.devices
    device_rules: list[dict[str, Any]] = field(default_factory=list)  # cgroup allow rules
    sysctls: dict[str, str] = field(default_factory=dict)


def _normalize_cap(cap: str) -> str:
    cap = cap.upper()
    return cap if cap.startswith("CAP_") else "CAP_" + cap


def capabilities(inp: SpecInput) -> list[str]:
    host = host_capabilities()
    if inp.privileged:
        return list(host)
    caps = list(DEFAULT_CAPABILITIES)
    adds = [_normalize_cap(c) for c in inp.cap_add]
    drops = [_normalize_cap(c) for c in inp.cap_drop]
    if "CAP_ALL" in adds:
        caps = list(host)
    else:
        caps += [c for c in adds if c not in caps]
    if "CAP_ALL" in drops:
        caps = [c for c in caps if c in adds]
    else:
        caps = [c for c in caps if c not in drops]
    return caps


def _depth(destination: str) -> int:
    return len([p for p in destination.split("/") if p])


def user_mount_entries(inp: SpecInput) -> list[dict[str, Any]]:
    """The OCI entries of the container's binds, volumes and tmpfs mounts."""
    out: list[dict[str, Any]] = []
    for bind in inp.binds:
        opts = ["rbind", bind.get("propagation") or "rprivate"]
        opts += ["ro"] if bind.get("readonly") else []
        out.append({"destination": bind["destination"], "type": "bind",
                    "source": bind["source"], "options": opts})
    for tmpfs in inp.tmpfs:
        out.append({"destination": tmpfs["destination"], "type": "tmpfs", "source": "tmpfs",
                    "options": list(tmpfs.get("options") or [])})
    return out


def build_spec(inp: SpecInput) -> dict[str, Any]:
    caps = capabilities(inp)
    process: dict[str, Any] = {
        "terminal": inp.tty,
        "user": {
            "uid": inp.user.uid,
            "gid": inp.user.gid,
            **({"additionalGids": inp.user.additional_gids} if inp.user.additional_gids else {}),
        },
        "args": inp.args,
        "env": inp.env,
        "cwd": inp.cwd or "/",
        "capabilities": {
            "bounding": caps,
            "effective": caps,
            "permitted": caps,
        },
        "noNewPrivileges": inp.no_new_privileges,
    }
    if inp.rlimits:
        process["rlimits"] = inp.rlimits
    if inp.oom_score_adj is not None:
        process["oomScoreAdj"] = inp.oom_score_adj
    if inp.apparmor:
        process["apparmorProfile"] = inp.apparmor
    if inp.init_path:
        # As dockerd: its docker-init (tini) is PID 1 and runs the command as its child.
        process["args"] = [INIT_DESTINATION, "--", *inp.args]
    if inp.tty and inp.console_size and all(inp.console_size):
        process["consoleSize"] = {"height": inp.console_size[0], "width": inp.console_size[1]}

    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        # Writable for privileged containers, as dockerd mounts them.
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "rw" if inp.privileged else "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["rw" if inp.privileged else "ro", "nosuid", "noexec", "nodev"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
    ]
    if inp.shm == "private":
        mounts.append({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                       "options": ["nosuid", "noexec", "nodev", "mode=1777",
                                   f"size={inp.shm_size}"]})
    elif inp.shm != "none":
        mounts.append({"destination": "/dev/shm", "type": "bind", "source": inp.shm,
                       "options": ["rbind", "rprivate"]})
    if inp.init_path:
        mounts.append({"destination": INIT_DESTINATION, "type": "bind",
                       "source": inp.init_path, "options": ["bind", "ro"]})
    user_mounts = user_mount_entries(inp)
    taken = {m["destination"] for m in user_mounts}
    mounts = [m for m in mounts if m["destination"] not in taken]  # the user's /dev/shm wins
    files = [{"destination": dest, "type": "bind", "source": src,
              "options": ["rbind", "rprivate"]}
             for dest, src in (("/etc/resolv.conf", inp.resolv_conf_path),
                               ("/etc/hostname", inp.hostname_path),
                               ("/etc/hosts", inp.hosts_path)) if dest not in taken]
    # Parents before children (a volume on /etc, then /etc/hosts over it), as dockerd sorts.
    mounts += sorted(files + user_mounts, key=lambda m: _depth(m["destination"]))

    namespaces: list[dict[str, str]] = []
    for kind in ("pid", "ipc", "uts", "mount", "cgroup"):
        mode = inp.namespaces.get(kind, "private")
        if mode == "private":
            namespaces.append({"type": kind})
        elif mode != "host":
            namespaces.append({"type": kind, "path": mode})
    if inp.netns_path:
        namespaces.append({"type": "network", "path": inp.netns_path})
    else:
        namespaces.append({"type": "network"})

    resources: dict[str, Any] = {
        "devices": [
            {"allow": False, "access": "rwm"},
            {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "rwm"},
            {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
            {"allow": True, "type": "c", "major": 1, "minor": 9, "access": "rwm"},
            {"allow": True, "type": "c", "major": 1, "minor": 8, "access": "rwm"},
            {"allow": True, "type": "c", "major": 5, "minor": 0, "access": "rwm"},
            {"allow": True, "type": "c", "major": 5, "minor": 1, "access": "rwm"},
            {"allow": False, "type": "c", "major": 10, "minor": 229, "access": "rwm"},
            *inp.device_rules,
        ]
    }
    resources.update(inp.resources)

    linux: dict[str, Any] = {
        "namespaces": namespaces,
        "cgroupsPath": inp.cgroups_path,
        "resources": resources,
    }
    propagations = {b.get("propagation") for b in inp.binds}
    if propagations & {"shared", "rshared"}:  # so the mount can propagate at all (dockerd)
        linux["rootfsPropagation"] = "shared"
    elif propagations & {"slave", "rslave"}:
        linux["rootfsPropagation"] = "rslave"
    if inp.devices:
        linux["devices"] = inp.devices
    if inp.sysctls:
        linux["sysctl"] = dict(inp.sysctls)
    if not inp.privileged and not inp.systempaths_unconfined:
        linux["maskedPaths"] = (MASKED_PATHS if inp.masked_paths is None
                                else list(inp.masked_paths))
        linux["readonlyPaths"] = (READONLY_PATHS if inp.readonly_paths is None
                                  else list(inp.readonly_paths))
    seccomp = seccomp_section(inp.seccomp, caps, inp.privileged)
    if seccomp is not None:
        linux["seccomp"] = seccomp

    uts_shared = inp.namespaces.get("uts", "private") != "private"
    return {
        "ociVersion": "1.0.2",
        "process": process,
        "root": {"path": inp.rootfs, "readonly": inp.readonly_rootfs},
        # A shared UTS namespace keeps its own name: setting one would rename the host.
        **({} if uts_shared else {"hostname": inp.hostname}),
        **({"domainname": inp.domainname} if inp.domainname and not uts_shared else {}),
        "mounts": mounts,
        "linux": linux,
        "annotations": {**{k: str(v) for k, v in inp.labels.items()}, **inp.annotations},
    }


def seccomp_section(profile: str, caps: list[str], privileged: bool) -> dict[str, Any] | None:
    """linux.seccomp as dockerd chooses it: none if unconfined or privileged, the given
    profile, or Docker's default for these capabilities."""
    if profile == "unconfined" or privileged:
        return None
    if profile and profile != "builtin":
        return to_oci(parse_profile(profile), caps)
    return to_oci(DOCKER_DEFAULT_PROFILE, caps)


def resources_from_host_config(hc: dict[str, Any]) -> dict[str, Any]:
    """HostConfig limits → OCI `linux.resources` (for the spec at start, and for
    `runtime update`)."""
    out: dict[str, Any] = {}
    memory: dict[str, Any] = {}
    if hc.get("Memory"):
        memory["limit"] = hc["Memory"]
    if hc.get("MemoryReservation"):
        memory["reservation"] = hc["MemoryReservation"]
    if hc.get("MemorySwap"):
        memory["swap"] = hc["MemorySwap"]
    if hc.get("MemorySwappiness") is not None and hc["MemorySwappiness"] >= 0:
        memory["swappiness"] = hc["MemorySwappiness"]
    if hc.get("OomKillDisable"):
        memory["disableOOMKiller"] = True
    if memory:
        out["memory"] = memory
    cpu: dict[str, Any] = {}
    if hc.get("CpuShares"):
        cpu["shares"] = hc["CpuShares"]
    if hc.get("NanoCpus"):
        cpu["period"] = 100000
        cpu["quota"] = hc["NanoCpus"] * 100000 // 1_000_000_000
    if hc.get("CpuPeriod"):
        cpu["period"] = hc["CpuPeriod"]
    if hc.get("CpuQuota"):
        cpu["quota"] = hc["CpuQuota"]
    if hc.get("CpusetCpus"):
        cpu["cpus"] = hc["CpusetCpus"]
    if hc.get("CpusetMems"):
        cpu["mems"] = hc["CpusetMems"]
    if hc.get("CpuRealtimePeriod"):
        cpu["realtimePeriod"] = hc["CpuRealtimePeriod"]
    if hc.get("CpuRealtimeRuntime"):
        cpu["realtimeRuntime"] = hc["CpuRealtimeRuntime"]
    if cpu:
        out["cpu"] = cpu
    if hc.get("PidsLimit"):
        out["pids"] = {"limit": hc["PidsLimit"]}
    if hc.get("BlkioWeight"):
        out["blockIO"] = {"weight": hc["BlkioWeight"]}
    return out
