"""Restart scheduling: after an exit, restart the container by its policy (restart.py),
remove it (AutoRemove), or leave it. The pending timer lives on its handle."""

import asyncio
import contextlib
import logging
import time

from stowd.engine import restart as policy
from stowd.engine.containers import delete, start
from stowd.engine.containers.context import Ctx
from stowd.engine.core.container import RESTARTING, Container, parse_time

log = logging.getLogger("stowd.restart")


def after_exit(x: Ctx, c: Container, daemon_start: bool = False) -> None:
    """Called once a container's exit is recorded: restart, remove, or leave it."""
    if c.state.status == RESTARTING or policy.should_restart(c, daemon_start):
        schedule(x, c)
    elif c.host_config.get("AutoRemove"):
        x.core.tasks.spawn(auto_remove(x, c))


def schedule(x: Ctx, c: Container) -> None:
    handle = x.core.handles.find(c.id)
    if handle is None:
        return
    delay = policy.next_delay(handle.restart_delay,
                              time.time() - parse_time(c.state.started_at))
    handle.restart_delay = delay
    c.state.status = RESTARTING
    # Queued on the database thread behind any earlier write of this container.
    x.core.db.persist(c)
    if handle.restart_timer is not None:
        handle.restart_timer.cancel()
    handle.restart_timer = asyncio.get_running_loop().call_later(
        delay, lambda: x.core.tasks.spawn(restart_now(x, c)))


async def restart_now(x: Ctx, c: Container) -> None:
    handle = x.core.handles.find(c.id)
    if handle is None:
        return
    handle.restart_timer = None
    async with handle.lock:
        if (c.state.status != RESTARTING or c.state.manually_stopped
                or c.id not in x.core.handles):
            return
        c.restart_count += 1
        try:
            await start.start_locked(x, c, restarting_now=True)
        except Exception as exc:
            log.warning("restart of %s failed: %s", c.short_id, exc)
            await x.core.db.persist(c)
            if policy.should_restart(c):
                schedule(x, c)
            return
    x.core.event(c, "restart")


def cancel(x: Ctx, cid: str) -> None:
    handle = x.core.handles.find(cid)
    if handle is not None:
        handle.cancel_restart()


async def auto_remove(x: Ctx, c: Container) -> None:
    with contextlib.suppress(Exception):
        await delete.remove(x, c.id, force=True)


def revive_at_daemon_start(x: Ctx, containers: list[Container]) -> None:
    """Start, as a user's start would (count reset, the user's stop forgotten), the
    stopped containers whose policy brings them back with the daemon."""
    for c in containers:
        if policy.revive_at_daemon_start(c):
            x.core.tasks.spawn(_start_at_daemon_start(x, c))


async def _start_at_daemon_start(x: Ctx, c: Container) -> None:
    try:
        await start.start(x, c.id)
    except Exception as exc:
        log.warning("restart of %s at daemon start failed: %s", c.short_id, exc)
