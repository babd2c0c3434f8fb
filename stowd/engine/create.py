"""Turning a create request into a container record: validation and image defaults.

Pure functions (no I/O), so that every rule here is unit-tested on plain dicts.
"""

import os
import re
from typing import Any

from stowd.engine import health, mountspec
from stowd.engine.errors import InvalidParameter
from stowd.engine.logs import parse_log_options
from stowd.engine.resources import check_resources

RESTART_POLICIES = ("no", "always", "unless-stopped", "on-failure")

# HostConfig fields Docker fills when a client leaves them out (as dockerd 20.10+ shows them).
HOST_CONFIG_DEFAULTS: dict[str, Any] = {
    "Binds": None,
    "ContainerIDFile": "",
    "LogConfig": {"Type": "json-file", "Config": {}},
    "NetworkMode": "default",
    "PortBindings": {},
    "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
    "AutoRemove": False,
    "VolumeDriver": "",
    "VolumesFrom": None,
    "CapAdd": None,
    "CapDrop": None,
    "CgroupnsMode": "private",
    "Dns": [],
    "DnsOptions": [],
    "DnsSearch": [],
    "ExtraHosts": None,
    "GroupAdd": None,
    "IpcMode": "private",
    "Cgroup": "",
    "Links": None,
    "OomScoreAdj": 0,
    "PidMode": "",
    "Privileged": False,
    "PublishAllPorts": False,
    "ReadonlyRootfs": False,
    "SecurityOpt": None,
    "UTSMode": "",
    "UsernsMode": "",
    "ShmSize": 67108864,
    "Runtime": "runc",
    "ConsoleSize": [0, 0],
    "Isolation": "",
    "CpuShares": 0,
    "Memory": 0,
    "NanoCpus": 0,
    "CgroupParent": "",
    "BlkioWeight": 0,
    "BlkioWeightDevice": [],
    "BlkioDeviceReadBps": [],
    "BlkioDeviceWriteBps": [],
    "BlkioDeviceReadIOps": [],
    "BlkioDeviceWriteIOps": [],
    "CpuPeriod": 0,
    "CpuQuota": 0,
    "CpuRealtimePeriod": 0,
    "CpuRealtimeRuntime": 0,
    "CpusetCpus": "",
    "CpusetMems": "",
    "Devices": [],
    "DeviceCgroupRules": None,
    "DeviceRequests": None,
    "MemoryReservation": 0,
    "MemorySwap": 0,
    "MemorySwappiness": None,
    "OomKillDisable": None,
    "PidsLimit": None,
    "Ulimits": [],
    "CpuCount": 0,
    "CpuPercent": 0,
    "IOMaximumIOps": 0,
    "IOMaximumBandwidth": 0,
}

CONFIG_FIELDS = (
    "Hostname", "Domainname", "User", "AttachStdin", "AttachStdout", "AttachStderr",
    "ExposedPorts", "Tty", "OpenStdin", "StdinOnce", "Env", "Cmd", "Healthcheck",
    "ArgsEscaped", "Image", "Volumes", "WorkingDir", "Entrypoint", "NetworkDisabled",
    "MacAddress", "OnBuild", "Labels", "StopSignal", "StopTimeout", "Shell",
)


def _string_list(value: Any, field: str) -> list[str] | None:
    """Cmd and Entrypoint arrive as a list, or as a string from old clients."""
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise InvalidParameter(f"json: cannot unmarshal {type(value).__name__} into Go struct field "
                           f"Config.{field} of type strslice.StrSlice")


def validate_restart_policy(policy: dict[str, Any] | None, auto_remove: bool) -> dict[str, Any]:
    policy = dict(policy or {})
    name = policy.get("Name") or "no"
    retries = policy.get("MaximumRetryCount") or 0
    if not isinstance(retries, int):
        raise InvalidParameter("invalid restart policy: MaximumRetryCount must be an integer")
    if name not in RESTART_POLICIES:
        raise InvalidParameter(
            f"invalid restart policy: unknown policy '{name}'; use one of 'no', 'always', "
            "'on-failure', or 'unless-stopped'"
        )
    if retries and name != "on-failure":
        raise InvalidParameter(
            "invalid restart policy: maximum retry count can only be used with 'on-failure'"
        )
    if retries < 0:
        raise InvalidParameter("invalid restart policy: maximum retry count cannot be negative")
    if auto_remove and name != "no":
        raise InvalidParameter("can't create 'AutoRemove' container with restart policy")
    return {"Name": name, "MaximumRetryCount": retries}


def _validate_ports(exposed: Any, bindings: Any) -> None:
    for key in list((exposed or {}).keys()) + list((bindings or {}).keys()):
        number, _, proto = str(key).partition("/")
        proto = proto or "tcp"
        lo, _, hi = number.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()) or proto not in ("tcp", "udp", "sctp"):
            raise InvalidParameter(f"invalid port specification: \"{key}\"")
        if not 0 < int(lo) <= 65535 or (hi and not int(lo) <= int(hi) <= 65535):
            raise InvalidParameter(f"invalid port specification: \"{key}\"")
    for key, entries in (bindings or {}).items():
        for entry in entries or []:
            if not isinstance(entry, dict):
                raise InvalidParameter(f"invalid port binding for {key}")
            host_port = str(entry.get("HostPort") or "")
            if host_port:
                lo, _, hi = host_port.partition("-")
                if not lo.isdigit() or (hi and not hi.isdigit()) or int(lo) > 65535:
                    raise InvalidParameter(f"invalid port specification: \"{host_port}\"")


def normalize_config(body: dict[str, Any]) -> dict[str, Any]:
    """The Config part of a create body, with Docker's types; InvalidParameter if malformed."""
    config: dict[str, Any] = {}
    for field in CONFIG_FIELDS:
        if field in body:
            config[field] = body[field]
    for field in ("Cmd", "Entrypoint"):
        if field in config:
            config[field] = _string_list(config[field], field)
    env = config.get("Env")
    if env is not None:
        if not isinstance(env, list) or not all(isinstance(e, str) for e in env):
            raise InvalidParameter("Env must be a list of strings")
        for entry in env:
            if entry.startswith("=") or not entry:
                raise InvalidParameter(f"invalid environment variable: {entry}")
    labels = config.get("Labels")
    if labels is not None and (not isinstance(labels, dict) or
                               not all(isinstance(v, str) for v in labels.values())):
        raise InvalidParameter("Labels must be a map of strings")
    for field in ("Image", "Hostname", "Domainname", "User", "WorkingDir", "StopSignal",
                  "MacAddress"):
        if config.get(field) is not None and not isinstance(config[field], str):
            raise InvalidParameter(f"{field} must be a string")
    for field in ("Tty", "OpenStdin", "StdinOnce", "AttachStdin", "AttachStdout", "AttachStderr"):
        if config.get(field) is not None and not isinstance(config[field], bool):
            raise InvalidParameter(f"{field} must be a boolean")
    if config.get("StopTimeout") is not None and not isinstance(config["StopTimeout"], int):
        raise InvalidParameter("StopTimeout must be an integer")
    mac = config.get("MacAddress")
    if mac and not re.fullmatch(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}", mac):
        raise InvalidParameter(f"invalid MAC address: {mac}")
    wd = config.get("WorkingDir")
    if wd and not wd.startswith("/"):
        raise InvalidParameter(
            f"the working directory '{wd}' is invalid, it needs to be an absolute path"
        )
    if "Healthcheck" in config:
        config["Healthcheck"] = health.normalize(config["Healthcheck"])
        health.validate(config["Healthcheck"])
    hostname = config.get("Hostname") or ""
    if len(hostname) > 63:
        raise InvalidParameter("invalid hostname format, must be at most 63 characters")
    return config


def normalize_host_config(host_config: dict[str, Any] | None, runtime: str) -> dict[str, Any]:
    hc = dict(HOST_CONFIG_DEFAULTS)
    hc["Runtime"] = runtime
    given = host_config or {}
    if not isinstance(given, dict):
        raise InvalidParameter("HostConfig must be an object")
    for key, value in given.items():
        if value is not None or key not in hc:
            hc[key] = value
    if not hc.get("NetworkMode"):
        hc["NetworkMode"] = "default"
    hc["RestartPolicy"] = validate_restart_policy(hc.get("RestartPolicy"),
                                                  bool(hc.get("AutoRemove")))
    size = hc.get("ConsoleSize") or [0, 0]
    if (not isinstance(size, list) or len(size) != 2
            or not all(isinstance(v, int) and v >= 0 for v in size)):
        raise InvalidParameter("ConsoleSize must be [height, width]")
    hc["ConsoleSize"] = size
    check_resources(hc, os.cpu_count() or 1)
    if not hc.get("ShmSize"):
        hc["ShmSize"] = HOST_CONFIG_DEFAULTS["ShmSize"]
    log_config = dict(hc.get("LogConfig") or {})
    driver = log_config.get("Type") or "json-file"
    if driver not in ("json-file", "k8s-file", "local", "none"):
        raise InvalidParameter(f"logger: no log driver named '{driver}' is registered")
    parse_log_options(log_config)
    hc["LogConfig"] = {"Type": driver, "Config": log_config.get("Config") or {}}
    binds = hc.get("Binds")
    if binds is not None:
        if not isinstance(binds, list) or not all(isinstance(b, str) for b in binds):
            raise InvalidParameter("Binds must be a list of strings")
        for bind in binds:
            mountspec.parse_bind(bind)  # the rest of the mount rules: volumes.prepare
    return hc


def merge_image_defaults(config: dict[str, Any], image_config: dict[str, Any]) -> dict[str, Any]:
    """Fill a container's Config from its image's, as Docker merges them."""
    merged = dict(config)
    for field in ("User", "WorkingDir", "StopSignal", "Shell"):
        if not merged.get(field) and image_config.get(field):
            merged[field] = image_config[field]
    image_env = list(image_config.get("Env") or [])
    user_env = list(merged.get("Env") or [])
    user_keys = {e.split("=", 1)[0] for e in user_env}
    merged["Env"] = [e for e in image_env if e.split("=", 1)[0] not in user_keys] + user_env
    for field in ("ExposedPorts", "Volumes"):
        union = dict(image_config.get(field) or {})
        union.update(merged.get(field) or {})
        merged[field] = union or None
    labels = dict(image_config.get("Labels") or {})
    labels.update(merged.get("Labels") or {})
    merged["Labels"] = labels
    if not merged.get("Entrypoint"):
        if not merged.get("Cmd"):
            merged["Cmd"] = image_config.get("Cmd")
        if merged.get("Entrypoint") is None:
            merged["Entrypoint"] = image_config.get("Entrypoint")
    merged["Healthcheck"] = health.merge(merged.get("Healthcheck"),
                                         image_config.get("Healthcheck"))
    if merged.get("OnBuild") is None:
        merged["OnBuild"] = image_config.get("OnBuild")
    return merged


def entrypoint_and_args(config: dict[str, Any]) -> tuple[str, list[str]]:
    command = list(config.get("Entrypoint") or []) + list(config.get("Cmd") or [])
    if not command:
        raise InvalidParameter("No command specified")
    return command[0], command[1:]


def full_config(config: dict[str, Any]) -> dict[str, Any]:
    """Config with every field Docker shows in inspect, in Docker's order."""
    return {
        "Hostname": config.get("Hostname") or "",
        "Domainname": config.get("Domainname") or "",
        "User": config.get("User") or "",
        "AttachStdin": bool(config.get("AttachStdin")),
        "AttachStdout": bool(config.get("AttachStdout")),
        "AttachStderr": bool(config.get("AttachStderr")),
        **({"ExposedPorts": config["ExposedPorts"]} if config.get("ExposedPorts") else {}),
        "Tty": bool(config.get("Tty")),
        "OpenStdin": bool(config.get("OpenStdin")),
        "StdinOnce": bool(config.get("StdinOnce")),
        "Env": config.get("Env") or None,
        "Cmd": config.get("Cmd"),
        **({"Healthcheck": config["Healthcheck"]} if config.get("Healthcheck") is not None
           else {}),
        **({"ArgsEscaped": True} if config.get("ArgsEscaped") else {}),
        "Image": config.get("Image") or "",
        "Volumes": config.get("Volumes") or None,
        "WorkingDir": config.get("WorkingDir") or "",
        "Entrypoint": config.get("Entrypoint"),
        **({"NetworkDisabled": True} if config.get("NetworkDisabled") else {}),
        **({"MacAddress": config["MacAddress"]} if config.get("MacAddress") else {}),
        "OnBuild": config.get("OnBuild"),
        "Labels": config.get("Labels") or {},
        **({"StopSignal": config["StopSignal"]} if config.get("StopSignal") else {}),
        **({"StopTimeout": config["StopTimeout"]} if config.get("StopTimeout") is not None
           else {}),
        **({"Shell": config["Shell"]} if config.get("Shell") else {}),
    }
