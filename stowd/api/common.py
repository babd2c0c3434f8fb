"""What every route module needs, and nothing else: the backend of a request, the route
table, the one JSON writer, the headers every answer carries. A leaf: it imports no
other api module, so app.py -> routes -> common has no circle."""

import json
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from stowd import __version__
from stowd.api import versions
from stowd.api.backend import Backend

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

BACKEND_KEY = web.AppKey("backend", Backend)

COMMON_HEADERS = {
    "Api-Version": versions.MAX_API_VERSION,
    "Docker-Experimental": "false",
    "Ostype": "linux",
}
SERVER = f"stowd/{__version__} (linux)"


def backend_of(request: web.Request) -> Backend:
    return request.app[BACKEND_KEY]


class Router:
    """Where route modules register their handlers (bare paths; see VersionedDispatcher)."""

    def __init__(self, app: web.Application) -> None:
        self.app = app

    def add(self, method: str, path: str, handler: Handler) -> None:
        self.app.router.add_route(method, path, handler)


def json_bytes(data: object) -> bytes:
    """JSON as dockerd writes it: compact, one line, newline-terminated, UTF-8 as is.

    orjson writes it about ten times faster than the json module (a fifth of the time of a
    `GET /containers/json` went to json.dumps); what it refuses (an int past 64 bits) goes
    through the json module."""
    try:
        return orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_APPEND_NEWLINE)
    except TypeError:
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def json_ok(data: object, status: int = 200) -> web.Response:
    """The one JSON answer: dockerd's compact encoding, application/json."""
    return web.Response(body=json_bytes(data), status=status, content_type="application/json")
