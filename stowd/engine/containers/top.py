"""`docker top`: ps over the processes of the container's cgroup."""

import asyncio

from stowd.engine import top as ps_top
from stowd.engine.containers.context import Ctx
from stowd.engine.core.container import RESTARTING
from stowd.engine.errors import Conflict


async def top(x: Ctx, ref: str, ps_args: str = "-ef") -> tuple[list[str], list[list[str]]]:
    c = x.core.handles.get(ref)
    if c.state.status == RESTARTING:
        raise Conflict(f"Container {c.id} is restarting, wait until the container is "
                       "running")
    if not c.state.live:
        raise Conflict(f"Container {c.id} is not running")
    pids = set(await asyncio.to_thread(x.runtime.pids, c.id))
    return await asyncio.to_thread(ps_top.ps_table, ps_args or "-ef", pids)
