"""`POST /build`: the classic builder's JSON stream (dockerd's router/build)."""

import asyncio
import base64
import binascii
import contextlib
import json
import logging
from typing import Any, BinaryIO, cast

from aiohttp import web

from stowd.api.common import Router, backend_of
from stowd.api.params import bool_param, int_param
from stowd.api.streams import BodyReader, json_line
from stowd.engine.build.builder import BuildError, BuildOptions
from stowd.engine.errors import EngineError, InvalidParameter
from stowd.engine.images import reference

log = logging.getLogger("stowd.api")
DISCONNECT_POLL = 0.5
# Query parameters that limit RUN containers, and the HostConfig fields they set.
_RESOURCES = {"memory": "Memory", "memswap": "MemorySwap", "cpushares": "CpuShares",
              "cpuperiod": "CpuPeriod", "cpuquota": "CpuQuota"}


def _json_param(request: web.Request, key: str, kind: type) -> Any:
    raw = request.query.get(key)
    if not raw:
        return kind()
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidParameter(f"failed to parse {key}: {exc}") from None
    if value is None:
        return kind()
    if not isinstance(value, kind):
        raise InvalidParameter(f"{key} must be a JSON {kind.__name__}")
    return value


def build_options(request: web.Request) -> BuildOptions:
    q = request.query
    tags = []
    for text in q.getall("t", []):
        ref = reference.parse(text)
        if ref.digest:
            raise InvalidParameter(f"invalid reference format: {text} (a tag cannot be a "
                                   "digest)")
        tags.append(ref)
    args = _json_param(request, "buildargs", dict)
    labels = _json_param(request, "labels", dict)
    for mapping, what in ((args, "buildargs"), (labels, "labels")):
        for key, value in mapping.items():
            if value is not None and not isinstance(value, str):
                raise InvalidParameter(f"{what}: the value of {key} must be a string")
    resources: dict[str, Any] = {}
    for key, field in _RESOURCES.items():
        value = int_param(request, key)
        if value:
            resources[field] = value
    for key, field in (("cpusetcpus", "CpusetCpus"), ("cpusetmems", "CpusetMems")):
        if q.get(key):
            resources[field] = q[key]
    hosts = [h for raw in q.getall("extrahosts", []) for h in raw.split(",") if h]
    if q.get("version") == "2":
        raise InvalidParameter("BuildKit (version=2) is not supported by stowd: build with "
                               "the classic builder (DOCKER_BUILDKIT=0)")
    if q.get("remote"):
        raise InvalidParameter("remote build contexts are not supported: send the context "
                               "as the request body")
    return BuildOptions(
        dockerfile=q.get("dockerfile", ""), tags=tags, build_args=args,
        labels={k: v or "" for k, v in labels.items()}, target=q.get("target", ""),
        nocache=bool_param(request, "nocache"), pull=bool_param(request, "pull"),
        rm=bool_param(request, "rm", True), forcerm=bool_param(request, "forcerm"),
        network_mode=q.get("networkmode", ""), extra_hosts=hosts,
        shm_size=int_param(request, "shmsize", 0) or 0,
        cache_from=[str(c) for c in _json_param(request, "cachefrom", list)],
        platform=q.get("platform", ""), resources=resources,
        registry_auth=_registry_config(request.headers.get("X-Registry-Config")))


def _registry_config(header: str | None) -> dict[str, Any]:
    """X-Registry-Config: base64 JSON of {registry: AuthConfig}; unreadable counts as none
    (as dockerd, the registry decides)."""
    if not header:
        return {}
    try:
        padded = header + "=" * (-len(header) % 4)
        doc = json.loads(base64.urlsafe_b64decode(padded.replace("+", "-").replace("/", "_")))
    except (ValueError, binascii.Error):
        return {}
    return doc if isinstance(doc, dict) else {}


async def build(request: web.Request) -> web.StreamResponse:
    engine = backend_of(request)
    try:
        options = build_options(request)
    except EngineError:
        while await request.content.readany():
            pass
        raise
    quiet = bool_param(request, "q")
    held: list[bytes] = []  # with q=1: shown only if the build fails, as dockerd
    response: web.StreamResponse | None = None

    async def out() -> web.StreamResponse:
        nonlocal response
        if response is None:
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            await response.prepare(request)
        return response

    async def emit(message: dict[str, Any]) -> None:
        line = json_line(message)
        if quiet:
            held.append(line)
            return
        if request.transport is None or request.transport.is_closing():
            # The client went away: the build is cancelled (as the watcher would, but
            # before a failed write could leave a step's container behind).
            task.cancel()
            return
        try:
            await (await out()).write(line)
        except ConnectionResetError:
            task.cancel()

    # A raw stream read as a binary file by the builder's worker threads.
    source = cast(BinaryIO, BodyReader(request.content, asyncio.get_running_loop()))
    task = asyncio.ensure_future(engine.builder.build(source, options, emit))

    async def watch() -> None:
        # A client that goes away cancels the build: its RUN container is removed.
        while request.transport is not None and not request.transport.is_closing():
            await asyncio.sleep(DISCONNECT_POLL)
        task.cancel()

    watcher = asyncio.ensure_future(watch())
    try:
        image = await task
    except Exception as exc:
        if not isinstance(exc, BuildError) and response is None and not held:
            # Nothing sent yet: a plain error answer (bad Dockerfile, context ...), after
            # the rest of the body, so that the client gets to read it.
            while await request.content.readany():
                pass
            raise
        if isinstance(exc, BuildError | EngineError):
            message = exc.message
        else:
            log.exception("build failed")
            message = f"{type(exc).__name__}: {exc}"
        stream = await out()
        for line in held:
            await stream.write(line)
        detail: dict[str, Any] = {"message": message}
        if isinstance(exc, BuildError) and exc.code is not None:
            detail = {"code": exc.code, "message": message}
        await stream.write(json_line({"errorDetail": detail, "error": message}))
        await stream.write_eof()
        return stream
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    stream = await out()
    if quiet:
        await stream.write(json_line({"stream": image.id + "\n"}))
    else:
        await stream.write(json_line(
            {"stream": f"Successfully built {image.id.removeprefix('sha256:')[:12]}\n"}))
        for ref in options.tags:
            await stream.write(json_line({"stream": f"Successfully tagged {ref.familiar()}\n"}))
    await stream.write_eof()
    return stream


def register(router: Router) -> None:
    router.add("POST", "/build", build)
