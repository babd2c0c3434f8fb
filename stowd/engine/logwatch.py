"""Knowing when a container's log changed, from inotify instead of a timer.

conmon writes `ctr.log` in the container's directory; a size-limited log is renamed to
`ctr.log.1` and conmon opens a new `ctr.log`. A watch on the directory sees both (a write
to any file in it, a file created or moved into it) and costs nothing while nothing is
written: an idle follower or an idle rotated log wakes nobody. Events of one kind on one
file coalesce in the kernel while unread, so a fast writer wakes a reader at most once per
read, however many writes it made meanwhile.

The libc calls are in runtime/libc.py (a dozen lines of ctypes, as for mounts): the
asyncio inotify packages run `ldconfig` in a subprocess when imported, which a daemon that
imports routes on its event loop cannot afford.
"""

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

from stowd.engine.runtime import libc

CHANGES = libc.IN_MODIFY | libc.IN_CREATE | libc.IN_MOVED_TO


class Inotify:
    """One inotify descriptor, read on the event loop (it is non-blocking)."""

    def __init__(self) -> None:
        self.fd = libc.inotify_init()

    def add(self, directory: Path) -> int:
        """Watch a directory for CHANGES; blocking (a path lookup): from a worker thread."""
        return libc.inotify_add_watch(self.fd, str(directory), CHANGES)

    def remove(self, wd: int) -> None:
        libc.inotify_rm_watch(self.fd, wd)

    def events(self) -> list[tuple[int, int, bytes]]:
        return libc.inotify_events(self.fd)

    def on_ready(self, callback: Callable[[], None]) -> None:
        asyncio.get_running_loop().add_reader(self.fd, callback)

    def off(self) -> None:
        asyncio.get_running_loop().remove_reader(self.fd)

    def close(self) -> None:
        os.close(self.fd)


class LogWatch:
    """Wake-ups for one reader of one log (`logs --follow`)."""

    def __init__(self, log: Path) -> None:
        """Blocking (a path lookup): call from a worker thread."""
        self._inotify = Inotify()
        try:
            self._inotify.add(log.parent)
        except BaseException:
            self._inotify.close()
            raise

    async def changed(self, stop: "asyncio.Future[object]") -> None:
        """Return once the log's directory changed since the last call, or `stop` is done.
        The caller then reads all there is, so the events themselves do not matter."""
        if self._inotify.events():
            return
        ready = asyncio.get_running_loop().create_future()
        self._inotify.on_ready(lambda: ready.done() or ready.set_result(None))
        try:
            await asyncio.wait([ready, stop], return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._inotify.off()
            self._inotify.events()

    def close(self) -> None:
        self._inotify.close()
