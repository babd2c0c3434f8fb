"""Legacy links (`--link`): registered at create, checked at start, their variables in the
process environment, removed by `DELETE /containers/<parent>/<alias>?link=1`. The rules and
words are in network/legacy_links.py; /etc/hosts lines are the network manager's."""

from typing import Any

from stowd.engine.containers.context import Ctx
from stowd.engine.core.container import Container
from stowd.engine.errors import Conflict, InvalidParameter, NotFound
from stowd.engine.network import legacy_links


def resolve(x: Ctx, host_config: dict[str, Any]) -> list[dict[str, str]]:
    """Legacy links are registered on the default bridge only (on a user network a link is
    a DNS alias of the endpoint, as dockerd does); each target must exist."""
    parsed = legacy_links.parse_all(host_config.get("Links"))
    mode = host_config.get("NetworkMode")
    if parsed and mode == "host":
        raise InvalidParameter("conflicting options: host type networking can't be used with "
                               "links. This would result in undefined behavior")
    if not parsed or mode not in ("default", "bridge"):
        return []
    out = []
    for name, alias in parsed:
        try:
            child = x.core.handles.get(name)
        except NotFound as exc:
            raise InvalidParameter(f"could not get container for {name}: {exc.message}") \
                from None
        out.append({"id": child.id, "name": child.name, "alias": alias})
    return out


def env(x: Ctx, c: Container) -> list[str]:
    """The link variables of c's process (children running now, as at dockerd's start)."""
    out: list[str] = []
    for link in c.links:
        child = x.core.handles.find(link["id"])
        if child is None:
            continue
        ip = x.network.bridge_address(child.container)
        if ip:
            out += legacy_links.env_vars(c.name, link["alias"], ip,
                                         child.container.config.get("Env"),
                                         child.container.config.get("ExposedPorts"))
    return out


def check(x: Ctx, c: Container) -> None:
    """Every linked container must run (a removed one is skipped: its link went with it;
    dockerd then fails every start and exec of the parent)."""
    for link in c.links:
        child = x.core.handles.find(link["id"])
        if child is not None and not child.container.state.live:
            raise Conflict(f"Cannot link to a non running container: /{child.container.name} "
                           f"AS {legacy_links.link_path(c.name, link['alias'])}")


async def remove(x: Ctx, name: str) -> None:
    """`DELETE /containers/<parent>/<alias>?link=1`: the parent forgets the link."""
    parent_name, alias = legacy_links.split_link_path(name)
    parent = x.core.handles.get(parent_name)
    kept = [link for link in parent.links if link["alias"] != alias]
    if len(kept) == len(parent.links):
        raise NotFound(f"No such container: {name.lstrip('/')}")
    parent.links = kept
    await x.core.db.persist(parent)
    await x.network.refresh_hosts(parent)


async def refresh_parents(x: Ctx, c: Container) -> None:
    """A started container has a new address: its running parents' /etc/hosts follow."""
    for parent in x.core.handles.containers():
        if any(link["id"] == c.id for link in parent.links):
            await x.network.refresh_hosts(parent)
