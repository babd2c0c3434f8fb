"""Looking inside containers: stats, changes, export, archive (docker cp), system df."""

import asyncio
import base64
import contextlib
import time
from typing import Any

from aiohttp import web

from stowd.api import shapes
from stowd.api.common import Router, backend_of, json_bytes, json_ok
from stowd.api.params import api_version, bool_param
from stowd.api.routes.volumes import volume_shape
from stowd.api.streams import BodyReader
from stowd.engine.archive_path import PathStat
from stowd.engine.core.container import ZERO_TIME, Container, rfc3339_nano
from stowd.engine.errors import EngineError, InvalidParameter
from stowd.engine.stats import BLKIO_LISTS, CpuSample, Sample

STATS_INTERVAL = 1.0

# --- stats ---------------------------------------------------------------------------------


def _cpu_json(cpu: CpuSample | None) -> dict[str, Any]:
    if cpu is None:
        return {"cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0,
                              "usage_in_usermode": 0},
                "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}}
    usage: dict[str, Any] = {"total_usage": cpu.total}
    if cpu.percpu:
        usage["percpu_usage"] = cpu.percpu
    usage["usage_in_kernelmode"] = cpu.kernel
    usage["usage_in_usermode"] = cpu.user
    out: dict[str, Any] = {"cpu_usage": usage}
    if cpu.system:
        out["system_cpu_usage"] = cpu.system
    if cpu.online_cpus:
        out["online_cpus"] = cpu.online_cpus
    out["throttling_data"] = {"periods": cpu.periods, "throttled_periods": cpu.throttled_periods,
                              "throttled_time": cpu.throttled_time}
    return out


def stats_json(c: Container, sample: Sample | None, pre: Sample | None) -> dict[str, Any]:
    """Docker's stats object; sample None gives dockerd's empty sample (a stopped
    container). Zero counters are left out where dockerd's Go types omit them."""
    if sample is None:
        return {
            "read": ZERO_TIME, "preread": ZERO_TIME, "pids_stats": {},
            "blkio_stats": {key: None for key, _ in BLKIO_LISTS},
            "num_procs": 0, "storage_stats": {},
            "cpu_stats": _cpu_json(None), "precpu_stats": _cpu_json(None),
            "memory_stats": {}, "name": "/" + c.name, "id": c.id,
        }
    pids: dict[str, int] = {}
    if sample.pids_current:
        pids["current"] = sample.pids_current
    if sample.pids_limit:
        pids["limit"] = sample.pids_limit
    blkio = {key: ([{"major": e.major, "minor": e.minor, "op": e.op, "value": e.value}
                    for e in entries] if entries is not None else None)
             for key, entries in sample.blkio.items()}
    mem = sample.memory
    memory: dict[str, Any] = {}
    for key, value in (("usage", mem.usage), ("max_usage", mem.max_usage),
                       ("stats", mem.stats), ("failcnt", mem.failcnt), ("limit", mem.limit)):
        if value:
            memory[key] = value
    out: dict[str, Any] = {
        "read": rfc3339_nano(sample.read),
        "preread": rfc3339_nano(pre.read) if pre is not None else ZERO_TIME,
        "pids_stats": pids,
        "blkio_stats": blkio,
        "num_procs": 0,
        "storage_stats": {},
        "cpu_stats": _cpu_json(sample.cpu),
        "precpu_stats": _cpu_json(pre.cpu if pre is not None else None),
        "memory_stats": memory,
        "name": "/" + c.name,
        "id": c.id,
    }
    if sample.networks:
        out["networks"] = {name: vars(n) for name, n in sample.networks.items()}
    return out


def _client_gone(request: web.Request) -> bool:
    return request.transport is None or request.transport.is_closing()


async def stats(request: web.Request) -> web.StreamResponse:
    engine = backend_of(request)
    c = engine.containers.get(request.match_info["id"])
    stream = bool_param(request, "stream", True)
    one_shot = bool_param(request, "one-shot") and api_version(request) >= (1, 41)
    if stream and one_shot:
        raise InvalidParameter("cannot have stream=true and one-shot=true")
    running = c.state.live
    if not stream:
        if not running:
            body = stats_json(c, None, None)
        elif one_shot:
            body = stats_json(c, await engine.containers.stats_sample(c), None)
        else:
            sample, pre = await engine.containers.stats_pair(c)
            body = stats_json(c, sample, pre)
        return web.Response(body=json_bytes(body), content_type="application/json")

    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)  # headers now: clients wait for them
    pre = engine.containers.stats_previous(c.id, time.time())
    try:
        while not _client_gone(request):
            started = time.monotonic()
            sample = await engine.containers.stats_sample(c)
            await response.write(json_bytes(stats_json(c, sample, pre)))
            pre = sample
            await asyncio.sleep(max(0.0, STATS_INTERVAL - (time.monotonic() - started)))
    except ConnectionResetError:
        pass  # the client went away mid-write
    return response


# --- changes, export -------------------------------------------------------------------------


async def changes(request: web.Request) -> web.Response:
    found = await backend_of(request).containers.changes(request.match_info["id"])
    body = [{"Path": ch.path, "Kind": ch.kind} for ch in found] if found else None
    return json_ok(body)


async def export(request: web.Request) -> web.StreamResponse:
    chunks = await backend_of(request).containers.export(request.match_info["id"])
    response = web.StreamResponse(headers={"Content-Type": "application/x-tar"})
    try:
        first = await anext(chunks, b"")  # a failure to start is still a clean error answer
        await response.prepare(request)
        if first:
            await response.write(first)
        async for chunk in chunks:
            await response.write(chunk)
        await response.write_eof()
    except ConnectionResetError:
        pass  # the client went away: tar is stopped below
    finally:
        await chunks.aclose()
    return response


# --- archive (docker cp) ---------------------------------------------------------------------


def _stat_header(st: PathStat) -> str:
    return base64.b64encode(json_bytes(st.to_json())[:-1]).decode()


def _path(request: web.Request) -> str:
    path = request.query.get("path", "")
    if not path:
        raise InvalidParameter("bad parameter: path cannot be empty")
    return path


async def archive_head(request: web.Request) -> web.Response:
    st = await backend_of(request).containers.archive_stat(request.match_info["id"], _path(request))
    return web.Response(status=200, headers={"X-Docker-Container-Path-Stat": _stat_header(st)})


async def archive_get(request: web.Request) -> web.StreamResponse:
    items = backend_of(request).containers.archive_get(request.match_info["id"], _path(request))
    response = web.StreamResponse(headers={"Content-Type": "application/x-tar"})
    try:
        st = await anext(items)  # errors (404, ...) before any answer is sent
        assert isinstance(st, PathStat)
        response.headers["X-Docker-Container-Path-Stat"] = _stat_header(st)
        await response.prepare(request)
        async for chunk in items:
            assert isinstance(chunk, bytes)
            await response.write(chunk)
        await response.write_eof()
    except ConnectionResetError:
        pass  # the client went away
    finally:
        await items.aclose()
    return response


async def _drain(request: web.Request) -> None:
    """Read the rest of a body we refuse, so the client gets to read our answer."""
    with contextlib.suppress(Exception):
        while await request.content.readany():
            pass


async def archive_put(request: web.Request) -> web.Response:
    engine = backend_of(request)
    source = BodyReader(request.content, asyncio.get_running_loop())
    try:
        await engine.containers.archive_put(
            request.match_info["id"], _path(request), source,  # type: ignore[arg-type]
            no_overwrite_dir_non_dir=bool_param(request, "noOverwriteDirNonDir"),
            copy_uid_gid=bool_param(request, "copyUIDGID"))
    except EngineError:
        await _drain(request)
        raise
    return web.Response(status=200)


# --- system df -------------------------------------------------------------------------------

_DF_TYPES = {"container", "image", "volume", "build-cache"}


async def system_df(request: web.Request) -> web.Response:
    engine = backend_of(request)
    version = api_version(request)
    kinds = set(request.query.getall("type", [])) if version >= (1, 42) else set()
    for kind in kinds:
        if kind not in _DF_TYPES:
            raise InvalidParameter(f"unknown object type: {kind}")
    kinds = kinds or _DF_TYPES
    layers_size, images, containers, volumes = await engine.containers.disk_usage(kinds)
    image_rows = []
    for usage in images:
        row = shapes.image_summary(usage.image, version, usage.containers, usage.shared_size)
        row["Containers"] = usage.containers
        image_rows.append(row)
    container_rows = [
        shapes.container_summary(c, c.config.get("Image") or c.image_id, (rw, rootfs), version)
        for c, rw, rootfs in containers]
    volume_rows = [{**volume_shape(engine.volumes, vol),
                    "UsageData": {"RefCount": refs, "Size": size}}
                   for vol, size, refs in volumes]
    body: dict[str, Any] = {"LayersSize": layers_size, "Images": image_rows,
                            "Containers": container_rows, "Volumes": volume_rows,
                            "BuildCache": []}
    if "build-cache" in kinds:
        body["BuildCache"] = await engine.builder.cache_usage()
    if version < (1, 42):
        body["BuilderSize"] = sum(r["Size"] for r in body["BuildCache"])
    return json_ok(body)


def register(router: Router) -> None:
    router.add("GET", "/containers/{id:.+}/stats", stats)
    router.add("GET", "/containers/{id:.+}/changes", changes)
    router.add("GET", "/containers/{id:.+}/export", export)
    router.add("HEAD", "/containers/{id:.+}/archive", archive_head)
    router.add("GET", "/containers/{id:.+}/archive", archive_get)
    router.add("PUT", "/containers/{id:.+}/archive", archive_put)
    router.add("GET", "/system/df", system_df)
