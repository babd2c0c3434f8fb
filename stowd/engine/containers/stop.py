"""stop, kill, restart, pause and unpause: signals to a running container, and the one
"SIGKILL, then wait for the exit" every forced stop ends with."""

import asyncio
import contextlib
import signal

from stowd.engine.containers import restarting, start
from stowd.engine.containers.context import Ctx
from stowd.engine.core.container import EXITED, PAUSED, RESTARTING, RUNNING, Container
from stowd.engine.core.handles import ExitStatus
from stowd.engine.errors import Conflict, NotModified, SystemError_
from stowd.engine.faults import fault_point
from stowd.engine.runtime.oci import RuntimeError_
from stowd.engine.signals import parse_signal

KILL_WAIT = 10.0


async def stop(x: Ctx, ref: str, timeout: int | None = None, sig: str | None = None) -> None:
    c = x.core.handles.get(ref)
    if c.state.status == RESTARTING:
        async with x.core.handles.lock(c.id):
            # The restart may have won the lock first; then this is a normal stop.
            if c.state.status == RESTARTING:
                restarting.cancel(x, c.id)
                c.state.manually_stopped = True
                c.state.status = EXITED
                await x.core.db.persist(c)
                x.core.event(c, "stop")
                return
    if not c.state.live:
        raise NotModified("container is already stopped")
    await user_stop(x, c, timeout, sig)


async def user_stop(x: Ctx, c: Container, timeout: int | None, sig: str | None) -> None:
    """A stop the user asked for (stop, restart): the StopSignal, then SIGKILL after the
    timeout. Marked manual first, so the restart policy leaves the exit alone."""
    signum = parse_signal(sig or c.config.get("StopSignal") or "SIGTERM")
    if timeout is None:
        timeout = c.config.get("StopTimeout")
        if timeout is None:
            timeout = x.core.settings.stop_timeout
    c.state.manually_stopped = True
    await x.core.db.persist(c)
    await stop_with(x, c, signum, timeout)
    x.core.event(c, "stop")


async def stop_with(x: Ctx, c: Container, signum: int, timeout: float) -> None:
    """Send signum, give the container timeout seconds, then SIGKILL."""
    exited = x.core.handles.of(c).exit_future()
    try:
        await send_signal(x, c, signum)
    except RuntimeError_:
        timeout = min(timeout, 2) if timeout >= 0 else 2
    await fault_point("stop:signalled")
    if await exit_within(exited, None if timeout < 0 else timeout):
        return
    if not await kill_and_wait(x, c, exited):
        raise SystemError_(f"cannot stop container: {c.name}: tried to kill container, "
                           "but did not receive an exit event")


async def kill_and_wait(x: Ctx, c: Container,
                        exited: "asyncio.Future[ExitStatus] | None" = None) -> bool:
    """SIGKILL, then wait up to KILL_WAIT for the exit; False when it did not come.
    `exited` is a waiter registered before an earlier signal, so no exit is missed."""
    if exited is None:
        exited = x.core.handles.of(c).exit_future()
    with contextlib.suppress(RuntimeError_):
        await send_signal(x, c, signal.SIGKILL)
    return await exit_within(exited, KILL_WAIT)


async def exit_within(exited: "asyncio.Future[ExitStatus]", seconds: float | None) -> bool:
    """Whether the exit came within `seconds` (None: however long it takes); the waiter
    stays registered either way."""
    try:
        await asyncio.wait_for(asyncio.shield(exited), seconds)
    except TimeoutError:
        return False
    return True


async def send_signal(x: Ctx, c: Container, signum: int) -> None:
    x.core.event(c, "kill", signal=str(signum))
    await asyncio.to_thread(x.runtime.kill, c.id, signum, True)
    if c.state.status == PAUSED and signum == signal.SIGKILL:
        with contextlib.suppress(RuntimeError_):
            await asyncio.to_thread(x.runtime.resume, c.id)


async def kill(x: Ctx, ref: str, sig: str | None = None) -> None:
    signum = parse_signal(sig) if sig else int(signal.SIGKILL)
    c = x.core.handles.get(ref)
    if not c.state.live:
        raise Conflict(f"cannot kill container: {c.name}: container {c.id} is not running")
    c.state.manually_stopped = True
    restarting.cancel(x, c.id)
    await x.core.db.persist(c)
    exited = x.core.handles.of(c).exit_future()
    try:
        await send_signal(x, c, signum)
    except RuntimeError_ as exc:
        raise SystemError_(f"cannot kill container: {c.name}: {exc.message}") from exc
    if signum == signal.SIGKILL:  # a slow exit is not kill's failure: it was signalled
        await exit_within(exited, KILL_WAIT)


async def restart(x: Ctx, ref: str, timeout: int | None = None, sig: str | None = None) -> None:
    c = x.core.handles.get(ref)
    restarting.cancel(x, c.id)
    if c.state.live:
        await user_stop(x, c, timeout, sig)
    elif c.state.status == RESTARTING:
        c.state.status = EXITED
    async with x.core.handles.lock(c.id):
        with contextlib.suppress(NotModified):
            await start.start_locked(x, c)
    x.core.event(c, "restart")


async def pause(x: Ctx, ref: str) -> None:
    c = x.core.handles.get(ref)
    async with x.core.handles.lock(c.id):
        if c.state.status == PAUSED:
            raise Conflict(f"Container {c.id} is already paused")
        if c.state.status != RUNNING:
            raise Conflict(f"Container {c.id} is not running")
        await asyncio.to_thread(x.runtime.pause, c.id)
        c.state.status = PAUSED
        x.health.pause(c)
        await x.core.db.persist(c)
        x.core.event(c, "pause")


async def unpause(x: Ctx, ref: str) -> None:
    c = x.core.handles.get(ref)
    async with x.core.handles.lock(c.id):
        if c.state.status != PAUSED:
            raise Conflict(f"Container {c.id} is not paused")
        await asyncio.to_thread(x.runtime.resume, c.id)
        c.state.status = RUNNING
        x.health.resume(c)
        await x.core.db.persist(c)
        x.core.event(c, "unpause")
