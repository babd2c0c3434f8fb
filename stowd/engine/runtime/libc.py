"""The few libc calls stowd makes directly (mounts, namespaces, raw syscalls), typed once."""

import ctypes
import ctypes.util
import os
import struct

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


# inotify (inotify(7)): the few calls stowd needs to be told that a file changed.
libc.inotify_init1.argtypes = [ctypes.c_int]
libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
IN_MODIFY = 0x2
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_IGNORED = 0x8000
_EVENT_HEAD = 16  # struct inotify_event: int wd, u32 mask, u32 cookie, u32 len, char name[]


def inotify_init() -> int:
    """A non-blocking inotify descriptor (close-on-exec)."""
    fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    if fd < 0:
        check(-1, "inotify_init1")
    return int(fd)


def inotify_add_watch(fd: int, path: str, mask: int) -> int:
    """The watch descriptor of path on fd (blocking: a path lookup)."""
    wd = libc.inotify_add_watch(fd, os.fsencode(path), mask)
    if wd < 0:
        check(-1, f"inotify_add_watch {path}")
    return int(wd)


def inotify_rm_watch(fd: int, wd: int) -> None:
    libc.inotify_rm_watch(fd, wd)  # fails only when the watch is gone already


def inotify_events(fd: int) -> list[tuple[int, int, bytes]]:
    """(watch, mask, name) of every event queued on a non-blocking fd; [] when none is."""
    out: list[tuple[int, int, bytes]] = []
    while True:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return out
        pos = 0
        while pos + _EVENT_HEAD <= len(data):
            wd, mask, _cookie, size = struct.unpack_from("iIII", data, pos)
            name = data[pos + _EVENT_HEAD:pos + _EVENT_HEAD + size].rstrip(b"\0")
            out.append((wd, mask, name))
            pos += _EVENT_HEAD + size


# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# Log blocks are read and encoded in arrays of 1–4 MB (engine/k8sfile.py). With glibc's
# defaults each such array is a fresh mmap, faulted in page by page and unmapped when freed
# (about 44,000 page faults and a quarter of the CPU of reading a 50 MB log); kept in the
# heap below these sizes, the next block reuses the same pages.
HEAP_ARRAYS_UP_TO = 8 * 1024 * 1024
HEAP_KEPT_UP_TO = 32 * 1024 * 1024


def keep_large_allocations() -> bool:
    """Serve allocations up to HEAP_ARRAYS_UP_TO from the heap and keep up to
    HEAP_KEPT_UP_TO of freed heap per arena; False where mallopt is not glibc's."""
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(M_MMAP_THRESHOLD, HEAP_ARRAYS_UP_TO)
                and mallopt(M_TRIM_THRESHOLD, HEAP_KEPT_UP_TO))
