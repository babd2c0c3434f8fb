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
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stowd.engine.runtime import libc

log = logging.getLogger("stowd.logs")

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

    def on_events(self, callback: Callable[[list[tuple[int, int, bytes]]], None]) -> None:
        """Call back with the events as they come (read at once: the descriptor is
        level-triggered, so unread events would call back again and again)."""
        asyncio.get_running_loop().add_reader(self.fd, lambda: callback(self.events()))

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

    async def changed(self, stop: "asyncio.Future[Any]") -> None:
        """Return once the log's directory changed since the last call, or `stop` is done.
        The caller then reads all there is, so the events themselves do not matter."""
        if self._inotify.events():
            return
        ready = asyncio.get_running_loop().create_future()
        self._inotify.on_events(lambda _: _settle(ready))
        try:
            await asyncio.wait([ready, stop], return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._inotify.off()

    def close(self) -> None:
        self._inotify.close()


ROTATE_GAP = 0.05  # seconds between two size checks while logs are being written


@dataclass
class Rotation:
    """One log to keep under max_size bytes in max_files files."""

    key: str  # the container's id
    log: Path
    ctl: Path  # conmon's control FIFO: "2 0 0" makes it reopen the log
    max_size: int
    max_files: int


class LogRotator:
    """Rotates logs when they pass their size, checked when inotify says they were written.

    A log nobody writes costs nothing (no timer per log, as the 0.2 s poll it replaces); a
    log being written is checked at most every ROTATE_GAP, so a writer can overshoot
    max-size by what it writes in that time (about 4 MB at 90 MB/s)."""

    def __init__(self, rotate: Callable[[list[Rotation]], None]) -> None:
        self._rotate = rotate  # blocking: run in a worker thread with the logs due a check
        self._inotify = Inotify()
        self._by_wd: dict[int, Rotation] = {}
        self._wd: dict[str, int] = {}
        self._written = asyncio.Event()
        self._events: list[tuple[int, int, bytes]] = []

    @property
    def watched(self) -> int:
        return len(self._wd)

    async def watch(self, rotation: Rotation) -> None:
        """Keep this log rotated (again, after a restart: a watch is per directory)."""
        self.unwatch(rotation.key)
        wd = await asyncio.to_thread(self._inotify.add, rotation.log.parent)
        self._by_wd[wd] = rotation
        self._wd[rotation.key] = wd
        await asyncio.to_thread(self._rotate, [rotation])  # it may be past its size already

    def unwatch(self, key: str) -> None:
        wd = self._wd.pop(key, None)
        if wd is not None and self._by_wd.pop(wd, None) is not None:
            self._inotify.remove(wd)

    async def run(self) -> None:
        def arrived(events: list[tuple[int, int, bytes]]) -> None:
            self._events += events
            self._written.set()

        self._inotify.on_events(arrived)
        try:
            while True:
                await self._written.wait()
                self._written.clear()
                due: dict[int, Rotation] = {}
                events, self._events = self._events, []
                for wd, mask, name in events:
                    if mask & libc.IN_IGNORED:  # the directory is gone
                        rotation = self._by_wd.pop(wd, None)
                        if rotation is not None and self._wd.get(rotation.key) == wd:
                            del self._wd[rotation.key]
                    elif (wd in self._by_wd
                          and name == os.fsencode(self._by_wd[wd].log.name)):
                        due[wd] = self._by_wd[wd]
                if due:
                    # Unread, the writes meanwhile coalesce into one event per log.
                    self._inotify.off()
                    try:
                        await asyncio.to_thread(self._rotate, list(due.values()))
                        await asyncio.sleep(ROTATE_GAP)
                    except Exception:  # keep rotating the others
                        log.exception("log rotation failed")
                    finally:
                        self._inotify.on_events(arrived)
        finally:
            self._inotify.off()
            self._inotify.close()


def _settle(ready: "asyncio.Future[None]") -> None:
    if not ready.done():
        ready.set_result(None)
