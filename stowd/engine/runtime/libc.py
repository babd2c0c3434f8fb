"""The few libc calls stowd makes directly (mounts, namespaces, raw syscalls), typed once."""

import ctypes
import ctypes.util
import os

libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                       ctypes.c_char_p]
libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
libc.unshare.argtypes = [ctypes.c_int]
libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
libc.syscall.restype = ctypes.c_long

MNT_DETACH = 2


def check(rc: int, what: str) -> None:
    """Raise OSError with errno's text when a libc call returned non-zero."""
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def is_mounted(target: str, mountinfo: str = "/proc/self/mountinfo") -> bool:
    """Whether target is a mount point in the mount table at mountinfo (a thread in a mount
    namespace of its own reads /proc/thread-self/mountinfo)."""
    target = os.path.realpath(target)
    with open(mountinfo, encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 4 and fields[4].replace("\\040", " ") == target:
                return True
    return False
