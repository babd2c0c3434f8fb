"""Overlay mounts for container root filesystems (blocking: call from a worker thread)."""

import ctypes
import os
import subprocess

from stowd.engine.runtime.libc import MNT_DETACH, check, is_mounted, libc

__all__ = ["is_mounted", "mount_overlay", "mount_shm", "unmount"]

MS_NOSUID, MS_NODEV, MS_NOEXEC = 2, 4, 8

# The kernel takes mount data up to one page; longer layer lists go through relative paths.
_MAX_MOUNT_DATA = 4000


def mount_overlay(lowerdirs: list[str], upper: str, work: str, target: str) -> None:
    """Mount an overlay of lowerdirs (topmost first) with upper/work at target. Idempotent."""
    if is_mounted(target):
        return
    data = f"lowerdir={':'.join(lowerdirs)},upperdir={upper},workdir={work},index=off"
    if len(data) <= _MAX_MOUNT_DATA:
        check(libc.mount(b"overlay", target.encode(), b"overlay", 0, data.encode()),
              f"mount overlay on {target}")
        return
    # Too long for one page: mount from the common parent with relative lower paths.
    base = os.path.commonpath(lowerdirs)
    rel = ":".join(os.path.relpath(d, base) for d in lowerdirs)
    data = f"lowerdir={rel},upperdir={upper},workdir={work},index=off"
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", data, target], cwd=base,
                   check=True, capture_output=True)


def unmount(target: str) -> None:
    """Detach target if it is mounted; a missing mount is not an error."""
    rc = libc.umount2(target.encode(), MNT_DETACH)
    if rc != 0:
        err = ctypes.get_errno()
        if err not in (22, 2):  # EINVAL: not a mount point; ENOENT: gone
            raise OSError(err, f"umount {target}: {os.strerror(err)}")


def mount_shm(target: str, size: int) -> None:
    """A tmpfs for a shareable IPC namespace's /dev/shm, on the host so that containers
    joining it (`--ipc container:X`) can bind the same one. Idempotent."""
    os.makedirs(target, exist_ok=True)
    if is_mounted(target):
        return
    check(libc.mount(b"shm", target.encode(), b"tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                     f"mode=1777,size={size}".encode()), f"mount shm on {target}")
