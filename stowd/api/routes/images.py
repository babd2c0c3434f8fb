"""Image routes: import, list, inspect, tag, delete (load lives in its own module)."""

import asyncio
import fnmatch

from aiohttp import web

from stowd.api import shapes
from stowd.api.app import Router, engine_of
from stowd.api.filters import parse_filters
from stowd.api.params import api_version, bool_param
from stowd.api.streams import BodyReader, error_line, json_line
from stowd.engine.errors import EngineError, InvalidParameter, NotFound
from stowd.engine.images import reference
from stowd.engine.images.store import Image

IMAGE_FILTERS = {"dangling", "label", "before", "since", "reference", "until"}


async def create(request: web.Request) -> web.StreamResponse:
    """POST /images/create: `fromSrc=-` imports the body; `fromImage` pulls."""
    engine = engine_of(request)
    from_src = request.query.get("fromSrc")
    from_image = request.query.get("fromImage")
    if from_src is None and from_image is None:
        raise InvalidParameter("either fromSrc or fromImage must be given")
    if from_src is not None:
        if from_src != "-":
            raise InvalidParameter("importing from a URL is not supported: send the tar as "
                                   "the request body with fromSrc=-")
        changes = request.query.getall("changes", [])
        repo = request.query.get("repo", "")
        tag = request.query.get("tag", "")
        message = request.query.get("message", "")
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        source = BodyReader(request.content, asyncio.get_running_loop())
        try:
            image = await engine.import_image(source, repo, tag, changes, message)
        except EngineError as exc:
            await response.write(error_line(exc.message))
        else:
            await response.write(json_line({"status": image.id}))
        await response.write_eof()
        return response
    return await _pull(request, from_image or "", request.query.get("tag", ""))


async def _pull(request: web.Request, name: str, tag: str) -> web.StreamResponse:
    engine = engine_of(request)
    name = name.rstrip(":")
    ref = reference.parse(name)
    if tag:
        ref = reference.Reference(ref.domain, ref.path, None if tag.startswith("sha256:") else tag,
                                  tag if tag.startswith("sha256:") else None)
    image = await asyncio.to_thread(engine.images.find, ref.full())
    if image is None:
        raise NotFound(
            f"pull access denied for {ref.familiar_repository}: stowd cannot pull from "
            "registries yet; load the image with `docker load` or `docker import` it")
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    await response.write(json_line({"status": f"Pulling from {ref.path}",
                                    "id": ref.tag or ref.digest}))
    await response.write(json_line(
        {"status": f"Status: Image is up to date for {ref.familiar()}"}))
    await response.write_eof()
    return response


async def list_images(request: web.Request) -> web.Response:
    engine = engine_of(request)
    filters = parse_filters(request.query.get("filters"), IMAGE_FILTERS)
    images = await asyncio.to_thread(engine.images.all)
    out = []
    for image in sorted(images, key=lambda i: i.created, reverse=True):
        if not _image_matches(image, filters):
            continue
        users = len(engine.image_users(image.id))
        out.append(shapes.image_summary(image, users if bool_param(request, "shared-size")
                                        else -1))
    return web.json_response(out)


def _image_matches(image: Image, filters: dict[str, list[str]]) -> bool:
    if "dangling" in filters:
        want = filters["dangling"][0].lower() in ("1", "true")
        if want != (not image.repo_tags):
            return False
    if "label" in filters:
        labels = image.container_config.get("Labels") or {}
        for v in filters["label"]:
            key, sep, value = v.partition("=")
            if key not in labels or (sep and labels[key] != value):
                return False
    if "reference" in filters:
        names = image.repo_tags
        if not any(fnmatch.fnmatch(n, pattern) or fnmatch.fnmatch(n.split(":")[0], pattern)
                   for n in names for pattern in filters["reference"]):
            return False
    return True


async def inspect(request: web.Request) -> web.Response:
    engine = engine_of(request)
    image = await asyncio.to_thread(engine.images.resolve, request.match_info["name"])
    return web.json_response(shapes.image_inspect(image, engine.images.layer_dirs(image),
                                                  api_version(request)))


async def tag(request: web.Request) -> web.Response:
    engine = engine_of(request)
    await engine.tag_image(request.match_info["name"], request.query.get("repo", ""),
                           request.query.get("tag", ""))
    return web.Response(status=201)


async def remove(request: web.Request) -> web.Response:
    engine = engine_of(request)
    report = await engine.remove_image(request.match_info["name"],
                                       force=bool_param(request, "force"),
                                       prune=not bool_param(request, "noprune"))
    return web.json_response(report)


def register(router: Router) -> None:
    router.add("POST", "/images/create", create)
    router.add("GET", "/images/json", list_images)
    router.add("GET", "/images/{name:.+}/json", inspect)
    router.add("POST", "/images/{name:.+}/tag", tag)
    router.add("DELETE", "/images/{name:.+}", remove)
