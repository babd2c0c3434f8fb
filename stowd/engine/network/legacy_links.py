"""Legacy container links (`--link name:alias`): dockerd's parsing, words and environment.

Pure functions, unit-tested. On the default bridge a link gives the linking container an
/etc/hosts line for the linked one (alias, hostname, name) and the `<ALIAS>_…` variables
below (moby `daemon/links`); on user networks a link is an alias that only the linking
container's embedded DNS answers. Inspect shows links as `/<child>:/<parent>/<alias>`.
"""

from typing import Any

from stowd.engine.errors import Conflict, InvalidParameter


def parse(link: str) -> tuple[str, str]:
    """`name:alias` or `name` (the alias is then the name), names without their `/`."""
    if not isinstance(link, str) or not link:
        raise InvalidParameter(f"bad format for links: {link}")
    parts = link.split(":")
    if len(parts) > 2 or not all(parts):
        raise InvalidParameter(f"bad format for links: {link}")
    name = parts[0].lstrip("/")
    alias = parts[-1].lstrip("/") if len(parts) == 2 else name
    if not name or not alias:
        raise InvalidParameter(f"bad format for links: {link}")
    return name, alias


def parse_all(value: Any) -> list[tuple[str, str]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidParameter("Links must be a list of strings")
    return [parse(v) for v in value]


def inspect_form(child: str, parent: str, alias: str) -> str:
    """`/web:/client/webalias`, as dockerd's inspect shows HostConfig.Links."""
    return f"/{child}:/{parent}/{alias}"


def link_path(parent: str, alias: str) -> str:
    return f"/{parent}/{alias}"


def split_link_path(name: str) -> tuple[str, str]:
    """`/client/webalias` → ("client", "webalias"); the words of dockerd's `rm --link`."""
    full = name if name.startswith("/") else "/" + name
    parent, _, alias = full.rpartition("/")
    if not parent:
        raise Conflict("Conflict, cannot remove the default link name of the container")
    return parent.lstrip("/"), alias


def _port_key(port: str) -> tuple[int, str, int]:
    number, _, proto = port.partition("/")
    proto = proto or "tcp"
    return (0 if proto == "tcp" else 1, proto, int(number))


def env_vars(parent: str, alias: str, child_ip: str, child_env: list[str] | None,
             exposed: dict[str, Any] | None) -> list[str]:
    """dockerd's link variables: `<ALIAS>_PORT…` per exposed port (TCP first, ranges of
    consecutive ports with _START/_END), `<ALIAS>_NAME`, `<ALIAS>_ENV_<var>` of the child."""
    prefix = alias.upper().replace("-", "_")
    ports = sorted((p for p in (exposed or {}) if p.partition("/")[0].isdigit()), key=_port_key)
    env: list[str] = []
    start = end = None
    for i, port in enumerate(ports):
        number_s, _, proto = port.partition("/")
        proto = proto or "tcp"
        number = int(number_s)
        if i == 0:
            start = end = (number, proto)
            env.append(f"{prefix}_PORT={proto}://{child_ip}:{number}")
        key = f"{prefix}_PORT_{number}_{proto.upper()}"
        env += [f"{key}={proto}://{child_ip}:{number}", f"{key}_ADDR={child_ip}",
                f"{key}_PORT={number}", f"{key}_PROTO={proto}"]
        assert start is not None and end is not None
        if number == end[0] + 1 and proto == end[1]:
            end = (number, proto)
            if i < len(ports) - 1:
                continue
        if end != start:
            key = f"{prefix}_PORT_{start[0]}_{start[1].upper()}"
            env += [f"{key}_START={start[1]}://{child_ip}:{start[0]}",
                    f"{key}_PORT_START={start[0]}",
                    f"{key}_END={end[1]}://{child_ip}:{end[0]}",
                    f"{key}_PORT_END={end[0]}"]
        start = end = (number, proto)
    env.append(f"{prefix}_NAME={link_path(parent, alias)}")
    for entry in child_env or []:
        name, sep, value = entry.partition("=")
        if not sep or name in ("HOME", "PATH"):
            continue
        env.append(f"{prefix}_ENV_{name}={value}")
    return env


def hosts_entry(alias: str, child_name: str, child_hostname: str, child_ip: str) -> str:
    """An ExtraHosts-style `names:address` entry: the alias, the child's hostname, and its
    name when that differs from the alias (dockerd's order)."""
    names = f"{alias} {child_hostname}"
    if alias != child_name:
        names += f" {child_name}"
    return f"{names}:{child_ip}"
