"""Overlay mounts for container root filesystems (blocking: call from a worker thread)."""

import ctypes
import ctypes.util
import os
import subprocess

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]

MNT_DETACH = 2
# The kernel takes mount data up to one page; longer layer lists go through relative paths.
_MAX_MOUNT_DATA = 4000


def is_mounted(target: str) -> bool:
    target = os.path.realpath(target)
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 4 and fields[4].replace("\\040", " ") == target:
                return True
    return False


def mount_overlay(lowerdirs: list[str], upper: str, work: str, target: str) -> None:
    """Mount an overlay of lowerdirs (topmost first) with upper/work at target. Idempotent."""
    if is_mounted(target):
        return
    data = f"lowerdir={':'.join(lowerdirs)},upperdir={upper},workdir={work},index=off"
    if len(data) <= _MAX_MOUNT_DATA:
        rc = _libc.mount(b"overlay", target.encode(), b"overlay", 0, data.encode())
        if rc != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"mount overlay on {target}: {os.strerror(err)}")
        return
    # Too long for one page: mount from the common parent with relative lower paths.
    base = os.path.commonpath(lowerdirs)
    rel = ":".join(os.path.relpath(d, base) for d in lowerdirs)
    data = f"lowerdir={rel},upperdir={upper},workdir={work},index=off"
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", data, target], cwd=base,
                   check=True, capture_output=True)


def unmount(target: str) -> None:
    """Detach target if it is mounted; a missing mount is not an error."""
    rc = _libc.umount2(target.encode(), MNT_DETACH)
    if rc != 0:
        err = ctypes.get_errno()
        if err not in (22, 2):  # EINVAL: not a mount point; ENOENT: gone
            raise OSError(err, f"umount {target}: {os.strerror(err)}")
