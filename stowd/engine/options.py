"""Create-time rules for the `docker run` options that change how a container runs:
namespaces, security options, devices, ulimits, sysctls, kernel memory, isolation.

Each is either accepted (and then applied by spec generation) or refused here with
dockerd's words (or clear ones where dockerd has none and fails later, or not at all).
Pure functions on the HostConfig dict: no I/O.
"""

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from stowd.engine.errors import InvalidParameter

# setrlimit(2)'s resources by the names Docker uses (go-units).
ULIMIT_NAMES = ("as", "core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice",
                "nofile", "nproc", "rss", "rtprio", "rttime", "sigpending", "stack")

# Sysctls that live in a namespace of the container's own (what runc and dockerd allow).
IPC_SYSCTLS = ("kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
               "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced")
UTS_SYSCTLS = ("kernel.domainname", "kernel.hostname")

_DEVICE_RULE = re.compile(r"^([acb]) ([0-9]+|\*):([0-9]+|\*) ([rwm]{1,3})$")

HOST_GATEWAY = "host-gateway"


@dataclass(frozen=True)
class SecurityOptions:
    """SecurityOpt, parsed as dockerd's parseSecurityOpt."""

    no_new_privileges: bool = False
    seccomp: str = ""  # "", "unconfined", "builtin", or a profile's JSON
    apparmor: str = ""
    labels: tuple[str, ...] = ()
    systempaths_unconfined: bool = False


def parse_security_opt(opts: list[str] | None) -> SecurityOptions:
    nnp, seccomp, apparmor, systempaths = False, "", "", False
    labels: list[str] = []
    for opt in opts or []:
        if not isinstance(opt, str):
            raise InvalidParameter(f"invalid --security-opt 1: {opt!r}")
        if opt == "no-new-privileges":
            nnp = True
            continue
        if opt == "disable":
            labels.append("disable")
            continue
        if "=" in opt:
            key, value = opt.split("=", 1)
        elif ":" in opt:  # the deprecated separator dockerd still reads
            key, value = opt.split(":", 1)
        else:
            raise InvalidParameter(f'invalid --security-opt 1: "{opt}"')
        if key == "label":
            labels.append(value)
        elif key == "apparmor":
            apparmor = value
        elif key == "seccomp":
            seccomp = value
        elif key == "no-new-privileges":
            if value.lower() not in ("1", "t", "true", "0", "f", "false"):
                raise InvalidParameter(f'invalid --security-opt 2: "{opt}"')
            nnp = value.lower() in ("1", "t", "true")
        elif key == "systempaths" and value == "unconfined":
            systempaths = True
        else:
            raise InvalidParameter(f'invalid --security-opt 2: "{opt}"')
    return SecurityOptions(nnp, seccomp, apparmor, tuple(labels), systempaths)


def _check_mode(value: Any, what: str, allowed: tuple[str, ...], container: bool) -> str:
    mode = value or ""
    if not isinstance(mode, str):
        raise InvalidParameter(f"invalid {what} mode: {mode}")
    if mode in allowed or (container and mode.startswith("container:") and mode[10:]):
        return mode
    raise InvalidParameter(f"invalid {what} mode: {mode}")


def joined_container(mode: str) -> str | None:
    """The container named by a `container:<name|id>` namespace mode."""
    return mode.split(":", 1)[1] if mode.startswith("container:") else None


def parse_ulimits(ulimits: Any) -> list[dict[str, Any]]:
    """Ulimits ([{Name, Soft, Hard}]) checked; the same list back."""
    if ulimits is None:
        return []
    if not isinstance(ulimits, list):
        raise InvalidParameter("Ulimits must be a list of {Name, Soft, Hard}")
    for u in ulimits:
        if not isinstance(u, dict):
            raise InvalidParameter("Ulimits must be a list of {Name, Soft, Hard}")
        name, soft, hard = u.get("Name"), u.get("Soft"), u.get("Hard")
        if name not in ULIMIT_NAMES:
            raise InvalidParameter(f"invalid ulimit type: {name}")
        if not isinstance(soft, int) or not isinstance(hard, int):
            raise InvalidParameter(f"invalid ulimit value for {name}: Soft and Hard must be "
                                   "integers")
        if soft > hard and hard != -1:
            raise InvalidParameter(f"ulimit soft limit must be less than or equal to hard "
                                   f"limit: {soft} > {hard}")
    return ulimits


def parse_ulimit_flag(text: str) -> dict[str, Any]:
    """`--default-ulimit name=soft[:hard]` (the daemon's flag, as go-units parses it)."""
    name, sep, values = text.partition("=")
    if not sep:
        raise ValueError(f"invalid ulimit argument: {text}")
    soft_s, _, hard_s = values.partition(":")
    try:
        soft = int(soft_s)
        hard = int(hard_s) if hard_s else soft
    except ValueError:
        raise ValueError(f"invalid ulimit argument: {text}") from None
    parsed = {"Name": name, "Soft": soft, "Hard": hard}
    try:
        parse_ulimits([parsed])
    except InvalidParameter as exc:
        raise ValueError(exc.message) from None
    return parsed


def rlimits(ulimits: list[dict[str, Any]], defaults: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OCI process.rlimits: the daemon's defaults, each overridden by the container's own."""
    merged = {u["Name"]: u for u in defaults}
    merged.update({u["Name"]: u for u in ulimits})
    return [{"type": "RLIMIT_" + name.upper(), "soft": _rlimit_value(u["Soft"]),
             "hard": _rlimit_value(u["Hard"])} for name, u in merged.items()]


def _rlimit_value(value: int) -> int:
    return 2**64 - 1 if value < 0 else value  # -1: unlimited (RLIM_INFINITY)


def parse_device_rule(rule: str) -> dict[str, Any]:
    """A DeviceCgroupRules entry ("c 1:3 mr") → an OCI linux.resources.devices rule."""
    m = _DEVICE_RULE.match(rule) if isinstance(rule, str) else None
    if m is None:
        raise InvalidParameter(f"invalid device cgroup rule format: '{rule}'")
    kind, major, minor, access = m.groups()
    out: dict[str, Any] = {"allow": True, "type": kind, "access": access}
    if major != "*":
        out["major"] = int(major)
    if minor != "*":
        out["minor"] = int(minor)
    return out


def check_devices(devices: Any) -> list[dict[str, str]]:
    if not devices:
        return []
    if not isinstance(devices, list) or not all(isinstance(d, dict) for d in devices):
        raise InvalidParameter("Devices must be a list of {PathOnHost, PathInContainer, "
                               "CgroupPermissions}")
    for d in devices:
        host = d.get("PathOnHost") or ""
        inside = d.get("PathInContainer") or host
        perms = d.get("CgroupPermissions") or "rwm"
        if not host.startswith("/"):
            raise InvalidParameter(f"{host} is not an absolute path")
        if not inside.startswith("/"):
            raise InvalidParameter(f"bad format for path: {inside}")
        if not perms or any(ch not in "rwm" for ch in perms):
            raise InvalidParameter(f"invalid device mode: {perms}")
    return devices


def check_sysctls(sysctls: Any, hc: dict[str, Any]) -> None:
    """Only sysctls of a namespace the container has of its own (dockerd's and runc's rule)."""
    if not sysctls:
        return
    if not isinstance(sysctls, dict) or not all(isinstance(v, str) for v in sysctls.values()):
        raise InvalidParameter("Sysctls must be a map of strings")
    net_mode = str(hc.get("NetworkMode") or "")
    for key in sysctls:
        if key in IPC_SYSCTLS or key.startswith("fs.mqueue."):
            if hc.get("IpcMode") == "host":
                raise InvalidParameter(f'sysctl "{key}" is not allowed in the hosts ipc '
                                       "namespace")
        elif key in UTS_SYSCTLS:
            if hc.get("UTSMode") == "host":
                raise InvalidParameter(f'sysctl "{key}" is not allowed in the hosts uts '
                                       "namespace")
            if key == "kernel.hostname":
                raise InvalidParameter(f"sysctl '{key}' is not allowed: set the container's "
                                       "hostname instead")
        elif key.startswith("net."):
            if net_mode == "host":
                raise InvalidParameter(f'sysctl "{key}" not allowed in host network namespace')
            if net_mode.startswith("container:"):
                raise InvalidParameter(f'sysctl "{key}" is not allowed: the network namespace '
                                       "belongs to another container")
        else:
            raise InvalidParameter(f"sysctl '{key}' is not allowed: it is not in a separate "
                                   "kernel namespace")


def check_extra_hosts(entries: Any) -> None:
    for entry in entries or []:
        if not isinstance(entry, str) or ":" not in entry:
            raise InvalidParameter(f'bad format for add-host: "{entry}"')
        host, addr = entry.split(":", 1)
        if not host:
            raise InvalidParameter(f'bad format for add-host: "{entry}"')
        if addr == HOST_GATEWAY:
            continue
        try:
            ipaddress.ip_address(addr.strip("[]"))
        except ValueError:
            raise InvalidParameter(f'invalid IP address in add-host: "{addr}"') from None


def check_blkio(hc: dict[str, Any]) -> None:
    for key in ("BlkioWeightDevice", "BlkioDeviceReadBps", "BlkioDeviceWriteBps",
                "BlkioDeviceReadIOps", "BlkioDeviceWriteIOps"):
        value_key = "Weight" if key == "BlkioWeightDevice" else "Rate"
        for entry in hc.get(key) or []:
            if not isinstance(entry, dict) or not str(entry.get("Path") or "").startswith("/"):
                raise InvalidParameter(f"invalid {key} entry: {entry!r}: needs an absolute Path")
            value = entry.get(value_key)
            if not isinstance(value, int) or value < 0:
                raise InvalidParameter(f"invalid {key} entry: {entry!r}: {value_key} must be "
                                       "a non-negative integer")
            if key == "BlkioWeightDevice" and value and not 10 <= value <= 1000:
                raise InvalidParameter("Range of blkio weight is from 10 to 1000")


def check_run_options(hc: dict[str, Any], config: dict[str, Any], runtimes: tuple[str, ...],
                      cgroup_v2: bool) -> list[str]:
    """Every rule above, in dockerd's order where it matters; the create warnings back."""
    warnings: list[str] = []
    for key, what in (("PidMode", "PID"), ("UTSMode", "UTS"), ("UsernsMode", "USER")):
        allowed = ("", "host")
        hc[key] = _check_mode(hc.get(key), what, allowed, container=key == "PidMode")
    ipc = hc.get("IpcMode") or "private"
    if not isinstance(ipc, str) or not (
            ipc in ("private", "shareable", "host", "none")
            or (ipc.startswith("container:") and ipc[10:])):
        raise InvalidParameter(f"Invalid IPC mode: {ipc}")
    hc["IpcMode"] = ipc
    cgroupns = hc.get("CgroupnsMode") or "private"
    if cgroupns not in ("private", "host"):
        raise InvalidParameter(f"invalid cgroup namespace mode: {cgroupns}")
    hc["CgroupnsMode"] = cgroupns
    if hc["UTSMode"] == "host" and config.get("Hostname"):
        raise InvalidParameter("conflicting options: hostname and the UTS mode")
    parse_security_opt(hc.get("SecurityOpt"))
    parse_ulimits(hc.get("Ulimits"))
    check_devices(hc.get("Devices"))
    for rule in hc.get("DeviceCgroupRules") or []:
        parse_device_rule(rule)
    for request in hc.get("DeviceRequests") or []:
        # No device driver (nvidia or CDI) is registered with stowd, as with a dockerd
        # that has no GPU runtime installed.
        request = request if isinstance(request, dict) else {}
        driver = request.get("Driver") or ""
        raise InvalidParameter(f'could not select device driver "{driver}" with capabilities: '
                               f"{_go_caps(request.get('Capabilities') or [])}")
    check_sysctls(hc.get("Sysctls"), hc)
    check_extra_hosts(hc.get("ExtraHosts"))
    check_blkio(hc)
    oom = hc.get("OomScoreAdj") or 0
    if not isinstance(oom, int) or not -1000 <= oom <= 1000:
        raise InvalidParameter(f"Invalid value {oom}, range for oom score adj is [-1000, 1000]")
    swappiness = hc.get("MemorySwappiness")
    if swappiness is not None and swappiness != -1:
        if not isinstance(swappiness, int) or not 0 <= swappiness <= 100:
            raise InvalidParameter(f"Invalid value: {swappiness}, valid memory swappiness "
                                   "range is 0-100")
        if cgroup_v2:
            warnings.append("Your kernel does not support memory swappiness capabilities or "
                            "the cgroup is not mounted. Memory swappiness discarded.")
            hc["MemorySwappiness"] = None
    if hc.get("OomKillDisable") and cgroup_v2:
        warnings.append("Your kernel does not support OomKillDisable. OomKillDisable discarded.")
        hc["OomKillDisable"] = False
    if hc.get("OomKillDisable") and not hc.get("Memory"):
        warnings.append("OOM killer is disabled for the container, but no memory limit is set, "
                        "this can result in the system running out of resources.")
    if hc.get("KernelMemory"):
        # Kernel memory limits cannot be set on current kernels (cgroup v1 dropped them in
        # 5.16, v2 never had them); dockerd 25+ ignores the field, which stowd will not.
        raise InvalidParameter("kernel memory limits are not supported by this kernel "
                               "(KernelMemory is deprecated since API 1.42): leave it unset")
    if hc.get("KernelMemoryTCP"):
        # runc 1.1 and later no longer write memory.kmem.tcp.limit_in_bytes (checked: the
        # limit stays unset), and cgroup v2 has no such knob.
        raise InvalidParameter("kernel TCP memory limits are not supported by the OCI runtime "
                               "(KernelMemoryTCP): leave it unset")
    period, runtime = hc.get("CpuRealtimePeriod") or 0, hc.get("CpuRealtimeRuntime") or 0
    if period and runtime and runtime > period:
        raise InvalidParameter("cpu real-time runtime cannot be higher than cpu real-time period")
    if (period or runtime) and cgroup_v2:
        raise InvalidParameter("Your kernel does not support cgroup cpu real-time runtime")
    if hc.get("IOMaximumBandwidth") or hc.get("IOMaximumIOps"):
        raise InvalidParameter("Invalid QoS settings: linux does not support Maximum IO "
                               "Bandwidth or Maximum IO IOps")
    if hc.get("CpuCount") or hc.get("CpuPercent"):
        raise InvalidParameter("CpuCount and CpuPercent are Windows-only: on Linux use "
                               "NanoCpus (--cpus) or CpuQuota")
    if hc.get("Cgroup"):
        raise InvalidParameter("HostConfig.Cgroup (joining another container's cgroup) is not "
                               "supported: use CgroupParent")
    if hc.get("StorageOpt"):
        raise InvalidParameter("--storage-opt is supported only for overlay over xfs with "
                               "'pquota' mount option")
    isolation = hc.get("Isolation") or ""
    if isolation not in ("", "default"):
        raise InvalidParameter(f'Invalid isolation: "{isolation}" - linux only supports '
                               "'default'")
    runtime_name = hc.get("Runtime") or ""
    if runtime_name and runtime_name not in runtimes:
        raise InvalidParameter(f"Unknown runtime specified {runtime_name}")
    annotations = hc.get("Annotations")
    if annotations is not None and (not isinstance(annotations, dict) or not all(
            isinstance(v, str) for v in annotations.values())):
        raise InvalidParameter("Annotations must be a map of strings")
    for key in ("MaskedPaths", "ReadonlyPaths"):
        paths = hc.get(key)
        if paths is not None and (not isinstance(paths, list) or not all(
                isinstance(p, str) and p.startswith("/") for p in paths)):
            raise InvalidParameter(f"{key} must be a list of absolute paths")
    return warnings


def _go_caps(caps: list[list[str]]) -> str:
    """Capabilities as Go prints [][]string: [[gpu utility]]."""
    return "[" + " ".join("[" + " ".join(c) + "]" for c in caps) + "]"
