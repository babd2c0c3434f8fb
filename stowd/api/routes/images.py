"""Image routes: import, load, save, list, inspect, tag, delete."""

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable
from typing import BinaryIO, TypeVar, cast

from aiohttp import web

from stowd.api import shapes
from stowd.api.common import Router, backend_of, json_ok
from stowd.api.filters import parse_filters
from stowd.api.params import api_version, bool_param, json_body
from stowd.api.streams import BodyReader, error_line, json_line
from stowd.engine.core.container import parse_time
from stowd.engine.distribution.auth import credentials_from, decode_registry_auth
from stowd.engine.distribution.pull import Aux, Progress
from stowd.engine.errors import EngineError, InvalidParameter
from stowd.engine.images import listing, reference
from stowd.engine.images.load import LayerProgress, LoadMessage
from stowd.engine.images.store import Image

log = logging.getLogger("stowd.api")

T = TypeVar("T")

_PROGRESS_WIDTH = 50
_SIZE_UNITS = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"]


async def _drain(request: web.Request) -> None:
    """Read the rest of a body we refuse, so the client gets to read our answer."""
    while await request.content.readany():
        pass


async def _json_stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    return response


async def create(request: web.Request) -> web.StreamResponse:
    """POST /images/create: `fromSrc=-` imports the body; `fromImage` pulls."""
    engine = backend_of(request)
    from_src = request.query.get("fromSrc")
    from_image = request.query.get("fromImage")
    if from_src is None and from_image is None:
        raise InvalidParameter("either fromSrc or fromImage must be given")
    if from_src is None:
        return await _pull(request, from_image or "", request.query.get("tag", ""))
    if from_src != "-":
        raise InvalidParameter("importing from a URL is not supported: send the tar as "
                               "the request body with fromSrc=-")
    # A raw stream read as a binary file by the worker threads that unpack it.
    source = cast(BinaryIO, BodyReader(request.content, asyncio.get_running_loop()))
    try:
        # Bad repo, tag or changes are refused before a byte of the body is read.
        image = await engine.images.import_image(
            source, request.query.get("repo", ""), request.query.get("tag", ""),
            request.query.getall("changes", []), request.query.get("message", ""))
    except EngineError:
        await _drain(request)
        raise
    response = await _json_stream(request)
    await response.write(json_line({"status": image.id}))
    await response.write_eof()
    return response


async def _pull(request: web.Request, name: str, tag: str) -> web.StreamResponse:
    """fromImage=&tag=&platform=: dockerd's progress stream; an empty tag pulls every tag."""
    engine = backend_of(request)
    ref = reference.parse(name, default_tag=False)
    if tag:
        # As dockerd: the tag parameter replaces the name's tag, and may be a digest.
        bare = ref.repository
        ref = reference.parse(f"{bare}@{tag}" if ":" in tag else f"{bare}:{tag}",
                              default_tag=False)
    creds = decode_registry_auth(request.headers.get("X-Registry-Auth"))
    lines = engine.distribution.pull(ref, request.query.get("platform", ""), creds)
    return await _progress_stream(request, lines, progress_line, "pulling " + ref.familiar())


async def push(request: web.Request) -> web.StreamResponse:
    """POST /images/{name}/push?tag=: dockerd's push stream (every tag without one)."""
    engine = backend_of(request)
    ref = reference.parse(request.match_info["name"], default_tag=False)
    tag = request.query.get("tag", "")
    if ref.digest:
        raise InvalidParameter("cannot push a digest reference")
    if tag:
        ref = reference.tag_reference(ref.repository, tag)
    creds = decode_registry_auth(request.headers.get("X-Registry-Auth"))
    lines = engine.distribution.push(ref, creds)
    return await _progress_stream(request, lines, progress_line, "pushing " + ref.familiar())


async def auth(request: web.Request) -> web.Response:
    """POST /auth (`docker login`): checks the credentials with the registry; stores none."""
    body = await json_body(request)
    if not isinstance(body, dict):
        raise InvalidParameter("the request body must be a JSON object")
    await backend_of(request).distribution.login(credentials_from(body))
    return json_ok({"Status": "Login Succeeded", "IdentityToken": ""})


async def _progress_stream(request: web.Request, lines: AsyncGenerator[T, None],
                           render: Callable[[T], bytes], what: str, drain: bool = False,
                           errors_in_band: bool = False) -> web.StreamResponse:
    """Docker's JSON progress (load, pull, push): an error before the first line is an HTTP
    error (the rest of the request body read first when drain) unless errors_in_band (load:
    dockerd answers 200 and an errorDetail line, so docker-py raises ImageLoadError), after
    it an errorDetail line. A client that goes away stops following (a pull is cancelled
    when it was the last one)."""
    response: web.StreamResponse | None = None
    try:
        async with contextlib.aclosing(lines):
            async for line in lines:
                if response is None:
                    response = await _json_stream(request)
                await response.write(render(line))
    except ConnectionError:
        log.debug("the client of %s went away", request.path)
        return response or web.Response()
    except Exception as exc:
        if response is None:
            if drain:
                await _drain(request)
            if not errors_in_band:
                raise
            response = await _json_stream(request)
        if isinstance(exc, EngineError):
            message = exc.message
        else:
            log.exception("%s failed", what)
            message = f"{type(exc).__name__}: {exc}"
        await response.write(error_line(message))
    if response is None:
        response = await _json_stream(request)
    await response.write_eof()
    return response


def progress_line(line: Progress | Aux) -> bytes:
    if isinstance(line, Aux):
        return json_line({"progressDetail": {}, "aux": line.data})
    out: dict[str, object] = {"status": line.status}
    if line.detail:
        if line.current is not None and line.total is not None:
            out["progressDetail"] = {"current": line.current, "total": line.total}
            out["progress"] = progress_bar(line.current, line.total)
        else:
            out["progressDetail"] = {}
    if line.id:
        out["id"] = line.id
    return json_line(out)


# load and save ------------------------------------------------------------------------------

def human_size(size: float) -> str:
    """Docker's units.HumanSize: decimal units, four significant digits (`10.24kB`)."""
    unit = 0
    while size >= 1000 and unit < len(_SIZE_UNITS) - 1:
        size /= 1000
        unit += 1
    return f"{size:.4g}{_SIZE_UNITS[unit]}"


def progress_bar(current: int, total: int) -> str:
    """Docker's JSONProgress text as a daemon renders it (200 columns wide)."""
    if total <= 0:
        return f"{human_size(current):>8}"
    filled = min(_PROGRESS_WIDTH, int(current / total * 100) // 2)
    bar = f"[{'=' * filled}>{' ' * (_PROGRESS_WIDTH - filled)}] "
    if current > total:
        return bar + f"{human_size(current):>8}"
    return bar + f"{human_size(current):>8}/{human_size(total)}"


def _load_line(line: LayerProgress | LoadMessage) -> bytes:
    if isinstance(line, LoadMessage):
        return json_line({"stream": line.text})
    return json_line({"status": "Loading layer",
                      "progressDetail": {"current": line.current, "total": line.total},
                      "progress": progress_bar(line.current, line.total),
                      "id": line.layer_id})


async def load_images(request: web.Request) -> web.StreamResponse:
    """POST /images/load: a JSON stream; a failure, even before the first line, is an error
    line in it (200, as dockerd answers: docker-py raises ImageLoadError, the CLI prints
    the message)."""
    engine = backend_of(request)
    # quiet defaults to true, also when given empty (dockerd's BoolValueOrDefault).
    quiet = bool_param(request, "quiet") if request.query.get("quiet") else True
    # A raw stream read as a binary file by the worker threads that unpack it.
    source = cast(BinaryIO, BodyReader(request.content, asyncio.get_running_loop()))
    return await _progress_stream(request, engine.images.load_images(source, quiet),
                                  _load_line, "loading images", drain=True,
                                  errors_in_band=True)


async def save_image(request: web.Request) -> web.StreamResponse:
    """GET /images/{name}/get."""
    return await _save(request, [request.match_info["name"]])


async def save_images(request: web.Request) -> web.StreamResponse:
    """GET /images/get?names=a&names=b."""
    return await _save(request, request.query.getall("names", []))


async def _save(request: web.Request, names: list[str]) -> web.StreamResponse:
    chunks = await backend_of(request).images.save_images(names)
    response = web.StreamResponse(headers={"Content-Type": "application/x-tar"})
    await response.prepare(request)
    try:
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                await response.write(chunk)
    except ConnectionError:
        log.debug("the client of %s went away", request.path)
        return response
    except Exception:
        # The status is out already: cut the connection so the client sees a truncated
        # archive, never one that looks complete.
        log.exception("saving %s failed", ", ".join(names))
        if request.transport is not None:
            request.transport.abort()
        return response
    await response.write_eof()
    return response


# list, inspect, tag, delete -----------------------------------------------------------------

async def list_images(request: web.Request) -> web.Response:
    engine = backend_of(request)
    filters = parse_filters(request.query.get("filters"), listing.ACCEPTED)
    images = await asyncio.to_thread(engine.images.all)
    selected = await asyncio.to_thread(listing.select, images, filters, engine.images.resolve,
                                       show_intermediate=bool_param(request, "all"))
    shared = await asyncio.to_thread(listing.shared_sizes, images, engine.images.layer_size) \
        if bool_param(request, "shared-size") else {}
    version = api_version(request)
    return json_ok([
        shapes.image_summary(item.image, version, len(engine.images.users(item.image.id)),
                             shared.get(item.image.id, -1), item.repo_tags)
        for item in selected
    ])


async def inspect(request: web.Request) -> web.Response:
    engine = backend_of(request)
    image = await asyncio.to_thread(engine.images.resolve, request.match_info["name"])
    return json_ok(shapes.image_inspect(image, engine.images.layer_dirs(image),
                                                  api_version(request)))


async def tag(request: web.Request) -> web.Response:
    engine = backend_of(request)
    await engine.images.tag_image(request.match_info["name"], request.query.get("repo", ""),
                           request.query.get("tag", ""))
    return web.Response(status=201)


async def remove(request: web.Request) -> web.Response:
    engine = backend_of(request)
    report = await engine.images.remove_image(request.match_info["name"],
                                       force=bool_param(request, "force"),
                                       prune=not bool_param(request, "noprune"))
    return json_ok(report)


async def commit(request: web.Request) -> web.Response:
    """POST /commit?container=&repo=&tag=&comment=&author=&pause=&changes= (body: Config)."""
    body = await json_body(request)
    image = await backend_of(request).containers.commit(
        request.query.get("container", ""), request.query.get("repo", ""),
        request.query.get("tag", ""), comment=request.query.get("comment", ""),
        author=request.query.get("author", ""), pause=bool_param(request, "pause", True),
        changes=request.query.getall("changes", []), config=body or None)
    return json_ok({"Id": image.id}, status=201)


async def history(request: web.Request) -> web.Response:
    """GET /images/{name}/history: the config's history, newest first, with layer sizes."""
    engine = backend_of(request)
    image = await asyncio.to_thread(engine.images.resolve, request.match_info["name"])
    entries = list(image.config.get("history") or [])
    sizes = await asyncio.to_thread(lambda: [engine.images.layer_size(chain)
                                             for chain in image.layers])
    rows = []
    layer = 0
    for entry in entries:
        empty = bool(entry.get("empty_layer"))
        size = 0 if empty or layer >= len(sizes) else sizes[layer]
        if not empty:
            layer += 1
        rows.append({
            "Id": "<missing>",
            "Created": int(parse_time(entry["created"])) if entry.get("created") else 0,
            "CreatedBy": entry.get("created_by", ""),
            "Tags": None,
            "Size": size,
            "Comment": entry.get("comment", ""),
        })
    rows.reverse()
    # Each row's image along the Parent chain, as dockerd names them (built steps).
    current: Image | None = image
    for row in rows:
        if current is None:
            break
        row["Id"] = current.id
        row["Tags"] = current.repo_tags or None
        current = await asyncio.to_thread(engine.images.find, current.parent) \
            if current.parent else None
    return json_ok(rows)


async def prune(request: web.Request) -> web.Response:
    filters = parse_filters(request.query.get("filters"), {"dangling", "until", "label"})
    deleted, reclaimed = await backend_of(request).images.prune_images(filters)
    return json_ok({"ImagesDeleted": deleted or None, "SpaceReclaimed": reclaimed})


def register(router: Router) -> None:
    router.add("POST", "/commit", commit)
    router.add("POST", "/images/prune", prune)
    router.add("GET", "/images/{name:.+}/history", history)
    router.add("POST", "/images/create", create)
    router.add("POST", "/images/load", load_images)
    router.add("GET", "/images/get", save_images)
    router.add("GET", "/images/json", list_images)
    router.add("GET", "/images/{name:.+}/get", save_image)
    router.add("GET", "/images/{name:.+}/json", inspect)
    router.add("POST", "/images/{name:.+}/tag", tag)
    router.add("POST", "/images/{name:.+}/push", push)
    router.add("POST", "/auth", auth)
    router.add("DELETE", "/images/{name:.+}", remove)
