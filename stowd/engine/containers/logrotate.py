"""Log rotation of running containers whose log options keep more than one file."""

import logging

from stowd.engine.containers import task
from stowd.engine.containers.context import Ctx
from stowd.engine.core.container import Container
from stowd.engine.errors import Conflict
from stowd.engine.logs import parse_log_options, rotate
from stowd.engine.logwatch import LogRotator, Rotation

log = logging.getLogger("stowd.engine")


async def rotate_logs_forever(x: Ctx) -> None:
    """Rotate the logs of running containers with max-file > 1 once they reach max-size.

    conmon writes the log; stowd renames it and asks conmon (its ctl FIFO, message 2)
    to reopen the path, so nothing is lost or copied. inotify says when a log was
    written (logwatch.LogRotator); start and die events say which logs to watch."""
    events = x.core.events.subscribe()
    rotator = LogRotator(_rotate_due)
    x.core.tasks.spawn(rotator.run())
    for handle in x.core.handles:
        if handle.container.state.live:
            await _watch_log(x, rotator, handle.container)
    while True:
        event = await events.get()
        if event.type != "container":
            continue
        started = x.core.handles.find(event.actor_id)
        if event.action == "start" and started is not None:
            await _watch_log(x, rotator, started.container)
        elif event.action in ("die", "destroy"):
            rotator.unwatch(event.actor_id)


async def _watch_log(x: Ctx, rotator: LogRotator, c: Container) -> None:
    max_size, max_files = parse_log_options(c.host_config.get("LogConfig"))
    if max_files > 1:
        d = x.core.dir(c)
        try:
            await rotator.watch(Rotation(c.id, d.log, d.ctl, max_size, max_files))
        except OSError as exc:  # removed meanwhile
            log.warning("cannot watch the log of %s: %s", c.short_id, exc)


def _rotate_due(due: list[Rotation]) -> None:
    for r in due:
        try:
            if r.log.stat().st_size < r.max_size:
                continue
            rotate(str(r.log), r.max_files)
            task.write_ctl(r.ctl, "2 0 0\n")
        except (OSError, Conflict) as exc:
            log.warning("log rotation of %s failed: %s", r.log, exc)
