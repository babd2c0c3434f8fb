"""The aiohttp application: routes (bare and /vX.Y), version checks, and error mapping."""

import asyncio
import json
import logging
import re
import warnings

from aiohttp import web

from stowd.api import versions
from stowd.api.backend import Backend
from stowd.api.common import BACKEND_KEY, COMMON_HEADERS, SERVER, Handler, Router, json_bytes
from stowd.api.params import JSON_LIMIT_KEY
from stowd.api.routes import (
    build,
    containers,
    execs,
    images,
    inspection,
    networks,
    system,
    volumes,
)
from stowd.api.server import host_header_is_loopback, is_loopback_ip
from stowd.engine.errors import (
    Conflict,
    EngineError,
    Forbidden,
    InvalidParameter,
    NotFound,
    NotImplementedByEngine,
    NotModified,
    TooLarge,
    Unauthorized,
    Unavailable,
)

log = logging.getLogger("stowd.api")


_STATUS: list[tuple[type[EngineError], int]] = [
    (NotFound, 404),
    (InvalidParameter, 400),
    (Conflict, 409),
    (NotModified, 304),
    (Forbidden, 403),
    (Unauthorized, 401),
    (Unavailable, 503),
    (NotImplementedByEngine, 501),
    (TooLarge, 413),
]

def error_response(status: int, message: str, plain_text: bool = False) -> web.Response:
    """Docker's error body: `{"message": ...}` JSON, or text for pre-1.24 path versions."""
    if status == 304:
        return web.Response(status=304)
    if plain_text:  # as Go's http.Error, which dockerd uses for these old clients
        return web.Response(status=status, body=message.encode() + b"\n",
                            headers={"Content-Type": "text/plain; charset=utf-8",
                                     "X-Content-Type-Options": "nosniff"})
    return web.Response(
        status=status,
        body=json_bytes({"message": message}),
        content_type="application/json",
    )


def status_for(exc: EngineError) -> int:
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def check_browser_guard(request: web.Request) -> None:
    """Refuse what only a web page would send, on TCP (a browser cannot reach the socket).

    - An `Origin` header: browsers add it to cross-site and scripted requests; the docker
      CLI, docker-py and other API clients never send one, and stowd serves no CORS.
    - On plain-HTTP loopback, a `Host` that is not a loopback name: the mark of DNS
      rebinding (a page on evil.example whose name now resolves to 127.0.0.1).
    """
    transport = request.transport
    if transport is None:
        return
    sockname = transport.get_extra_info("sockname")
    if not isinstance(sockname, tuple):  # the unix socket
        return
    if "Origin" in request.headers:
        raise Forbidden(
            f"request refused: it carries an Origin header ({request.headers['Origin']!r}), "
            "so it comes from a web page; stowd does not serve the API to browsers (no CORS)")
    host = request.headers.get("Host")
    if (host and transport.get_extra_info("ssl_object") is None
            and is_loopback_ip(str(sockname[0])) and not host_header_is_loopback(host)):
        raise Forbidden(
            f"request refused: Host {host!r} is not a loopback name, but this listener is on "
            "loopback (DNS rebinding protection); address it as localhost or 127.0.0.1")


@web.middleware
async def docker_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Check the caller and the path version, answer errors as Docker does."""
    version = request.match_info.get("version")
    try:
        check_browser_guard(request)
        request["api_version"] = versions.check(version) if version else versions.MAX
        return await handler(request)
    except EngineError as exc:
        status = status_for(exc)
        if status == 500:
            log.error("%s %s: %s", request.method, request.path, exc.message)
        return error_response(status, exc.message, versions.wants_plain_text_errors(version))
    except web.HTTPException as exc:
        if exc.status in (404, 405):
            return error_response(404, "page not found")
        if exc.status == 413:
            return error_response(413, "request body too large")
        if exc.status < 400:
            raise
        text = exc.text or ""
        if not text or text == f"{exc.status}: {exc.reason}":
            text = exc.reason
        return error_response(exc.status, text, versions.wants_plain_text_errors(version))
    except json.JSONDecodeError as exc:
        return error_response(400, f"invalid JSON: {exc}")
    except asyncio.CancelledError:
        raise  # the client went away: nothing to answer
    except ConnectionError as exc:
        # The client went away mid-request (an aborted upload): nobody is left to answer,
        # and it is not the daemon's fault, so one line, not aiohttp's traceback at ERROR.
        log.info("%s %s: the client went away (%s)", request.method, request.path,
                 exc or type(exc).__name__)
        return error_response(400, "the client closed the connection")
    except Exception as exc:
        log.exception("%s %s failed", request.method, request.path)
        return error_response(500, f"{type(exc).__name__}: {exc}")


async def _add_common_headers(request: web.Request, response: web.StreamResponse) -> None:
    headers = response.headers
    for key, value in COMMON_HEADERS.items():
        headers.setdefault(key, value)
    headers["Server"] = SERVER  # aiohttp has set its own by now


_VERSION_PREFIX = re.compile(r"/v([0-9.]+)(?=/)")


class _StrippedPath:
    """What a resource looks at when matching: the method and the path, here without the
    version prefix."""

    __slots__ = ("method", "rel_url")

    def __init__(self, request: web.Request, path: str) -> None:
        self.method = request.method
        self.rel_url = _PathOnly(path)


class _PathOnly:
    __slots__ = ("path_safe",)

    def __init__(self, path: str) -> None:
        self.path_safe = path


class VersionedDispatcher(web.UrlDispatcher):
    """Every route answers bare and under /vX.Y, as dockerd's do.

    Registering each route twice would put all the versioned ones under aiohttp's "/"
    index bucket and make every versioned request try them one regex at a time; instead
    the prefix is taken off before matching and handed on as match_info["version"]."""

    async def resolve(self, request: web.Request) -> web.UrlMappingMatchInfo:
        path = request.rel_url.path_safe
        if path.startswith("/v") and (m := _VERSION_PREFIX.match(path)):
            info = await super().resolve(_StrippedPath(request, path[m.end():]))  # type: ignore[arg-type]
            if isinstance(info, web.UrlMappingMatchInfo) and not isinstance(
                    info.http_exception, web.HTTPException):
                info["version"] = m.group(1)
            return info
        return await super().resolve(request)


def make_app(backend: Backend) -> web.Application:
    with warnings.catch_warnings():
        # aiohttp 3 marks a custom router deprecated; it is still the supported hook for
        # resolution (pinned below aiohttp 4 in pyproject).
        warnings.simplefilter("ignore", DeprecationWarning)
        app = web.Application(router=VersionedDispatcher(), middlewares=[docker_middleware],
                              client_max_size=1024**4,
                              handler_args={"max_field_size": 65536})
    app[BACKEND_KEY] = backend
    app[JSON_LIMIT_KEY] = backend.settings.max_json_body
    app.on_response_prepare.append(_add_common_headers)
    router = Router(app)
    system.register(router)
    containers.register(router)
    execs.register(router)
    images.register(router)
    inspection.register(router)
    networks.register(router)
    volumes.register(router)
    build.register(router)
    return app

