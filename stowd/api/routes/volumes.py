"""Volume routes: /volumes, create, inspect, remove, prune."""

from typing import Any

from aiohttp import web

from stowd.api.backend import VolumesBackend
from stowd.api.common import Router, backend_of, json_ok
from stowd.api.filters import parse_filters
from stowd.api.params import api_version, bool_param, json_body
from stowd.engine.errors import InvalidParameter
from stowd.engine.volumes import LIST_FILTERS, PRUNE_FILTERS, Volume


def volume_shape(manager: VolumesBackend, vol: Volume) -> dict[str, Any]:
    """Docker's volume object, in dockerd's key order."""
    return {
        "CreatedAt": vol.created_at,
        "Driver": vol.driver,
        "Labels": vol.labels,
        "Mountpoint": str(manager.mountpoint(vol.name)),
        "Name": vol.name,
        "Options": vol.options,
        "Scope": "local",
    }


def _string_map(body: dict[str, Any], key: str) -> dict[str, str] | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise InvalidParameter(f"{key} must be a map of strings")
    return value


def _string(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidParameter(f"{key} must be a string")
    return value or ""


async def list_volumes(request: web.Request) -> web.Response:
    manager = backend_of(request).volumes
    filters = parse_filters(request.query.get("filters"), LIST_FILTERS)
    rows = [volume_shape(manager, v) for v in manager.find(filters)]
    return json_ok({"Volumes": rows, "Warnings": []})


async def create(request: web.Request) -> web.Response:
    body = await json_body(request, required=True)
    if not isinstance(body, dict):
        raise InvalidParameter("the request body must be a JSON object")
    manager = backend_of(request).volumes
    vol = await manager.create(_string(body, "Name"), _string(body, "Driver"),
                               _string_map(body, "DriverOpts"), _string_map(body, "Labels"))
    return json_ok(volume_shape(manager, vol), status=201)


async def inspect(request: web.Request) -> web.Response:
    manager = backend_of(request).volumes
    return json_ok(volume_shape(manager, manager.get(request.match_info["name"])))


async def remove(request: web.Request) -> web.Response:
    await backend_of(request).volumes.remove(request.match_info["name"],
                                            force=bool_param(request, "force"))
    return web.Response(status=204)


async def prune(request: web.Request) -> web.Response:
    filters = parse_filters(request.query.get("filters"), PRUNE_FILTERS)
    deleted, reclaimed = await backend_of(request).volumes.prune(filters, api_version(request))
    return json_ok({"VolumesDeleted": deleted, "SpaceReclaimed": reclaimed})


def register(router: Router) -> None:
    router.add("GET", "/volumes", list_volumes)
    router.add("POST", "/volumes/create", create)
    router.add("POST", "/volumes/prune", prune)
    router.add("GET", "/volumes/{name}", inspect)
    router.add("DELETE", "/volumes/{name}", remove)
