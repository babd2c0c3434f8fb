"""Exits: follow each container's conmon through a pidfd, record the exit, tell the
waiters, tear the task down, and hand the container to its restart policy."""

import asyncio
import logging
import os
import time

from stowd.engine.containers import delete, restarting, task
from stowd.engine.containers.context import Ctx
from stowd.engine.core.container import (
    EXITED,
    REMOVING,
    RESTARTING,
    RUNNING,
    Container,
    parse_time,
    rfc3339_nano,
)
from stowd.engine.core.handles import ExitStatus
from stowd.engine.errors import InvalidParameter
from stowd.engine.restart import should_restart
from stowd.engine.runtime import mounts
from stowd.engine.runtime.oci import kill_and_wait, process_alive

log = logging.getLogger("stowd.engine")

WAIT_CONDITIONS = ("not-running", "next-exit", "removed")


def watch(x: Ctx, c: Container) -> bool:
    """Follow conmon's exit through a pidfd; False when it is gone already."""
    handle = x.core.handles.of(c)
    handle.unwatch()
    conmon_pid = c.state.conmon_pid
    try:
        fd = os.pidfd_open(conmon_pid)
    except (OSError, ValueError):
        x.core.tasks.spawn(handle_exit(x, c.id, conmon_pid))
        return False
    handle.watch(fd, lambda: on_conmon_exit(x, c.id, conmon_pid))
    return True


def on_conmon_exit(x: Ctx, cid: str, conmon_pid: int) -> None:
    handle = x.core.handles.find(cid)
    if handle is not None:
        handle.unwatch()
    x.core.tasks.spawn(handle_exit(x, cid, conmon_pid))


async def handle_exit(x: Ctx, cid: str, conmon_pid: int, at_daemon_start: bool = False) -> None:
    """Record an exit, then restart, remove or leave the container. An exit found while the
    daemon starts is left `exited` for revive_at_daemon_start, which starts it as dockerd's
    restore does (a user's start: count reset)."""
    handle = x.core.handles.find(cid)
    if handle is None:
        return
    c = handle.container
    async with handle.lock:
        if c.state.conmon_pid != conmon_pid or not c.state.live:
            return
        record = await asyncio.to_thread(x.runtime.read_exit, cid)
        oom = await asyncio.to_thread(os.path.exists, x.runtime.conmon_dir / cid / "oom")
        st = c.state
        started = st.started_at
        st.exit_code = record.code if record else 255
        st.finished_at = rfc3339_nano(record.finished_at if record else None)
        st.pid = 0
        st.conmon_pid = 0
        st.oom_killed = oom
        x.health.stop(c)  # healthchecks: no more probes; reads unhealthy as dockerd
        # Decided now, with the exit, so nobody sees it "exited" before it restarts.
        st.status = RESTARTING if should_restart(c) and not at_daemon_start else EXITED
        await x.core.db.persist(c)
        duration = max(0.0, time.time() - parse_time(started))
        x.core.event(c, "die", exitCode=str(st.exit_code), execDuration=str(int(duration)))
        handle.exited(ExitStatus(st.exit_code))
        # Waiters already have the exit; the teardown (runtime state, cgroups, rootfs
        # mount) finishes under the lock, before anything can start or remove it.
        await asyncio.to_thread(task.teardown_task, x, c, True)
    if not (at_daemon_start and should_restart(c, daemon_start=True)):
        restarting.after_exit(x, c)


async def recover(x: Ctx, c: Container) -> None:
    """Reconcile one container with what conmon and the runtime say after a restart."""
    status = c.state.status
    if c.state.live:
        alive = await asyncio.to_thread(process_alive, c.state.conmon_pid, c.id)
        if alive and watch(x, c):
            await x.network.reattach(c)  # networking: hold its ports, serve its DNS
            if status == RUNNING:
                x.health.start(c, reset=False)  # healthchecks: probing goes on
            return
        await handle_exit(x, c.id, c.state.conmon_pid, at_daemon_start=True)
    elif status == RESTARTING:
        # Its pending restart died with the old daemon: revive_at_daemon_start decides.
        c.state.status = EXITED
        await x.core.db.persist(c)
    elif status == REMOVING:
        await delete.finish_remove(x, c)
    elif await asyncio.to_thread(_holds_task, x, c):
        # The daemon died inside start, before the container was recorded running: the
        # start was never answered, so it is rolled back (docs/design.md, Recovery).
        log.warning("%s: rolling back a start the daemon did not finish", c.short_id)
        await asyncio.to_thread(_roll_back_start, x, c)
        c.state.pid = 0
        c.state.conmon_pid = 0
        await x.core.db.persist(c)


def _holds_task(x: Ctx, c: Container) -> bool:
    """Blocking: whether the host holds anything of a start (a task, conmon, the rootfs
    mount, a network namespace) for a container not recorded as running."""
    return (x.runtime.has_task(c.id) or bool(c.network.get("sandbox"))
            or x.runtime.conmon_of(c.id) > 0
            or mounts.is_mounted(str(x.core.dir(c).rootfs)))


def _roll_back_start(x: Ctx, c: Container) -> None:
    """Blocking: undo an unfinished start: the task (even if its process runs), conmon,
    mounts, network; then the container is as its record says."""
    conmon = x.runtime.conmon_of(c.id)
    task.teardown_task(x, c)  # `runtime delete --force` kills the task's processes
    if conmon > 0:
        kill_and_wait(conmon)


def wait(x: Ctx, ref: str, condition: str) -> "asyncio.Future[ExitStatus]":
    """Register a waiter at once (so a fast exit is never missed) and return it."""
    if condition not in WAIT_CONDITIONS:
        raise InvalidParameter(f'invalid condition: "{condition}"')
    c = x.core.handles.get(ref)
    handle = x.core.handles.of(c)
    if condition == "removed":
        return handle.removal_future()
    if condition == "not-running" and not c.state.running:
        fut: asyncio.Future[ExitStatus] = asyncio.get_running_loop().create_future()
        fut.set_result(ExitStatus(c.state.exit_code, c.state.error))
        return fut
    return handle.exit_future()
