"""Docker's JSON shapes, built from engine records: one function per shape."""

import time
from typing import Any

from stowd.engine import health
from stowd.engine.core.container import (
    CREATED,
    DEAD,
    EXITED,
    PAUSED,
    REMOVING,
    RESTARTING,
    RUNNING,
    ZERO_TIME,
    Container,
    parse_time,
)
from stowd.engine.images.store import Image
from stowd.engine.network import legacy_links, ports


def human_duration(seconds: float) -> str:
    """go-units HumanDuration, which `docker ps` shows."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = s // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = round(s / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{hours // 24 // 365} years"


def status_text(c: Container, now: float | None = None) -> str:
    now = time.time() if now is None else now
    st = c.state
    if st.status == RUNNING:
        return ("Up " + human_duration(now - parse_time(st.started_at))
                + health.status_suffix(st.health))
    if st.status == PAUSED:
        return "Up " + human_duration(now - parse_time(st.started_at)) + " (Paused)"
    if st.status == RESTARTING:
        return f"Restarting ({st.exit_code}) {human_duration(now - parse_time(st.finished_at))} ago"
    if st.status == REMOVING:
        return "Removal In Progress"
    if st.status == DEAD:
        return "Dead"
    if st.status == EXITED or (st.status == CREATED and st.finished_at != ZERO_TIME):
        if st.finished_at == ZERO_TIME:
            return "Created"
        return f"Exited ({st.exit_code}) {human_duration(now - parse_time(st.finished_at))} ago"
    return "Created"


def command_text(c: Container) -> str:
    """The list's Command as dockerd writes it: arguments holding a space in single quotes."""
    return " ".join([c.path, *(f"'{a}'" if " " in a else a for a in c.args)])


def network_mode(c: Container) -> str:
    mode = c.host_config.get("NetworkMode") or "default"
    return "bridge" if mode == "default" else mode


def _published(c: Container) -> tuple[list[str], list[ports.Binding]] | None:
    """Exposed port keys and host bindings of a running container with its own network."""
    if not c.state.live or c.network.get("mode") not in ("bridge", "none"):
        return None
    keys = ports.exposed_keys(c.config.get("ExposedPorts"), c.host_config.get("PortBindings"))
    return keys, [ports.Binding.from_record(r) for r in c.network.get("ports") or []]


def ports_summary(c: Container) -> list[dict[str, Any]]:
    """The list's Ports: bindings and exposed ports while running; empty otherwise (Docker)."""
    published = _published(c)
    return ports.summary(*published) if published else []


def _endpoints(c: Container) -> dict[str, dict[str, Any]]:
    """NetworkSettings.Networks: each attached network, with its address while running."""
    running = c.state.live
    live = (c.network.get("endpoints") or {}) if running else {}
    out = {}
    for name, cfg in ((c.networking_config or {}).get("EndpointsConfig") or {}).items():
        ep = live.get(name) or {}
        out[name] = {
            "IPAMConfig": cfg.get("IPAMConfig"),
            "Links": cfg.get("Links"),
            "Aliases": ep.get("Aliases", cfg.get("Aliases")),
            "NetworkID": cfg.get("NetworkID", "") if running or c.state.has_been_started
            else "",
            "EndpointID": ep.get("EndpointID", ""),
            "Gateway": ep.get("Gateway", ""),
            "IPAddress": ep.get("IPAddress", ""),
            "IPPrefixLen": ep.get("IPPrefixLen", 0),
            "IPv6Gateway": ep.get("IPv6Gateway", ""),
            "GlobalIPv6Address": ep.get("GlobalIPv6Address", ""),
            "GlobalIPv6PrefixLen": ep.get("GlobalIPv6PrefixLen", 0),
            "MacAddress": ep.get("MacAddress", ""),
            "DriverOpts": cfg.get("DriverOpts"),
        }
    return out


def container_summary(c: Container, image_ref: str, sizes: tuple[int, int] | None,
                      version: tuple[int, int]) -> dict[str, Any]:
    row: dict[str, Any] = {
        "Id": c.id,
        "Names": ["/" + c.name],
        "Image": image_ref,
        "ImageID": c.image_id,
        "Command": command_text(c),
        "Created": int(parse_time(c.created)),
        "Ports": ports_summary(c),
        "Labels": c.config.get("Labels") or {},
        "State": c.state.status,
        "Status": status_text(c),
        "HostConfig": {"NetworkMode": network_mode(c)},
        "NetworkSettings": {"Networks": _endpoints(c)},
        "Mounts": mounts_of(c),
    }
    if sizes is not None:  # omitted when zero, as dockerd's omitempty does
        if sizes[0]:
            row["SizeRw"] = sizes[0]
        if sizes[1]:
            row["SizeRootFs"] = sizes[1]
    return row


def mount_point(m: dict[str, Any]) -> dict[str, Any]:
    """One entry of `Mounts` (mountspec.MountPoint record), in dockerd's shape."""
    out: dict[str, Any] = {"Type": m["type"]}
    if m["type"] == "volume":
        out["Name"] = m.get("name", "")
    out["Source"] = m.get("source", "")
    out["Destination"] = m["destination"]
    if m["type"] == "volume":
        out["Driver"] = m.get("driver", "local")
    out.update(Mode=m.get("mode", ""), RW=bool(m.get("rw", True)),
               Propagation=m.get("propagation", ""))
    return out


def mounts_of(c: Container) -> list[dict[str, Any]]:
    if c.mounts:
        return [mount_point(m) for m in c.mounts]
    out = []  # a record from before volumes
    for bind in c.host_config.get("Binds") or []:
        parts = bind.split(":")
        opts = parts[2].split(",") if len(parts) > 2 else []
        if parts[0].startswith("/"):
            out.append({"Type": "bind", "Source": parts[0], "Destination": parts[1],
                        "Mode": parts[2] if len(parts) > 2 else "", "RW": "ro" not in opts,
                        "Propagation": "rprivate"})
        else:
            out.append({"Type": "volume", "Name": parts[0], "Source": "", "Destination": parts[1],
                        "Driver": "local", "Mode": parts[2] if len(parts) > 2 else "",
                        "RW": "ro" not in opts, "Propagation": ""})
    return out


def state_of(c: Container) -> dict[str, Any]:
    st = c.state
    return {
        "Status": st.status,
        "Running": st.running,
        "Paused": st.status == PAUSED,
        "Restarting": st.status == RESTARTING,
        "OOMKilled": st.oom_killed,
        "Dead": st.status == DEAD,
        "Pid": st.pid if st.live else 0,
        "ExitCode": st.exit_code,
        "Error": st.error,
        "StartedAt": st.started_at,
        "FinishedAt": st.finished_at,
        **({"Health": st.health} if st.health is not None else {}),
    }


def network_settings(c: Container) -> dict[str, Any]:
    """Docker's NetworkSettings; the top-level address fields are the default bridge's."""
    networks = _endpoints(c)
    bridge = networks.get("bridge") or {}
    published = _published(c)
    running = c.state.live
    return {
        "Bridge": "",
        "SandboxID": c.network.get("sandbox_id", "") if running else "",
        "HairpinMode": False,
        "LinkLocalIPv6Address": "",
        "LinkLocalIPv6PrefixLen": 0,
        "Ports": ports.ports_view(*published) if published else {},
        "SandboxKey": c.network.get("sandbox", "") if running else "",
        "SecondaryIPAddresses": None,
        "SecondaryIPv6Addresses": None,
        "EndpointID": bridge.get("EndpointID", ""),
        "Gateway": bridge.get("Gateway", ""),
        "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0,
        "IPAddress": bridge.get("IPAddress", ""),
        "IPPrefixLen": bridge.get("IPPrefixLen", 0),
        "IPv6Gateway": "",
        "MacAddress": bridge.get("MacAddress", ""),
        "Networks": networks,
    }


def container_inspect(c: Container, paths: dict[str, str], graph: dict[str, str],
                      sizes: tuple[int, int] | None, version: tuple[int, int]) -> dict[str, Any]:
    host_config = dict(c.host_config)
    if version < (1, 42):
        host_config["ConsoleSize"] = [0, 0]
    # dockerd shows the links it registered (default bridge only), as /child:/parent/alias
    host_config["Links"] = [legacy_links.inspect_form(link["name"], c.name, link["alias"])
                            for link in c.links] or None
    out: dict[str, Any] = {
        "Id": c.id,
        "Created": c.created,
        "Path": c.path,
        "Args": c.args,
        "State": state_of(c),
        "Image": c.image_id,
        "ResolvConfPath": paths["resolv_conf"],
        "HostnamePath": paths["hostname"],
        "HostsPath": paths["hosts"],
        "LogPath": paths["log"],
        "Name": "/" + c.name,
        "RestartCount": c.restart_count,
        "Driver": c.driver,
        "Platform": c.platform,
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "ExecIDs": None,
        "HostConfig": host_config,
        "GraphDriver": {"Data": graph, "Name": c.driver},
        "Mounts": mounts_of(c),
        "Config": c.config,
        "NetworkSettings": network_settings(c),
    }
    if sizes is not None:
        out["SizeRw"], out["SizeRootFs"] = sizes
    return out


def image_summary(image: Image, version: tuple[int, int], containers: int,
                  shared_size: int = -1, repo_tags: list[str] | None = None) -> dict[str, Any]:
    """One entry of GET /images/json; repo_tags narrows the tags shown (reference filter).

    Before API 1.43 an untagged image shows `<none>` placeholders; from 1.44 VirtualSize is
    gone; before 1.51 Containers is -1 (dockerd only counted them for `system df`)."""
    tags = image.repo_tags if repo_tags is None else repo_tags
    digests = image.repo_digests
    if version < (1, 43) and not tags:
        tags, digests = ["<none>:<none>"], digests or ["<none>@<none>"]
    out = {
        "Containers": containers if version >= (1, 51) else -1,
        "Created": int(parse_time(image.created)) if image.created else 0,
        "Id": image.id,
        "Labels": image.container_config.get("Labels") or None,
        "ParentId": image.parent,
        "RepoDigests": digests,
        "RepoTags": tags,
        "SharedSize": shared_size,
        "Size": image.size,
        "VirtualSize": image.size,
    }
    if version >= (1, 44):
        out.pop("VirtualSize")
    return out


def image_inspect(image: Image, layer_dirs: list[str], version: tuple[int, int]) -> dict[str, Any]:
    cfg = image.config
    out: dict[str, Any] = {
        "Id": image.id,
        "RepoTags": image.repo_tags,
        "RepoDigests": image.repo_digests,
        "Parent": image.parent,
        "Comment": cfg.get("comment", ""),
        "Created": cfg.get("created", image.created),
        "Container": cfg.get("container", ""),
        "ContainerConfig": cfg.get("container_config") or _empty_config(),
        "DockerVersion": cfg.get("docker_version", ""),
        "Author": cfg.get("author", ""),
        "Config": _image_config(image.container_config),
        "Architecture": cfg.get("architecture", ""),
        **({"Variant": cfg["variant"]} if cfg.get("variant") else {}),
        "Os": cfg.get("os", "linux"),
        "Size": image.size,
        "VirtualSize": image.size,
        "GraphDriver": {
            # As dockerd, no LowerDir for an image of one layer.
            "Data": {"MergedDir": "", "UpperDir": layer_dirs[0],
                     **({"LowerDir": ":".join(layer_dirs[1:])} if layer_dirs[1:] else {}),
                     "WorkDir": ""}
            if layer_dirs else None,
            "Name": "overlay2",
        },
        "RootFS": {"Type": "layers",
                   "Layers": list((cfg.get("rootfs") or {}).get("diff_ids") or [])},
        "Metadata": {"LastTagTime": image.last_tag_time or ZERO_TIME},
    }
    if version >= (1, 44):
        out.pop("VirtualSize")
    return out


def _empty_config() -> dict[str, Any]:
    return _image_config({})


def _image_config(cfg: dict[str, Any]) -> dict[str, Any]:
    return {
        "Hostname": cfg.get("Hostname", ""),
        "Domainname": cfg.get("Domainname", ""),
        "User": cfg.get("User", ""),
        "AttachStdin": bool(cfg.get("AttachStdin")),
        "AttachStdout": bool(cfg.get("AttachStdout")),
        "AttachStderr": bool(cfg.get("AttachStderr")),
        **({"ExposedPorts": cfg["ExposedPorts"]} if cfg.get("ExposedPorts") else {}),
        "Tty": bool(cfg.get("Tty")),
        "OpenStdin": bool(cfg.get("OpenStdin")),
        "StdinOnce": bool(cfg.get("StdinOnce")),
        "Env": cfg.get("Env"),
        "Cmd": cfg.get("Cmd"),
        **({"Healthcheck": cfg["Healthcheck"]} if cfg.get("Healthcheck") else {}),
        **({"ArgsEscaped": True} if cfg.get("ArgsEscaped") else {}),
        "Image": cfg.get("Image", ""),
        "Volumes": cfg.get("Volumes"),
        "WorkingDir": cfg.get("WorkingDir", ""),
        "Entrypoint": cfg.get("Entrypoint"),
        "OnBuild": cfg.get("OnBuild"),
        "Labels": cfg.get("Labels"),
        **({"StopSignal": cfg["StopSignal"]} if cfg.get("StopSignal") else {}),
        **({"Shell": cfg["Shell"]} if cfg.get("Shell") else {}),
    }
