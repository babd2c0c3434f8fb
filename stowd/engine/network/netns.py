"""Named network namespaces: a bind mount of an nsfs file, as `ip netns` makes them.

A namespace is created by a short-lived thread that unshares its own network namespace and
bind-mounts it at the given path; work inside a namespace (making sockets, running `ip`)
happens in a short-lived thread that setns(2)es into it. Namespaces belong to threads, so
neither touches stowd's other threads, and a dedicated thread that ends in the wrong
namespace harms nothing. Everything here blocks: call it from a worker thread.
"""

import os
import threading
from collections.abc import Callable
from typing import TypeVar

from stowd.engine.runtime import mounts
from stowd.engine.runtime.libc import check, libc

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
MS_BIND = 4096


def in_thread(fn: Callable[[], T]) -> T:
    """Run fn in a new thread and return its result (or raise its exception)."""
    result: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            result.append(fn())
        except BaseException as exc:
            error.append(exc)

    t = threading.Thread(target=run, name="stowd-netns", daemon=True)
    t.start()
    t.join()
    if error:
        raise error[0]
    return result[0]


def exists(path: str) -> bool:
    return mounts.is_mounted(path)


def create(path: str) -> None:
    """A new network namespace bind-mounted at path. Idempotent."""
    if exists(path):
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o444)
    os.close(fd)

    def make() -> None:
        check(libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
        source = f"/proc/self/task/{threading.get_native_id()}/ns/net"
        check(libc.mount(source.encode(), path.encode(), None, MS_BIND, None),
               f"bind-mount network namespace at {path}")

    in_thread(make)


def delete(path: str) -> None:
    """Unmount and remove a namespace file. A missing one is not an error."""
    mounts.unmount(path)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def run_in(path: str, fn: Callable[[], T]) -> T:
    """fn() in a thread that has joined the namespace at path (its children inherit it)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)

    def work() -> T:
        check(libc.setns(fd, CLONE_NEWNET), f"setns({path})")
        return fn()

    try:
        return in_thread(work)
    finally:
        os.close(fd)
