"""Restart policies: whether an exited container starts again, and when.

Docker's rules: `no` never; `always` after any exit; `unless-stopped` likewise unless the
user stopped it; `on-failure[:N]` after a non-zero exit while fewer than N restarts were
made (a user's start resets the count). A user's stop or kill cancels a pending restart.
The delay starts at 100 ms and doubles per restart up to a minute; a run of 10 s or more
resets it. When the daemon starts, stopped containers whose policy says so start again:
`always` even after a user's stop (dockerd's restore), the others only if not user-stopped.
"""

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from stowd.engine.containers import EXITED, RESTARTING, Container, parse_time

if TYPE_CHECKING:
    from stowd.engine.engine import Engine

log = logging.getLogger("stowd.restart")

INITIAL_DELAY = 0.1
MAX_DELAY = 60.0
RESET_AFTER = 10.0


def should_restart(c: Container, daemon_start: bool = False) -> bool:
    policy = c.host_config.get("RestartPolicy") or {}
    name = policy.get("Name") or "no"
    if name == "no":
        return False
    if name == "always":
        # Docker restarts `always` containers at daemon start even if they were stopped.
        return daemon_start or not c.state.manually_stopped
    if c.state.manually_stopped:
        return False
    if name == "unless-stopped":
        return True
    if name == "on-failure":
        limit = policy.get("MaximumRetryCount") or 0
        return c.state.exit_code != 0 and (limit == 0 or c.restart_count < limit)
    return False


class RestartManager:
    def __init__(self, engine: "Engine") -> None:
        self.engine = engine
        self._pending: dict[str, asyncio.TimerHandle] = {}
        self._delays: dict[str, float] = {}

    def after_exit(self, c: Container, daemon_start: bool = False) -> None:
        """Called once a container's exit is recorded: restart, remove, or leave it."""
        if c.state.status == RESTARTING or should_restart(c, daemon_start):
            self._schedule(c)
        elif c.host_config.get("AutoRemove"):
            self.engine._spawn(self.auto_remove(c))

    def _schedule(self, c: Container) -> None:
        ran_for = time.time() - parse_time(c.state.started_at)
        delay = self._delays.get(c.id, INITIAL_DELAY / 2) * 2
        if ran_for >= RESET_AFTER:
            delay = INITIAL_DELAY
        delay = min(max(delay, INITIAL_DELAY), MAX_DELAY)
        self._delays[c.id] = delay
        c.state.status = RESTARTING
        # Queued on the database thread behind any earlier write of this container.
        self.engine._persist(c)
        loop = asyncio.get_running_loop()
        self._pending[c.id] = loop.call_later(
            delay, lambda: self.engine._spawn(self._restart(c)))

    async def _restart(self, c: Container) -> None:
        self._pending.pop(c.id, None)
        async with self.engine._lock(c.id):
            if (c.state.status != RESTARTING or c.state.manually_stopped
                    or c.id not in self.engine._containers):
                return
            c.restart_count += 1
            try:
                await self.engine._start_locked(c, restarting=True)
            except Exception as exc:
                log.warning("restart of %s failed: %s", c.short_id, exc)
                await self.engine._persist(c)
                if should_restart(c):
                    self._schedule(c)
                return
        self.engine._event(c, "restart")

    def revive_at_daemon_start(self, containers: list[Container]) -> None:
        """dockerd's restore: a stopped container whose policy says so starts again when the
        daemon starts — `always` even after a user's stop, `unless-stopped` and
        `on-failure` (non-zero exit, retries left) only if the user did not stop it. Started
        as a user's start would (count reset, the user's stop forgotten)."""
        for c in containers:
            if (c.state.status == EXITED and c.state.has_been_started
                    and should_restart(c, daemon_start=True)):
                self.engine._spawn(self._start_at_daemon_start(c))

    async def _start_at_daemon_start(self, c: Container) -> None:
        try:
            await self.engine.start(c.id)
        except Exception as exc:
            log.warning("restart of %s at daemon start failed: %s", c.short_id, exc)

    async def auto_remove(self, c: Container) -> None:
        with contextlib.suppress(Exception):
            await self.engine.remove(c.id, force=True)

    def cancel(self, cid: str) -> None:
        handle = self._pending.pop(cid, None)
        if handle is not None:
            handle.cancel()
        self._delays.pop(cid, None)

    def cancel_all(self) -> None:
        for cid in list(self._pending):
            self.cancel(cid)
