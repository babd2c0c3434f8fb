"""`docker rm` and container prune: kill if forced, tear down, forget the container in one
call (handles.remove), delete its record and files."""

import asyncio

from stowd.engine.containers import restarting, stop, task, usage
from stowd.engine.containers.context import Ctx
from stowd.engine.core.container import PAUSED, REMOVING, Container, parse_time
from stowd.engine.core.handles import ExitStatus, resolve
from stowd.engine.errors import Conflict, NotFound, SystemError_
from stowd.engine.faults import fault_point
from stowd.engine.labels import labels_match
from stowd.engine.runtime import mounts
from stowd.engine.timespec import parse_until


async def remove(x: Ctx, ref: str, force: bool = False, volumes: bool = False) -> None:
    c = x.core.handles.get(ref)
    if c.state.status == REMOVING:
        raise Conflict(f"removal of container {c.name} is already in progress")
    if c.state.running and not force:
        if c.state.status == PAUSED:
            raise Conflict(f'cannot remove container "/{c.name}": container is paused and '
                           "must be unpaused first")
        raise Conflict(f'cannot remove container "/{c.name}": container is running: stop '
                       "the container before removing or force remove")
    restarting.cancel(x, c.id)
    if c.state.live:
        c.state.manually_stopped = True
        if not await stop.kill_and_wait(x, c):
            raise SystemError_(f"cannot remove container \"/{c.name}\": could not kill it")
    async with x.core.handles.lock(c.id):
        if c.id not in x.core.handles:
            return
        c.state.status = REMOVING
        await x.core.db.persist(c)
        await fault_point("remove:marked")
        await finish_remove(x, c, volumes)


async def finish_remove(x: Ctx, c: Container, volumes: bool = False) -> None:
    x.health.forget(c.id)
    await asyncio.to_thread(remove_files, x, c)
    await fault_point("remove:files-gone")
    await x.core.db.run(x.core.db.opened.delete_container, c.id)
    waiters = x.core.handles.remove(c.id)
    x.core.event(c, "destroy")
    await x.volumes.container_removed(c, volumes)  # volumes: rm -v, AutoRemove
    resolve(waiters, ExitStatus(c.state.exit_code))


def remove_files(x: Ctx, c: Container) -> None:
    """Blocking: the task down, then the directory away (renamed now, deleted after)."""
    task.teardown_task(x, c)
    if mounts.is_mounted(str(x.core.dir(c).rootfs)):
        raise SystemError_(f"rootfs of {c.id} is still mounted")
    x.core.layout.discard(c.id)


async def prune(x: Ctx, filters: dict[str, list[str]]) -> tuple[list[str], int]:
    """Remove every stopped container the filters select (until, label)."""
    until = parse_until(filters["until"][0]) if filters.get("until") else None
    removed: list[str] = []
    reclaimed = 0
    for handle in x.core.handles:
        c = handle.container
        if c.state.running or c.state.status == REMOVING:
            continue
        if until is not None and parse_time(c.created) >= until:
            continue
        if not labels_match(c.config.get("Labels") or {}, filters.get("label", []),
                            filters.get("label!", [])):
            continue
        size, _ = await usage.container_sizes(x, c)
        try:
            await remove(x, c.id)
        except (Conflict, NotFound):
            continue
        removed.append(c.id)
        reclaimed += size
    x.core.events.publish("container", "prune", "", {"reclaimed": str(reclaimed)})
    return removed, reclaimed
