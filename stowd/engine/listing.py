"""`docker ps`: which containers a list request selects (filters, all, limit, before/since)."""

import re
from collections.abc import Callable

from stowd.engine import health
from stowd.engine.core.container import EXITED, STATUSES, Container
from stowd.engine.errors import InvalidParameter, NotFound
from stowd.engine.labels import labels_match

ACCEPTED = {"id", "name", "label", "status", "exited", "ancestor", "before", "since", "volume",
            "network", "publish", "expose", "health", "isolation", "is-task"}


def _name_match(c: Container, values: list[str]) -> bool:
    for pattern in values:
        if c.name == pattern.lstrip("/"):
            return True
        try:
            if re.search(pattern, "/" + c.name) or re.search(pattern, c.name):
                return True
        except re.error as exc:
            raise InvalidParameter(f"invalid filter 'name={pattern}': {exc}") from exc
    return False


def _port_match(c: Container, values: list[str]) -> bool:
    exposed = set((c.config.get("ExposedPorts") or {}).keys())
    for v in values:
        if ":" in v:
            raise InvalidParameter(f"invalid filter 'publish={v}'")
        port, _, proto = v.partition("/")
        lo, _, hi = port.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            raise InvalidParameter(f"invalid port: {v}")
        for key in exposed:
            number, _, p = key.partition("/")
            if proto and p != proto:
                continue
            if number.isdigit() and int(lo) <= int(number) <= int(hi or lo):
                return True
    return False


def select(
    containers: list[Container],
    filters: dict[str, list[str]],
    *,
    all_: bool,
    limit: int | None,
    resolve: Callable[[str], Container],
    ancestors: Callable[[str], set[str]],
) -> list[Container]:
    """containers (newest first) narrowed by Docker's rules; keys are ANDed, values ORed."""
    health.validate_filter(filters.get("health", []))
    for value in filters.get("status", []):
        if value not in STATUSES:
            raise InvalidParameter(
                f"invalid filter 'status={value}': Invalid filter 'status={value}'"
            )
    for value in filters.get("exited", []):
        if not value.lstrip("-").isdigit():
            raise InvalidParameter(f"invalid filter 'exited={value}'")
    before = since = None
    try:
        if filters.get("before"):
            before = resolve(filters["before"][0])
        if filters.get("since"):
            since = resolve(filters["since"][0])
    except NotFound as exc:
        raise InvalidParameter(exc.message) from exc
    image_ids: set[str] | None = None
    if filters.get("ancestor"):
        image_ids = set()
        for name in filters["ancestor"]:
            image_ids |= ancestors(name)
    show_all = all_ or bool(filters.get("status")) or bool(filters.get("exited")) or (
        limit is not None and limit > 0)
    out = []
    for c in containers:
        if before is not None and c.created >= before.created:
            continue
        if since is not None and c.created <= since.created:
            continue
        if not show_all and not c.state.running:
            continue
        if "id" in filters and not any(c.id.startswith(v) for v in filters["id"]):
            continue
        if "name" in filters and not _name_match(c, filters["name"]):
            continue
        if "label" in filters and not labels_match(c.config.get("Labels"), filters["label"]):
            continue
        if "status" in filters and c.state.status not in filters["status"]:
            continue
        if "exited" in filters and not (
                c.state.status == EXITED and str(c.state.exit_code) in filters["exited"]):
            continue
        if image_ids is not None and c.image_id not in image_ids:
            continue
        if "expose" in filters and not _port_match(c, filters["expose"]):
            continue
        if ("publish" in filters and not _port_match(
                c, [p for p in filters["publish"]])) or (
                "publish" in filters and not (c.host_config.get("PortBindings") or
                                              c.host_config.get("PublishAllPorts"))):
            continue
        if "network" in filters:  # the names and IDs of the networks it is attached to
            attached = (c.networking_config or {}).get("EndpointsConfig") or {}
            keys = set(attached) | {str(ep.get("NetworkID")) for ep in attached.values()
                                    if isinstance(ep, dict) and ep.get("NetworkID")}
            if not keys & set(filters["network"]):
                continue
        if "volume" in filters:
            # A mount's name (its source when it has none) or destination, as dockerd matches.
            keys = {k for m in c.mounts for k in (m.get("name") or m.get("source"),
                                                  m.get("destination"))}
            keys |= {p for b in c.host_config.get("Binds") or [] for p in b.split(":")[:2]}
            if not keys & set(filters["volume"]):
                continue
        if "health" in filters and health.filter_status(c.state.health) not in filters["health"]:
            continue
        if "is-task" in filters and "false" not in filters["is-task"]:
            continue
        out.append(c)
        if limit is not None and 0 < limit <= len(out):
            break
    return out
