"""The aiohttp application: routes (bare and /vX.Y), version checks, and error mapping."""

import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from stowd import __version__
from stowd.api import versions
from stowd.engine.engine import Engine
from stowd.engine.errors import (
    Conflict,
    EngineError,
    Forbidden,
    InvalidParameter,
    NotFound,
    NotImplementedByEngine,
    NotModified,
    Unavailable,
)

log = logging.getLogger("stowd.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

ENGINE_KEY = web.AppKey("engine", Engine)

_STATUS: list[tuple[type[EngineError], int]] = [
    (NotFound, 404),
    (InvalidParameter, 400),
    (Conflict, 409),
    (NotModified, 304),
    (Forbidden, 403),
    (Unavailable, 503),
    (NotImplementedByEngine, 501),
]

COMMON_HEADERS = {
    "Api-Version": versions.MAX_API_VERSION,
    "Docker-Experimental": "false",
    "Ostype": "linux",
    "Server": f"stowd/{__version__} (linux)",
}


def error_response(status: int, message: str) -> web.Response:
    if status == 304:
        return web.Response(status=304)
    return web.Response(
        status=status,
        body=json.dumps({"message": message}).encode() + b"\n",
        content_type="application/json",
    )


def status_for(exc: EngineError) -> int:
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


@web.middleware
async def docker_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Check the path version, answer errors as Docker does, and set the common headers."""
    try:
        version = request.match_info.get("version")
        request["api_version"] = (
            versions.check(version) if version else versions.parse(versions.DEFAULT_API_VERSION)
        )
        response = await handler(request)
    except EngineError as exc:
        status = status_for(exc)
        if status == 500:
            log.error("%s %s: %s", request.method, request.path, exc.message)
        return error_response(status, exc.message)
    except web.HTTPException as exc:
        if exc.status in (404, 405):
            return error_response(404, "page not found")
        if exc.status == 413:
            return error_response(413, "request body too large")
        raise
    except Exception as exc:
        log.exception("%s %s failed", request.method, request.path)
        return error_response(500, f"{type(exc).__name__}: {exc}")
    return response


async def _add_common_headers(request: web.Request, response: web.StreamResponse) -> None:
    for key, value in COMMON_HEADERS.items():
        response.headers.setdefault(key, value)


class Router:
    """Registers each route bare and under /v{version}, as dockerd does."""

    def __init__(self, app: web.Application) -> None:
        self.app = app

    def add(self, method: str, path: str, handler: Handler) -> None:
        self.app.router.add_route(method, path, handler)
        self.app.router.add_route(method, r"/v{version:[0-9]+\.[0-9]+}" + path, handler)


def make_app(engine: Engine) -> web.Application:
    from stowd.api.routes import containers, images, system

    app = web.Application(middlewares=[docker_middleware], client_max_size=1024**4,
                          handler_args={"max_field_size": 65536})
    app[ENGINE_KEY] = engine
    app.on_response_prepare.append(_add_common_headers)
    router = Router(app)
    system.register(router)
    containers.register(router)
    images.register(router)
    return app


def engine_of(request: web.Request) -> Engine:
    return request.app[ENGINE_KEY]
