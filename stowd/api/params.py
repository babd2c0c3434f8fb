"""Query and body parsing with Docker's rules (see moby's httputils)."""

import json
from typing import Any

from aiohttp import web

from stowd.engine.core.container import NANOS
from stowd.engine.errors import InvalidParameter, TooLarge
from stowd.engine.timespec import unix_nanos

# The daemon's --max-json-body, set by make_app (a default for apps built in tests).
JSON_LIMIT_KEY = web.AppKey("max_json_body", int)
DEFAULT_JSON_LIMIT = 64 << 20
# Deeper than any request of the API (a create body is at most 6 levels); Python's parser
# would raise RecursionError near 1,000 and later code would recurse on what it returned.
MAX_JSON_DEPTH = 64
# Every number of the API is an int64 or a uint64 in dockerd (Go refuses anything else).
MIN_JSON_INT = -(1 << 63)
MAX_JSON_INT = (1 << 64) - 1

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


def time_param(request: web.Request, key: str) -> float | None:
    """`since`/`until` of events: Unix seconds (the client turns `10m` or an RFC 3339 time
    into that); None when absent."""
    nanos = time_nanos_param(request, key)
    return None if nanos is None else nanos / NANOS


def time_nanos_param(request: web.Request, key: str) -> int | None:
    """`since`/`until` in exact Unix nanoseconds (logs compare them with nanosecond
    times); None when absent."""
    raw = request.query.get(key, "")
    if not raw:
        return None
    try:
        return unix_nanos(raw)
    except ValueError as exc:
        raise InvalidParameter(f"invalid value for {key}: {raw}") from exc


def api_version(request: web.Request) -> tuple[int, int]:
    version: tuple[int, int] = request["api_version"]
    return version


def _limit_text(limit: int) -> str:
    return f"{limit >> 20} MiB" if limit % (1 << 20) == 0 else f"{limit} bytes"


async def read_limited(request: web.Request, limit: int) -> bytes:
    """The whole body, refused (413) beyond `limit` bytes: by Content-Length before reading
    anything, else as soon as the chunks read pass it, so memory stays under the limit."""
    too_large = TooLarge(f"request body is larger than the limit of {_limit_text(limit)} "
                         "(the daemon's --max-json-body)")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.readany():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _check_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise InvalidParameter(f"invalid JSON: number {text} is out of range")
    return value


def _where(path: list[str | int]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else p)
                   for i, p in enumerate(path)) or "the body"


def check_json(doc: Any) -> None:
    """400 for what Docker's Go decoder refuses: nesting deeper than any request, integers
    no 64-bit field holds. Iterative, so no input can exhaust the stack."""
    stack: list[tuple[Any, list[str | int]]] = [(doc, [])]
    while stack:
        value, path = stack.pop()
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int):
            if not MIN_JSON_INT <= value <= MAX_JSON_INT:
                raise InvalidParameter(
                    f"invalid JSON: number {value} at {_where(path)} is out of range "
                    "(a 64-bit integer)")
            continue
        items = (value.items() if isinstance(value, dict)
                 else enumerate(value) if isinstance(value, list) else None)
        if items is None:
            continue
        if len(path) >= MAX_JSON_DEPTH:
            raise InvalidParameter(f"invalid JSON: nested too deep (more than {MAX_JSON_DEPTH} "
                                   f"levels) at {_where(path[:3])}...")
        stack.extend((v, [*path, k]) for k, v in items)


def parse_json(raw: bytes) -> Any:
    """JSON with the API's bounds (see check_json); InvalidParameter for anything else."""
    try:
        doc = json.loads(raw, parse_constant=_reject_constant, parse_float=_check_float)
    except RecursionError as exc:
        raise InvalidParameter(f"invalid JSON: nested too deep (more than {MAX_JSON_DEPTH} "
                               "levels)") from exc
    except ValueError as exc:
        raise InvalidParameter(f"invalid JSON: {exc}") from exc
    check_json(doc)
    return doc


async def json_body(request: web.Request, required: bool = False) -> Any:
    """The request's JSON body; {} when empty. 400 for bad content types or bad JSON, 413
    beyond the daemon's limit."""
    raw = await read_limited(request, request.app.get(JSON_LIMIT_KEY, DEFAULT_JSON_LIMIT))
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
    return parse_json(raw)
