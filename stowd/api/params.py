"""Query and body parsing with Docker's rules (see moby's httputils)."""

import json
from typing import Any

from aiohttp import web

from stowd.engine.errors import InvalidParameter

_FALSE = {"", "0", "no", "false", "none"}


def bool_param(request: web.Request, key: str, default: bool = False) -> bool:
    if key not in request.query:
        return default
    return request.query[key].strip().lower() not in _FALSE


def int_param(request: web.Request, key: str, default: int | None = None) -> int | None:
    raw = request.query.get(key)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise InvalidParameter(f"invalid value for {key}: {raw!r} is not an integer") from exc


def api_version(request: web.Request) -> tuple[int, int]:
    version: tuple[int, int] = request["api_version"]
    return version


async def json_body(request: web.Request, required: bool = False) -> Any:
    """The request's JSON body; {} when empty. 400 for bad content types or bad JSON."""
    raw = await request.read()
    if not raw.strip():
        if required:
            raise InvalidParameter("request body is empty: expected a JSON object")
        return {}
    ctype = request.headers.get("Content-Type", "")
    mime = ctype.split(";", 1)[0].strip().lower()
    if mime and mime != "application/json":
        raise InvalidParameter(
            f"unsupported Content-Type header ({ctype}): must be 'application/json'"
        )
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise InvalidParameter(f"invalid JSON: {exc}") from exc
