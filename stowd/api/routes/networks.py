"""Network routes: /networks, /networks/{id}, create, connect, disconnect, prune."""

from typing import Any

from aiohttp import web

from stowd.api.backend import NetworksBackend
from stowd.api.common import Router, backend_of, json_ok
from stowd.api.filters import parse_filters
from stowd.api.params import api_version, json_body
from stowd.engine.errors import InvalidParameter
from stowd.engine.labels import labels_match, pattern_match
from stowd.engine.network.manager import Network

LIST_FILTERS = {"driver", "id", "label", "name", "scope", "type", "dangling"}
PRUNE_FILTERS = {"until", "label", "label!"}

_FIELDS = ("Name", "Id", "Created", "Scope", "Driver", "EnableIPv6", "IPAM", "Internal",
           "Attachable", "Ingress", "ConfigFrom", "ConfigOnly")


def network_shape(manager: NetworksBackend, net: Network, containers: bool) -> dict[str, Any]:
    """Docker's network object; `Containers` lists the running endpoints (inspect only)."""
    out = {k: net.record.get(k) for k in _FIELDS}
    attached: dict[str, Any] = {}
    if containers:
        for c in manager.containers_on(net):
            if not c.state.live:
                continue
            ep = (c.network.get("endpoints") or {}).get(net.name)
            if ep is None and net.driver == "bridge":
                continue
            ep = ep or {}
            attached[c.id] = {
                "Name": c.name,
                "EndpointID": ep.get("EndpointID", ""),
                "MacAddress": ep.get("MacAddress", ""),
                "IPv4Address": f"{ep['IPAddress']}/{ep['IPPrefixLen']}"
                if ep.get("IPAddress") else "",
                "IPv6Address": f"{ep['GlobalIPv6Address']}/{ep['GlobalIPv6PrefixLen']}"
                if ep.get("GlobalIPv6Address") else "",
            }
    out["Containers"] = attached
    out["Options"] = net.record.get("Options") or {}
    out["Labels"] = net.record.get("Labels") or {}
    return out


def _selected(manager: NetworksBackend, net: Network, filters: dict[str, list[str]]) -> bool:
    if "driver" in filters and net.driver not in filters["driver"]:
        return False
    if "name" in filters and not any(pattern_match(v, net.name) for v in filters["name"]):
        return False
    if "id" in filters and not any(pattern_match(v, net.id) for v in filters["id"]):
        return False
    if "scope" in filters and "local" not in filters["scope"]:
        return False
    if "type" in filters:
        for value in filters["type"]:
            if value not in ("custom", "builtin"):
                raise InvalidParameter(f"invalid filter: 'type'='{value}'")
        kind = "builtin" if net.predefined else "custom"
        if kind not in filters["type"]:
            return False
    if "label" in filters and not labels_match(net.record.get("Labels"), filters["label"]):
        return False
    if "dangling" in filters:
        value = filters["dangling"][-1].lower()
        if value not in ("true", "false", "1", "0"):
            raise InvalidParameter(f"invalid filter: 'dangling'='{value}'")
        dangling = not net.predefined and not manager.containers_on(net)
        if dangling != (value in ("true", "1")):
            return False
    return True


async def list_networks(request: web.Request) -> web.Response:
    manager = backend_of(request).network
    filters = parse_filters(request.query.get("filters"), LIST_FILTERS)
    rows = [network_shape(manager, n, containers=False) for n in manager.networks()
            if _selected(manager, n, filters)]
    return json_ok(rows)


async def inspect(request: web.Request) -> web.Response:
    manager = backend_of(request).network
    net = manager.get(request.match_info["id"])
    return json_ok(network_shape(manager, net, containers=True))


async def create(request: web.Request) -> web.Response:
    body = await json_body(request, required=True)
    if not isinstance(body, dict):
        raise InvalidParameter("the request body must be a JSON object")
    net, warning = await backend_of(request).network.create_network(body)
    return json_ok({"Id": net.id, "Warning": warning}, status=201)


def _container_ref(body: Any) -> str:
    if not isinstance(body, dict) or not isinstance(body.get("Container"), str) \
            or not body["Container"]:
        raise InvalidParameter("a container is required: {\"Container\": \"<id or name>\"}")
    return str(body["Container"])


async def connect(request: web.Request) -> web.Response:
    body = await json_body(request, required=True)
    ref = _container_ref(body)
    endpoint = body.get("EndpointConfig")
    if api_version(request) < (1, 44) and isinstance(endpoint, dict):
        endpoint.pop("MacAddress", None)  # per-endpoint MACs came with API 1.44
    await backend_of(request).network.connect(request.match_info["id"], ref, endpoint)
    return web.Response(status=200)


async def disconnect(request: web.Request) -> web.Response:
    body = await json_body(request, required=True)
    ref = _container_ref(body)
    await backend_of(request).network.disconnect(request.match_info["id"], ref,
                                                bool(body.get("Force")))
    return web.Response(status=200)


async def remove(request: web.Request) -> web.Response:
    await backend_of(request).network.remove_network(request.match_info["id"])
    return web.Response(status=204)


async def prune(request: web.Request) -> web.Response:
    filters = parse_filters(request.query.get("filters"), PRUNE_FILTERS)
    deleted = await backend_of(request).network.prune(filters)
    return json_ok({"NetworksDeleted": deleted or None})


def register(router: Router) -> None:
    router.add("GET", "/networks", list_networks)
    router.add("POST", "/networks/create", create)
    router.add("POST", "/networks/prune", prune)
    router.add("GET", "/networks/{id}", inspect)
    router.add("DELETE", "/networks/{id}", remove)
    router.add("POST", "/networks/{id}/connect", connect)
    router.add("POST", "/networks/{id}/disconnect", disconnect)

