"""`docker update` (resources applied live, restart policy) and `docker rename`."""

import asyncio
import os
from typing import Any

from stowd.engine import create as rules
from stowd.engine import names
from stowd.engine.containers.context import Ctx
from stowd.engine.errors import Conflict, InvalidParameter, SystemError_
from stowd.engine.resources import check_resources
from stowd.engine.runtime.oci import RuntimeError_
from stowd.engine.runtime.spec import resources_from_host_config
from stowd.engine.store import NameTaken, name_conflict

UPDATABLE = ("CpuShares", "Memory", "MemoryReservation", "MemorySwap", "NanoCpus",
             "CpuPeriod", "CpuQuota", "CpusetCpus", "CpusetMems", "PidsLimit", "BlkioWeight",
             "KernelMemory", "RestartPolicy")


async def update(x: Ctx, ref: str, body: dict[str, Any]) -> list[str]:
    """`docker update`: resources (applied live through the runtime) and restart policy."""
    c = x.core.handles.get(ref)
    if not isinstance(body, dict):
        raise InvalidParameter("the request body must be a JSON object")
    changes = {k: v for k, v in body.items() if k in UPDATABLE and v is not None}
    for key, value in changes.items():
        if key != "RestartPolicy" and key not in ("CpusetCpus", "CpusetMems") and (
                not isinstance(value, int) or isinstance(value, bool) or value < -1):
            raise InvalidParameter(f"invalid value for {key}: {value!r}")
    new_hc = dict(c.host_config)
    check_resources({**new_hc, **changes}, os.cpu_count() or 1, update=True)
    if "RestartPolicy" in changes:
        policy = rules.validate_restart_policy(changes["RestartPolicy"],
                                               bool(c.host_config.get("AutoRemove")))
        new_hc["RestartPolicy"] = policy
    for key, value in changes.items():
        if key != "RestartPolicy":
            new_hc[key] = value
    async with x.core.handles.lock(c.id):
        if c.state.live:
            resources = resources_from_host_config(new_hc)
            if resources:
                try:
                    await asyncio.to_thread(x.runtime.update, c.id, resources)
                except RuntimeError_ as exc:
                    raise SystemError_(f"Cannot update container {c.id}: "
                                       f"{exc.message}") from exc
        c.host_config = new_hc
        await x.core.db.persist(c)
    x.core.event(c, "update")
    return []


async def rename(x: Ctx, ref: str, new_name: str) -> None:
    c = x.core.handles.get(ref)
    if not new_name:
        raise InvalidParameter("Neither old nor new names may be empty")
    new_name = names.validate_name(new_name)
    if new_name == c.name:
        raise Conflict("Renaming a container with the same name as its current name")
    old = c.name
    c.name = new_name
    try:
        await x.core.db.run(x.core.db.opened.rename_container, c.id, new_name, c.to_record())
    except NameTaken as taken:
        c.name = old
        raise name_conflict(taken.name, taken.holder) from None
    x.core.event(c, "rename", oldName="/" + old)
