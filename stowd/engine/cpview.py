"""The filesystem `docker cp` sees, built in a mount namespace private to one thread.

dockerd's cp works on the container's root filesystem with its volumes, bind mounts and
/etc/hosts, hostname and resolv.conf mounted where the container has them. stowd builds the
same view without touching the host's mount table: a dedicated thread leaves stowd's mount
namespace (unshare(CLONE_NEWNS) acts on the calling thread only), marks everything private,
mounts the container's overlay if it is not running (read-only: upperdir, init layer and
image layers as lower layers; read-write with upper/work for an extraction, which the engine
does under the container's lock), and bind-mounts each volume and bind source at its
destination, found inside the root as the runtime finds it. When the thread ends, the
namespace and its mounts go with it: nothing to clean up after an error or a crash.

A running container's rootfs mount is already in the copy of the namespace the thread gets,
and it is the same filesystem: what an extraction writes there, the container sees.
"""

import asyncio
import contextlib
import os
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from stowd.engine.archive_path import ensure_dir, open_in_root
from stowd.engine.errors import Conflict
from stowd.engine.runtime.libc import MNT_DETACH, check, is_mounted, libc

CLONE_NEWNS = 0x00020000
MS_RDONLY = 0x1
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
_MAX_MOUNT_DATA = 4000

T = TypeVar("T")


@dataclass
class Bind:
    source: str
    destination: str
    readonly: bool = False


@dataclass
class ViewSpec:
    rootfs: str  # the container's mount point
    upper: str
    work: str
    layers: list[str]  # lower layers, topmost first: the init layer, then the image's
    binds: list[Bind] = field(default_factory=list)
    # mount a stopped container's overlay read-write (extraction, or missing mount points to
    # make; the engine holds the container's lock meanwhile)
    writable: bool = False
    may_mount: bool = True  # False: the container runs, its rootfs must be there


def _mount_overlay(spec: ViewSpec) -> None:
    if spec.writable:
        lowers = spec.layers
        tail = f",upperdir={spec.upper},workdir={spec.work},index=off"
    else:
        lowers = [spec.upper, *spec.layers]
        tail = ""
    data = "lowerdir=" + ":".join(lowers) + tail
    if len(data) > _MAX_MOUNT_DATA:
        # Too long for one page: relative lower paths from their common parent. This
        # thread has its own working directory once it has left the namespace.
        base = os.path.commonpath(lowers)
        os.chdir(base)
        data = "lowerdir=" + ":".join(os.path.relpath(d, base) for d in lowers) + tail
    check(libc.mount(b"overlay", spec.rootfs.encode(), b"overlay",
                       0 if spec.writable else MS_RDONLY, data.encode()),
           f"mount overlay on {spec.rootfs}")


def _mount_point(root: int, bind: Bind, is_dir: bool, create: bool) -> int | None:
    """An O_PATH descriptor of the bind's destination inside the root; missing, it is made
    (as dockerd's mountVolumes does) when the view is writable, else None."""
    try:
        return open_in_root(root, bind.destination, os.O_PATH)
    except FileNotFoundError:
        if not create:
            return None
    parent, _, base = bind.destination.rstrip("/").rpartition("/")
    pfd = ensure_dir(root, parent or "/")
    try:
        if is_dir:
            with contextlib.suppress(FileExistsError):
                os.mkdir(base, 0o755, dir_fd=pfd)
        else:
            with contextlib.suppress(FileExistsError):
                os.close(os.open(base, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                                 0o644, dir_fd=pfd))
    finally:
        os.close(pfd)
    return open_in_root(root, bind.destination, os.O_PATH)


def _bind(root: int, bind: Bind, create: bool) -> None:
    try:
        src = os.stat(bind.source)
        fd = _mount_point(root, bind, stat.S_ISDIR(src.st_mode), create)
    except OSError:
        return  # a missing source, or no place for it: the container does not have it either
    if fd is None:
        return
    try:
        if stat.S_ISDIR(src.st_mode) != stat.S_ISDIR(os.fstat(fd).st_mode):
            return
        check(libc.mount(bind.source.encode(), f"/proc/self/fd/{fd}".encode(), None,
                           MS_BIND | MS_REC, None), f"bind {bind.source} on {bind.destination}")
    finally:
        os.close(fd)
    if bind.readonly:
        fd = open_in_root(root, bind.destination, os.O_PATH)  # now the mount's root
        try:
            check(libc.mount(None, f"/proc/self/fd/{fd}".encode(), None,
                               MS_BIND | MS_REMOUNT | MS_RDONLY, None),
                   f"read-only {bind.destination}")
        finally:
            os.close(fd)


@contextlib.contextmanager
def enter(spec: ViewSpec) -> Iterator[int]:
    """Build the view and yield a descriptor of its root. Irreversible for the calling
    thread: call it only in a thread of its own (run_in_own_thread)."""
    check(libc.unshare(CLONE_NEWNS), "unshare mount namespace")
    check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "make mounts private")
    mounted = False
    if not is_mounted(spec.rootfs, "/proc/thread-self/mountinfo"):
        if not spec.may_mount:
            raise Conflict("the container stopped meanwhile: try again")
        _mount_overlay(spec)
        mounted = True
    root = os.open(spec.rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for bind in spec.binds:
            _bind(root, bind, create=mounted and spec.writable)
        yield root
    finally:
        os.close(root)
        if mounted:
            # Free upper/work at once (the namespace would drop it with the thread too).
            libc.umount2(spec.rootfs.encode(), MNT_DETACH)


def run_in_own_thread(fn: Callable[[], T]) -> "asyncio.Future[T]":
    """Run fn in a new thread (never a pooled one: it may leave the mount namespace)."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, exc: BaseException | None) -> None:
        if fut.done():
            return
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)  # type: ignore[arg-type]

    def main() -> None:
        try:
            result = fn()
        except BaseException as exc:
            loop.call_soon_threadsafe(settle, None, exc)
        else:
            loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=main, name="stowd-cp", daemon=True).start()
    return fut
