"""`docker start`: attach the network, create the task, start it, under the container's
lock; a failed start is undone and recorded."""

import asyncio
import logging

from stowd.engine.containers import links, monitor, restarting, task
from stowd.engine.containers.context import Ctx
from stowd.engine.core.container import (
    CREATED,
    DEAD,
    EXITED,
    PAUSED,
    REMOVING,
    RUNNING,
    Container,
    rfc3339_nano,
)
from stowd.engine.errors import (
    Conflict,
    EngineError,
    InvalidParameter,
    NotFound,
    NotModified,
    SystemError_,
)
from stowd.engine.faults import fault_point
from stowd.engine.runtime.oci import RuntimeError_

log = logging.getLogger("stowd.engine")


async def start(x: Ctx, ref: str) -> None:
    c = x.core.handles.get(ref)
    async with x.core.handles.lock(c.id):
        await start_locked(x, c)


async def start_locked(x: Ctx, c: Container, restarting_now: bool = False) -> None:
    """Start c; the caller holds its lock."""
    handle = x.core.handles.of(c)
    st = c.state
    if st.status == PAUSED:
        raise Conflict("cannot start a paused container, try unpause instead")
    if st.status == RUNNING:
        raise NotModified("container already started")
    if st.status in (REMOVING, DEAD):
        raise Conflict("container is marked for removal and cannot be started")
    if not restarting_now:
        handle.cancel_restart()
        c.restart_count = 0  # a user's start begins a new count (dockerd)
    image = await asyncio.to_thread(x.images.find, c.image_id)
    if image is None:
        raise NotFound(f"No such image: {c.image_id}")
    links.check(x, c)  # legacy links: their targets must run
    try:
        await x.network.attach(c)  # networking: namespace, addresses, ports, DNS
        await fault_point("start:network-attached")
        pid, conmon_pid = await asyncio.to_thread(task.create_task, x, c, image)
    except (EngineError, OSError) as exc:
        await start_failed(x, c, exc)
        raise
    st.conmon_pid = conmon_pid
    st.pid = pid
    await fault_point("start:task-created")
    monitor.watch(x, c)
    await connect_attachers(x, c)
    try:
        await asyncio.to_thread(x.runtime.start, c.id)
    except RuntimeError_ as exc:
        await start_failed(x, c, exc)
        raise
    await fault_point("start:task-started")
    st.status = RUNNING
    st.started_at = rfc3339_nano()
    st.exit_code = 0
    st.error = ""
    st.oom_killed = False
    st.has_been_started = True
    if not restarting_now:
        st.manually_stopped = False
    x.health.start(c)  # healthchecks: starting, first probe an interval from now
    await x.core.db.persist(c)
    x.core.event(c, "start")
    await links.refresh_parents(x, c)  # legacy links: the parents' /etc/hosts follow
    await fault_point("start:recorded")


async def connect_attachers(x: Ctx, c: Container) -> None:
    """Connect clients that attached before start, so they see the first byte."""
    handle = x.core.handles.find(c.id)
    if handle is None:
        return
    bundle = str(x.core.dir(c).bundle)
    for session in list(handle.attachers):
        if not session.connected.is_set() and not session.closed:
            try:
                await session.connect(bundle)
            except OSError as exc:
                log.warning("attach to %s failed: %s", c.short_id, exc)
                session.end()


async def start_failed(x: Ctx, c: Container, exc: Exception) -> None:
    """Undo a half-made start; the container stays as it was, with the error recorded."""
    handle = x.core.handles.find(c.id)
    if handle is not None:
        handle.unwatch()
    await asyncio.to_thread(task.teardown_task, x, c)
    message = exc.message if isinstance(exc, SystemError_ | InvalidParameter) else str(exc)
    code = 128
    lowered = message.lower()
    if "executable file not found" in lowered or "no such file or directory" in lowered:
        code = 127
    elif "permission denied" in lowered:
        code = 126
    c.state.error = message
    c.state.exit_code = code
    c.state.pid = 0
    c.state.conmon_pid = 0
    if c.state.status not in (CREATED, EXITED):
        c.state.status = EXITED
    await x.core.db.persist(c)
    if c.host_config.get("AutoRemove"):
        # As Docker: a --rm container whose start failed is removed (`docker run --rm`
        # waits for that), once this start has let go of the container's lock.
        x.core.tasks.spawn(restarting.auto_remove(x, c))
    if isinstance(exc, RuntimeError_) and code in (126, 127):
        # The user's command is at fault, not the host: Docker answers 400.
        raise InvalidParameter(message) from exc
