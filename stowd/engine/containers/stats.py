"""Resource samples of a running container (cgroup and network counters)."""

import asyncio
import time

from stowd.engine.containers import task
from stowd.engine.containers.context import Ctx
from stowd.engine.core.container import Container
from stowd.engine.stats import Sample


async def sample(x: Ctx, c: Container) -> Sample | None:
    """A sample of a running container (kept as its last one); None when it is not."""
    if not c.state.live or c.state.pid <= 0:
        return None
    x.stats.prune(x.core.handles.ids())
    # A host-network container has no interfaces of its own (dockerd shows none).
    net_pid = 0 if c.host_config.get("NetworkMode") == "host" else c.state.pid
    return await asyncio.to_thread(x.stats.sample, c.id, task.cgroup_path(x, c), net_pid)


async def pair(x: Ctx, c: Container) -> tuple[Sample | None, Sample | None]:
    """(sample, an earlier sample) for precpu: the kept one when fit, else a fresh one
    read StatsCollector.MIN_SPAN before."""
    collector = x.stats
    now = time.time()
    earlier = collector.previous(c.id, now)
    if earlier is None:
        wait = collector.wait_needed(c.id, now)
        earlier = collector.last(c.id) if wait >= 0 else await sample(x, c)
        if earlier is None:
            return None, None
        await asyncio.sleep(wait if wait >= 0 else collector.MIN_SPAN)
    new = await sample(x, c)
    return new, earlier if new is not None else None
