"""Named fault points, for tests that walk the daemon's death through each step of a verb.

`STOWD_FAULT=<point>` makes the daemon kill itself with SIGKILL when it reaches that point;
`STOWD_FAULT=<point>=pause` makes it stop there (the step before has happened, the next
never will) so a test can look at the host and kill it then. Unset (always, outside tests)
a point costs one comparison. The points are listed in POINTS, in the order a container
lives through them.
"""

import asyncio
import logging
import os
import signal

log = logging.getLogger("stowd.faults")

POINTS = (
    "create:dirs-made",  # its directory exists, the database does not know it yet
    "create:recorded",  # recorded, not answered
    "start:network-attached",  # namespace, veths, ports set up; no task yet
    "start:task-created",  # `runc create` done: runc init waits, conmon runs, rootfs mounted
    "start:task-started",  # `runc start` done: the process runs, recorded as not running
    "start:recorded",  # recorded running, not answered
    "stop:signalled",  # the stop signal is sent; the exit not yet recorded
    "remove:marked",  # recorded as being removed, nothing removed yet
    "remove:files-gone",  # task, mounts and directory gone, still in the database
)

_SPEC = os.environ.get("STOWD_FAULT", "")
_POINT, _, _MODE = _SPEC.partition("=")


async def fault_point(name: str) -> None:
    """Die or pause here if the environment names this point (tests only)."""
    if name != _POINT:
        return
    if _MODE == "pause":
        log.warning("fault point %s reached: pausing", name)
        await asyncio.Event().wait()
    log.warning("fault point %s reached: SIGKILL", name)
    os.kill(os.getpid(), signal.SIGKILL)
