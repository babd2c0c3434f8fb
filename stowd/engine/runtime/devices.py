"""Host devices → OCI `linux.devices` and cgroup device rules; block devices → blkio limits.

Blocking (stat, directory walks): called from the worker thread that writes the spec.
"""

import os
import stat
from typing import Any

from stowd.engine.errors import InvalidParameter

# What runc's HostDevices leaves out of a privileged container's /dev: its own mounts.
_SKIP_DIRS = {"pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"}


def _device(path: str, inside: str, follow: bool = True) -> dict[str, Any] | None:
    st = os.stat(path) if follow else os.lstat(path)
    if stat.S_ISCHR(st.st_mode):
        kind = "c"
    elif stat.S_ISBLK(st.st_mode):
        kind = "b"
    elif stat.S_ISFIFO(st.st_mode):
        kind = "p"
    else:
        return None
    return {"path": inside, "type": kind, "major": os.major(st.st_rdev),
            "minor": os.minor(st.st_rdev), "fileMode": stat.S_IMODE(st.st_mode),
            "uid": st.st_uid, "gid": st.st_gid}


def _rule(dev: dict[str, Any], access: str) -> dict[str, Any]:
    return {"allow": True, "type": dev["type"], "major": dev["major"], "minor": dev["minor"],
            "access": access}


def user_devices(devices: list[dict[str, str]]) -> tuple[list[dict[str, Any]],
                                                         list[dict[str, Any]]]:
    """HostConfig.Devices → (devices, cgroup rules), as dockerd: a directory adds every
    device under it, at the same place under PathInContainer."""
    out: list[dict[str, Any]] = []
    rules: list[dict[str, Any]] = []
    for d in devices:
        host = d["PathOnHost"]
        inside = d.get("PathInContainer") or host
        access = d.get("CgroupPermissions") or "rwm"
        try:
            real = os.path.realpath(host)
            if os.path.isdir(real):
                found = []
                for root, _dirs, files in os.walk(real):
                    for name in files:
                        full = os.path.join(root, name)
                        dev = _device(full, os.path.join(inside, os.path.relpath(full, real)))
                        if dev:
                            found.append(dev)
            else:
                dev = _device(real, inside)
                if dev is None:
                    raise InvalidParameter(f"error gathering device information while adding "
                                           f'custom device "{host}": not a device node')
                found = [dev]
        except OSError as exc:
            why = (exc.strerror or str(exc)).lower()
            raise InvalidParameter(f"error gathering device information while adding custom "
                                   f'device "{host}": {why}') from None
        out += found
        rules += [_rule(dev, access) for dev in found if dev["type"] != "p"]
    return out, rules


def host_devices(root: str = "/dev") -> list[dict[str, Any]]:
    """Every device node of the host, for a privileged container (as runc's HostDevices)."""
    out: list[dict[str, Any]] = []
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if not (dirpath == root and x in _SKIP_DIRS)]
        for name in files:
            full = os.path.join(dirpath, name)
            if full == os.path.join(root, "console"):
                continue
            try:
                dev = _device(full, full, follow=False)  # /dev/stdout & co. are links to /proc
            except OSError:
                continue
            if dev and dev["type"] != "p":
                out.append(dev)
    return out


ALLOW_ALL = {"allow": True, "access": "rwm"}

_BLKIO = (("BlkioWeightDevice", "weightDevice", "Weight"),
          ("BlkioDeviceReadBps", "throttleReadBpsDevice", "Rate"),
          ("BlkioDeviceWriteBps", "throttleWriteBpsDevice", "Rate"),
          ("BlkioDeviceReadIOps", "throttleReadIOPSDevice", "Rate"),
          ("BlkioDeviceWriteIOps", "throttleWriteIOPSDevice", "Rate"))


def blkio_devices(hc: dict[str, Any]) -> dict[str, Any]:
    """The per-device parts of OCI `linux.resources.blockIO` (dockerd's words on errors)."""
    out: dict[str, Any] = {}
    for key, oci_key, value_key in _BLKIO:
        entries = []
        for entry in hc.get(key) or []:
            try:
                st = os.stat(entry["Path"])
            except OSError as exc:
                why = (exc.strerror or str(exc)).lower()
                raise InvalidParameter(f"stat {entry['Path']}: {why}") from None
            if not stat.S_ISBLK(st.st_mode):
                raise InvalidParameter(f"{entry['Path']} is not a block device")
            item = {"major": os.major(st.st_rdev), "minor": os.minor(st.st_rdev)}
            item["weight" if value_key == "Weight" else "rate"] = entry[value_key]
            entries.append(item)
        if entries:
            out[oci_key] = entries
    return out
