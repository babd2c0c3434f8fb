"""Container routes: parse the request, call one engine method, shape the answer."""

import asyncio
import functools
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from stowd.api import shapes
from stowd.api.backend import Backend
from stowd.api.common import Router, backend_of, json_bytes, json_ok
from stowd.api.filters import parse_filters
from stowd.api.hijack import finished, hijack, relay, stream_content_type
from stowd.api.params import (
    api_version,
    bool_param,
    int_param,
    json_body,
    read_limited,
    time_nanos_param,
)
from stowd.engine import listing
from stowd.engine.attach import AttachSession
from stowd.engine.core.container import Container
from stowd.engine.errors import InvalidParameter
from stowd.engine.logs import LogReader, details_prefix, encode_messages
from stowd.engine.logwatch import LogWatch

log = logging.getLogger("stowd.api")

FOLLOW_GATHER = 0.02  # seconds a woken follower lets output gather before it reads
# ... and after a catch-up of at least FOLLOW_BUSY_BYTES (a busy writer: fewer, larger
# reads cost the writer less; a tenth of a second is still live to a reader).
FOLLOW_GATHER_BUSY = 0.1
FOLLOW_BUSY_BYTES = 1024 * 1024


async def list_containers(request: web.Request) -> web.Response:
    engine = backend_of(request)
    filters = parse_filters(request.query.get("filters"), listing.ACCEPTED)
    size = bool_param(request, "size")

    # Image lookups read the store: resolve the ancestor filter's names in a worker thread.
    ancestor_ids = await asyncio.to_thread(
        lambda: {name: _image_ids(engine, name) for name in filters["ancestor"]}
    ) if filters.get("ancestor") else {}
    selected = listing.select(
        engine.containers.all(), filters, all_=bool_param(request, "all"),
        limit=int_param(request, "limit"), resolve=engine.containers.get,
        ancestors=lambda name: ancestor_ids.get(name, set()),
    )
    version = api_version(request)
    rows = []
    for c in selected:
        sizes = await engine.containers.sizes(c) if size else None
        rows.append(shapes.container_summary(c, c.config.get("Image") or c.image_id, sizes,
                                             version))
    return json_ok(rows)


def _image_ids(engine: Backend, name: str) -> set[str]:
    image = engine.images.find(name)
    return {image.id} if image else set()


async def create(request: web.Request) -> web.Response:
    engine = backend_of(request)
    body = await json_body(request, required=True)
    if not isinstance(body, dict):
        raise InvalidParameter("the request body must be a JSON object")
    if api_version(request) < (1, 42) and isinstance(body.get("HostConfig"), dict):
        body["HostConfig"].pop("ConsoleSize", None)
    if api_version(request) < (1, 44) and isinstance(body.get("Healthcheck"), dict):
        body["Healthcheck"].pop("StartInterval", None)  # came with 1.44, as dockerd drops it
    if api_version(request) < (1, 44):
        networking = body.get("NetworkingConfig")
        endpoints = networking.get("EndpointsConfig") if isinstance(networking, dict) else None
        for ep in (endpoints or {}).values() if isinstance(endpoints, dict) else ():
            if isinstance(ep, dict):
                ep.pop("MacAddress", None)  # per-endpoint MACs came with API 1.44
    cid, warnings = await engine.containers.create(request.query.get("name"), body)
    return json_ok({"Id": cid, "Warnings": warnings}, status=201)


async def inspect(request: web.Request) -> web.Response:
    engine = backend_of(request)
    c = engine.containers.get(request.match_info["id"])
    sizes = await engine.containers.sizes(c) if bool_param(request, "size") else None
    graph = await engine.containers.graph_driver(c)
    return json_ok(shapes.container_inspect(c, engine.containers.host_paths(c), graph, sizes,
                                            api_version(request)))


async def _no_body(request: web.Request) -> None:
    if (request.content_length and request.content_length > 7) or (
            request.headers.get("Transfer-Encoding", "").lower() == "chunked"):
        raw = await read_limited(request, 1 << 10)  # anything longer is refused below
        if len(raw.strip()) > 7 or raw.strip() not in (b"", b"{}", b"null"):
            raise InvalidParameter(
                "starting container with non-empty request body was deprecated since API v1.22 "
                "and removed in v1.24")


async def start(request: web.Request) -> web.Response:
    await _no_body(request)
    await backend_of(request).containers.start(request.match_info["id"])
    return web.Response(status=204)


def _stop_args(request: web.Request) -> tuple[int | None, str | None]:
    timeout = int_param(request, "t")
    sig = request.query.get("signal") or None
    if api_version(request) < (1, 42):
        sig = None
    return timeout, sig


async def stop(request: web.Request) -> web.Response:
    timeout, sig = _stop_args(request)
    await backend_of(request).containers.stop(request.match_info["id"], timeout, sig)
    return web.Response(status=204)


async def restart(request: web.Request) -> web.Response:
    timeout, sig = _stop_args(request)
    await backend_of(request).containers.restart(request.match_info["id"], timeout, sig)
    return web.Response(status=204)


async def kill(request: web.Request) -> web.Response:
    await backend_of(request).containers.kill(request.match_info["id"],
                                              request.query.get("signal") or None)
    return web.Response(status=204)


async def pause(request: web.Request) -> web.Response:
    await backend_of(request).containers.pause(request.match_info["id"])
    return web.Response(status=204)


async def unpause(request: web.Request) -> web.Response:
    await backend_of(request).containers.unpause(request.match_info["id"])
    return web.Response(status=204)


async def remove(request: web.Request) -> web.Response:
    if bool_param(request, "link"):
        await backend_of(request).containers.remove_link(request.match_info["id"])
        return web.Response(status=204)
    await backend_of(request).containers.remove(request.match_info["id"],
                                                force=bool_param(request, "force"),
                                                volumes=bool_param(request, "v"))
    return web.Response(status=204)


async def update(request: web.Request) -> web.Response:
    body = await json_body(request, required=True)
    warnings = await backend_of(request).containers.update(request.match_info["id"], body)
    return json_ok({"Warnings": warnings})


async def prune(request: web.Request) -> web.Response:
    filters = parse_filters(request.query.get("filters"), {"until", "label", "label!"})
    removed, reclaimed = await backend_of(request).containers.prune(filters)
    return json_ok({"ContainersDeleted": removed, "SpaceReclaimed": reclaimed})


async def rename(request: web.Request) -> web.Response:
    await backend_of(request).containers.rename(request.match_info["id"],
                                                request.query.get("name", ""))
    return web.Response(status=204)


async def top(request: web.Request) -> web.Response:
    titles, rows = await backend_of(request).containers.top(request.match_info["id"],
                                                request.query.get("ps_args", "-ef"))
    return json_ok({"Titles": titles, "Processes": rows})


async def wait(request: web.Request) -> web.StreamResponse:
    engine = backend_of(request)
    condition = request.query.get("condition") or "not-running"
    # Register first, so a container that exits right after cannot be missed.
    waiter = engine.containers.wait(request.match_info["id"], condition)
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    if api_version(request) >= (1, 30):
        # The CLI calls wait before start and blocks until it sees these headers.
        await response.prepare(request)
    try:
        status = await waiter
    except asyncio.CancelledError:
        waiter.cancel()
        raise
    body: dict[str, object] = {"StatusCode": status.code}
    if status.error:
        body["Error"] = {"Message": status.error}
    try:
        if not response.prepared:
            await response.prepare(request)
        await response.write(json_bytes(body))
        await response.write_eof()
    except ConnectionResetError:
        pass  # the client stopped waiting; the container is not affected
    return response


async def logs(request: web.Request) -> web.StreamResponse:
    engine = backend_of(request)
    c = engine.containers.get(request.match_info["id"])
    stdout, stderr = bool_param(request, "stdout"), bool_param(request, "stderr")
    if not (stdout or stderr):
        raise InvalidParameter("You must choose at least one stream")
    tail_raw = request.query.get("tail", "all") or "all"
    if tail_raw == "all":
        tail = -1
    elif tail_raw.lstrip("-").isdigit():
        tail = int(tail_raw)
    else:
        raise InvalidParameter(f"invalid value for tail: {tail_raw}")
    since = time_nanos_param(request, "since") or 0
    until = time_nanos_param(request, "until") or 0
    timestamps = bool_param(request, "timestamps")
    tty = bool(c.config.get("Tty"))
    ctype = stream_content_type(request, framed=not tty)
    path = engine.containers.log_path(c)
    reader = LogReader(str(path), stdout=stdout, stderr=stderr, since=since, until=until,
                       tail=tail)
    response = web.StreamResponse(headers={"Content-Type": ctype})
    await response.prepare(request)
    # Following ends when the container stops and its last output has been read.
    stopped = engine.containers.wait(c.id, "not-running") if bool_param(request, "follow") else None
    # The watch exists before the first read, so nothing written after it is missed.
    watch = await asyncio.to_thread(LogWatch, path) if stopped is not None else None
    await asyncio.to_thread(reader.open)
    details = details_prefix(c.config, c.host_config.get("LogConfig")) \
        if bool_param(request, "details") else None
    read = functools.partial(reader.read_encoded, framed=not tty, timestamps=timestamps,
                             details=details)
    ahead: asyncio.Future[bytes | memoryview] | None = None
    caught_up = 0  # bytes sent since the follower last waited
    try:
        while True:
            # While a block goes out, the next one is read and encoded in the worker
            # (one read at a time: the reader is not shared), so the two overlap.
            chunk = await (ahead or asyncio.to_thread(read))
            ahead = None
            if chunk:
                caught_up += len(chunk)
                if not reader.at_end:
                    ahead = asyncio.ensure_future(asyncio.to_thread(read))
                    await response.write(chunk)
                    continue
                await response.write(chunk)
                if stopped is not None and not stopped.done():
                    # Caught up with a writer that is still writing: let it write a block's
                    # worth before reading again. Chasing it read by read costs the
                    # follower a fixed price per read, which a fast writer pays in speed.
                    await asyncio.wait([stopped], timeout=_gather(caught_up))
                    caught_up = 0
                continue
            if stopped is not None and watch is not None and not stopped.done() \
                    and not reader.done:
                await watch.changed(stopped)
                if not stopped.done():
                    # Let a busy writer write a block's worth before reading: one read per
                    # write of conmon's would cost the follower more than the writer.
                    await asyncio.wait([stopped], timeout=_gather(caught_up))
                caught_up = 0
                continue
            if stopped is not None and not reader.done and (chunk := await asyncio.to_thread(read)):
                await response.write(chunk)  # written just before the container stopped
                continue
            rest = await asyncio.to_thread(reader.flush_partial)
            if rest:
                await response.write(encode_messages(rest, framed=not tty,
                                                     timestamps=timestamps, details=details))
            break
    except ConnectionResetError:
        return response
    finally:
        if ahead is not None:
            # The client left mid-read: let the read finish before the reader is closed.
            await asyncio.wait([ahead])
            if not ahead.cancelled() and (exc := ahead.exception()) is not None:
                log.debug("log read after the client left: %s", exc)
        if stopped is not None and not stopped.done():
            stopped.cancel()
        if watch is not None:
            watch.close()
        await asyncio.to_thread(reader.close)
    await response.write_eof()
    return response


def _gather(caught_up: int) -> float:
    """How long a follower that just caught up lets output gather before reading again."""
    return FOLLOW_GATHER_BUSY if caught_up >= FOLLOW_BUSY_BYTES else FOLLOW_GATHER


async def _attach(request: web.Request) -> tuple[Container, AttachSession, LogReader | None]:
    """The attachment the query asks for, and (with logs=1) a reader of the log so far."""
    engine = backend_of(request)
    c, session = await engine.containers.attach(
        request.match_info["id"], stdin=bool_param(request, "stdin"),
        stdout=bool_param(request, "stdout"), stderr=bool_param(request, "stderr"),
        detach_keys=request.query.get("detachKeys"))
    past = None
    if bool_param(request, "logs"):
        past = LogReader(str(engine.containers.log_path(c)), stdout=session.stdout,
                         stderr=session.stderr)
    return c, session, past


async def _replay(reader: LogReader | None,
                  framed: bool) -> AsyncIterator[bytes | memoryview]:
    """The log so far (attach with logs=1), a block at a time: never all of it in memory."""
    if reader is None:
        return
    await asyncio.to_thread(reader.open)
    try:
        read = functools.partial(reader.read_encoded, framed=framed, timestamps=False)
        while chunk := await asyncio.to_thread(read):
            yield chunk
        rest = await asyncio.to_thread(reader.flush_partial)
        if rest:
            yield encode_messages(rest, framed=framed, timestamps=False)
    finally:
        await asyncio.to_thread(reader.close)


async def attach(request: web.Request) -> web.StreamResponse:
    engine = backend_of(request)
    c, session, past = await _attach(request)
    tty = bool(c.config.get("Tty"))
    conn = hijack(request, stream_content_type(request, framed=not tty))
    try:
        async for chunk in _replay(past, framed=not tty):
            await conn.write(chunk)
        if bool_param(request, "stream"):
            await relay(conn, session, tty)
    finally:
        engine.containers.detach(session)
        conn.close()
    return finished(request)


async def attach_ws(request: web.Request) -> web.StreamResponse:
    """The websocket variant of attach: raw output out, stdin in, no stream framing."""
    engine = backend_of(request)
    _, session, past = await _attach(request)
    ws = web.WebSocketResponse()
    try:
        await ws.prepare(request)
        async for chunk in _replay(past, framed=False):
            await ws.send_bytes(bytes(chunk))  # aiohttp's signature says bytes

        async def output() -> None:
            while (item := await session.output.get()) is not None:
                await ws.send_bytes(item[1])

        async def stdin() -> None:
            async for msg in ws:
                if msg.type == web.WSMsgType.BINARY:
                    await session.write_stdin(msg.data)
                elif msg.type == web.WSMsgType.TEXT:
                    await session.write_stdin(msg.data.encode())

        if bool_param(request, "stream"):
            tasks = [asyncio.ensure_future(output()), asyncio.ensure_future(stdin())]
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    task.cancel()
    finally:
        engine.containers.detach(session)
        await ws.close()
    return ws


async def resize(request: web.Request) -> web.Response:
    height = int_param(request, "h", 0) or 0
    width = int_param(request, "w", 0) or 0
    await backend_of(request).containers.resize(request.match_info["id"], height, width)
    return web.Response(status=200)


def register(router: Router) -> None:
    router.add("POST", "/containers/{id:.+}/attach", attach)
    router.add("GET", "/containers/{id:.+}/attach/ws", attach_ws)
    router.add("POST", "/containers/{id:.+}/resize", resize)
    router.add("GET", "/containers/json", list_containers)
    router.add("POST", "/containers/create", create)
    router.add("POST", "/containers/prune", prune)
    router.add("GET", "/containers/{id:.+}/json", inspect)
    router.add("POST", "/containers/{id:.+}/start", start)
    router.add("POST", "/containers/{id:.+}/stop", stop)
    router.add("POST", "/containers/{id:.+}/restart", restart)
    router.add("POST", "/containers/{id:.+}/kill", kill)
    router.add("POST", "/containers/{id:.+}/pause", pause)
    router.add("POST", "/containers/{id:.+}/unpause", unpause)
    router.add("POST", "/containers/{id:.+}/wait", wait)
    router.add("POST", "/containers/{id:.+}/rename", rename)
    router.add("POST", "/containers/{id:.+}/update", update)
    router.add("GET", "/containers/{id:.+}/top", top)
    router.add("GET", "/containers/{id:.+}/logs", logs)
    router.add("DELETE", "/containers/{id:.+}", remove)
