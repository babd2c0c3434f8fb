"""Attach, detach and resize: clients joined to a container's stdio through conmon."""

import asyncio
import logging

from stowd.engine.attach import AttachSession, parse_detach_keys
from stowd.engine.containers import task
from stowd.engine.containers.context import Ctx
from stowd.engine.core.container import PAUSED, RESTARTING, RUNNING, Container
from stowd.engine.errors import Conflict, InvalidParameter

log = logging.getLogger("stowd.engine")


async def attach(x: Ctx, ref: str, *, stdin: bool, stdout: bool, stderr: bool,
                 detach_keys: str | None = None) -> tuple[Container, AttachSession]:
    """Register an attachment; it connects now if the container runs, else at start."""
    c = x.core.handles.get(ref)
    keys = parse_detach_keys(detach_keys)
    if c.state.status == PAUSED:
        raise Conflict("You cannot attach to a paused container, unpause it first")
    if c.state.status == RESTARTING:
        raise Conflict("You cannot attach to a restarting container, wait until it is "
                       "running")
    session = AttachSession(c.id, stdin and bool(c.config.get("OpenStdin")), stdout,
                            stderr, keys, stdin_once=bool(c.config.get("StdinOnce")))
    x.core.handles.of(c).attachers.add(session)
    if c.state.status == RUNNING:
        try:
            await session.connect(str(x.core.dir(c).bundle))
        except OSError:
            session.end()
    x.core.event(c, "attach")
    return c, session


def detach(x: Ctx, session: AttachSession) -> None:
    handle = x.core.handles.find(session.container_id)
    if handle is None:
        session.close()
        return
    handle.attachers.discard(session)
    c = handle.container
    log.debug("detach %s: ok=%s stdin_closed=%s", session.container_id[:12],
              session.connected_ok, session.stdin_closed)
    if (c.state.live and session.connected_ok and not session.stdin_closed
            and c.config.get("OpenStdin") and c.config.get("StdinOnce")):
        # conmon closes a StdinOnce container's stdin when any attach connection ends,
        # but Docker keeps it open when a client detaches: hold the connection (its
        # output drained) until the container exits.
        session.park()
        handle.parked.add(session)
        return
    session.close()


async def resize(x: Ctx, ref: str, height: int, width: int) -> None:
    c = x.core.handles.get(ref)
    if not c.state.live:
        raise Conflict(f"Container {c.id} is not running")
    if height < 0 or width < 0:
        raise InvalidParameter("invalid terminal size")
    await asyncio.to_thread(task.write_ctl, x.core.dir(c).ctl, f"1 {height} {width}\n")
    x.core.event(c, "resize", height=str(height), width=str(width))
