"""One handle per container: its lock, exit and removal waiters, pidfd watch, attachments,
execs and pending restart, held together and released in one call on removal."""

import asyncio
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from stowd.engine.attach import AttachSession
from stowd.engine.core.container import Container
from stowd.engine.errors import InvalidParameter, NotFound
from stowd.engine.exec import ExecInstance, kill


class ExitStatus:
    """What a waiter learns: the exit code and, for a failed start, the error."""

    def __init__(self, code: int, error: str = "") -> None:
        self.code = code
        self.error = error


Waiters = list["asyncio.Future[ExitStatus]"]


@dataclass(eq=False)
class ContainerHandle:
    container: Container
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    exit_waiters: Waiters = field(default_factory=list)
    removal_waiters: Waiters = field(default_factory=list)
    pidfd: int | None = None
    # Attached clients; `parked` ones hold a StdinOnce container's stdin open (attach.py).
    attachers: set[AttachSession] = field(default_factory=set)
    parked: set[AttachSession] = field(default_factory=set)
    execs: dict[str, ExecInstance] = field(default_factory=dict)
    restart_timer: asyncio.TimerHandle | None = None
    restart_delay: float = 0.0

    def watch(self, fd: int, on_readable: Callable[[], None]) -> None:
        """Follow a pidfd: on_readable runs on the loop once the process has exited."""
        self.unwatch()
        self.pidfd = fd
        asyncio.get_running_loop().add_reader(fd, on_readable)

    def unwatch(self) -> None:
        fd, self.pidfd = self.pidfd, None
        if fd is not None:
            asyncio.get_running_loop().remove_reader(fd)
            os.close(fd)

    def exit_future(self) -> "asyncio.Future[ExitStatus]":
        fut: asyncio.Future[ExitStatus] = asyncio.get_running_loop().create_future()
        self.exit_waiters.append(fut)
        return fut

    def removal_future(self) -> "asyncio.Future[ExitStatus]":
        fut: asyncio.Future[ExitStatus] = asyncio.get_running_loop().create_future()
        self.removal_waiters.append(fut)
        return fut

    def exited(self, status: ExitStatus) -> None:
        """Tell the exit waiters, and let go of the parked attachments."""
        resolve(self.exit_waiters, status)
        self.exit_waiters = []
        self.close_parked()

    def close_parked(self) -> None:
        parked, self.parked = self.parked, set()
        for session in parked:
            session.close()

    def cancel_restart(self) -> None:
        if self.restart_timer is not None:
            self.restart_timer.cancel()
            self.restart_timer = None
        self.restart_delay = 0.0


def resolve(waiters: Waiters, status: ExitStatus) -> None:
    for fut in waiters:
        if not fut.done():
            fut.set_result(status)


class Handles:
    """The containers the engine knows, by ID, and the execs they run."""

    def __init__(self) -> None:
        self._by_id: dict[str, ContainerHandle] = {}
        self._execs: dict[str, ExecInstance] = {}

    def add(self, c: Container) -> ContainerHandle:
        handle = ContainerHandle(c)
        self._by_id[c.id] = handle
        return handle

    def __contains__(self, cid: str) -> bool:
        return cid in self._by_id

    def __iter__(self) -> Iterator[ContainerHandle]:
        return iter(list(self._by_id.values()))

    def find(self, cid: str) -> ContainerHandle | None:
        return self._by_id.get(cid)

    def of(self, c: Container) -> ContainerHandle:
        """The handle of a known container; NotFound once it is removed."""
        handle = self._by_id.get(c.id)
        if handle is None:
            raise NotFound(f"No such container: {c.id}")
        return handle

    def lock(self, cid: str) -> asyncio.Lock:
        """The container's lock (a fresh one once it is gone: nothing is left to guard)."""
        handle = self._by_id.get(cid)
        return handle.lock if handle is not None else asyncio.Lock()

    def get(self, ref: str) -> Container:
        """By full ID, name (with or without /), or unique ID prefix, as Docker resolves."""
        if not ref:
            raise InvalidParameter('invalid name or ID supplied: ""')
        handle = self._by_id.get(ref)
        if handle is not None:
            return handle.container
        name = ref.lstrip("/")
        for h in self._by_id.values():
            if h.container.name == name:
                return h.container
        matches = [h.container for h in self._by_id.values() if h.container.id.startswith(ref)]
        if len(matches) > 1:
            raise InvalidParameter(f"multiple IDs found with provided prefix: {ref}")
        if not matches:
            raise NotFound(f"No such container: {ref}")
        return matches[0]

    def containers(self) -> list[Container]:
        """Newest first, as Docker lists them."""
        return sorted((h.container for h in self._by_id.values()), key=lambda c: c.created,
                      reverse=True)

    def ids(self) -> set[str]:
        return set(self._by_id)

    def add_exec(self, handle: ContainerHandle, inst: ExecInstance) -> None:
        handle.execs[inst.id] = inst
        self._execs[inst.id] = inst

    def exec(self, exec_id: str) -> ExecInstance:
        inst = self._execs.get(exec_id)
        if inst is None:
            raise NotFound(f"No such exec instance: {exec_id}")
        return inst

    def remove(self, cid: str) -> Waiters:
        """Forget the container: stop watching it, end its attachments, kill its execs,
        cancel its restart. Returns its exit and removal waiters, for the caller to
        resolve once the removal is complete."""
        handle = self._by_id.pop(cid, None)
        if handle is None:
            return []
        handle.unwatch()
        handle.cancel_restart()
        for session in handle.attachers:
            session.end()
        handle.attachers.clear()
        handle.close_parked()
        for exec_id, inst in handle.execs.items():
            self._execs.pop(exec_id, None)
            kill(inst)
        handle.execs.clear()
        waiters = handle.exit_waiters + handle.removal_waiters
        handle.exit_waiters, handle.removal_waiters = [], []
        return waiters

    def close(self) -> None:
        """Stop watching every container (they keep running) and cancel pending restarts."""
        for handle in self._by_id.values():
            handle.unwatch()
            handle.cancel_restart()
