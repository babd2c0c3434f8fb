"""/_ping, /version, /info and /events."""

import asyncio
import ipaddress
import os
import platform
import time
from typing import Any

from aiohttp import web

from stowd import __version__
from stowd.api import versions
from stowd.api.common import Router, backend_of, json_bytes, json_ok
from stowd.api.filters import parse_filters
from stowd.api.params import api_version, time_param
from stowd.engine import hostinfo
from stowd.engine.core.container import PAUSED, RUNNING
from stowd.engine.core.events import FILTERS as EVENT_FILTERS
from stowd.engine.core.events import Event, EventFilter
from stowd.engine.errors import NotImplementedByEngine, Unavailable

PING_HEADERS = {
    "Cache-Control": "no-cache, no-store, must-revalidate",
    "Pragma": "no-cache",
    "Builder-Version": "1",
    "Swarm": "inactive",
}


async def ping(request: web.Request) -> web.Response:
    if request.method == "HEAD":
        return web.Response(status=200, headers={**PING_HEADERS, "Content-Length": "0",
                                                 "Content-Type": "text/plain; charset=utf-8"})
    return web.Response(text="OK", headers=PING_HEADERS, content_type="text/plain",
                        charset="utf-8")


# /version never changes while stowd runs: its body is built once per runtime binary.
_VERSION_BODIES: dict[str, bytes] = {}


def _version_body(runtime_name: str, runtime_path: str) -> bytes:
    """Blocking (runs runc/conmon --version the first time): call from a thread."""
    info = hostinfo.host_facts(runtime_path)
    details = {
        "ApiVersion": versions.MAX_API_VERSION,
        "Arch": info.arch,
        "BuildTime": "",
        "Experimental": "false",
        "GitCommit": "",
        "GoVersion": f"python{platform.python_version()}",
        "KernelVersion": info.kernel,
        "MinAPIVersion": versions.MIN_API_VERSION,
        "Os": "linux",
    }
    body = {
        "Platform": {"Name": "stowd"},
        "Components": [
            {"Name": "Engine", "Version": __version__, "Details": details},
            {"Name": runtime_name, "Version": info.runtime_version,
             "Details": {"GitCommit": ""}},
            {"Name": "conmon", "Version": info.conmon_version, "Details": {"GitCommit": ""}},
        ],
        "Version": __version__,
        "ApiVersion": versions.MAX_API_VERSION,
        "MinAPIVersion": versions.MIN_API_VERSION,
        "GitCommit": "",
        "GoVersion": details["GoVersion"],
        "Os": "linux",
        "Arch": info.arch,
        "KernelVersion": info.kernel,
        "BuildTime": "",
    }
    return json_bytes(body)


async def version(request: web.Request) -> web.Response:
    runtime = backend_of(request).runtime
    body = _VERSION_BODIES.get(runtime.path)
    if body is None:
        body = await asyncio.to_thread(_version_body, runtime.name, runtime.path)
        _VERSION_BODIES[runtime.path] = body
    return web.Response(body=body, content_type="application/json")


def _registry_config(insecure: list[str], mirrors: list[str]) -> dict[str, Any]:
    """dockerd's RegistryConfig: `docker info` prints its Insecure Registries and Registry
    Mirrors from it. Mirrors end with a slash, as dockerd normalises them."""
    cidrs = ["127.0.0.0/8"]
    urls = [m.rstrip("/") + "/" for m in mirrors]
    indexes: dict[str, Any] = {"docker.io": {"Name": "docker.io", "Mirrors": urls,
                                             "Secure": True, "Official": True}}
    for entry in insecure:
        text = entry.removeprefix("http://").removeprefix("https://").rstrip("/")
        try:
            network = str(ipaddress.ip_network(text, strict=False))
        except ValueError:
            indexes[text] = {"Name": text, "Mirrors": [], "Secure": False, "Official": False}
            continue
        if network not in cidrs:
            cidrs.append(network)
    return {"AllowNondistributableArtifactsCIDRs": [],
            "AllowNondistributableArtifactsHostnames": [],
            "InsecureRegistryCIDRs": cidrs, "IndexConfigs": indexes, "Mirrors": urls}


async def info(request: web.Request) -> web.Response:
    engine = backend_of(request)
    facts = await asyncio.to_thread(hostinfo.host_facts, engine.runtime.path, engine.data_root)
    containers = engine.containers.all()
    # As dockerd's state counter (moby daemon/monitor.go setStateCounter): only "running"
    # and "paused" have buckets; restarting, created, exited and dead count as stopped.
    running = sum(1 for c in containers if c.state.status == RUNNING)
    paused = sum(1 for c in containers if c.state.status == PAUSED)
    images = await asyncio.to_thread(engine.images.all)
    body: dict[str, Any] = {
        "ID": facts.engine_id(engine.data_root),
        "Containers": len(containers),
        "ContainersRunning": running,
        "ContainersPaused": paused,
        "ContainersStopped": len(containers) - running - paused,
        "Images": len(images),
        "Driver": "overlay2",
        "DriverStatus": [["Backing Filesystem", facts.backing_fs], ["Supports d_type", "true"],
                         ["Native Overlay Diff", "true"], ["userxattr", "false"]],
        "Plugins": {"Volume": ["local"], "Network": ["bridge", "host", "null"],
                    "Authorization": None, "Log": ["k8s-file"]},
        "MemoryLimit": True,
        "SwapLimit": facts.cgroup_version == "2",
        "CpuCfsPeriod": True,
        "CpuCfsQuota": True,
        "CPUShares": True,
        "CPUSet": True,
        "PidsLimit": True,
        "IPv4Forwarding": facts.ipv4_forwarding,
        "BridgeNfIptables": facts.bridge_nf_iptables,
        "BridgeNfIp6tables": facts.bridge_nf_ip6tables,
        "Debug": engine.settings.log_level == "debug",
        "NFd": facts.open_fds,
        "OomKillDisable": facts.cgroup_version == "1",
        "NGoroutines": len(asyncio.all_tasks()),
        "SystemTime": _now_rfc3339(),
        "LoggingDriver": "k8s-file",
        "CgroupDriver": "cgroupfs",
        "CgroupVersion": facts.cgroup_version,
        "NEventsListener": engine.events.listeners,
        "KernelVersion": facts.kernel,
        "OperatingSystem": facts.os_name,
        "OSVersion": facts.os_version,
        "OSType": "linux",
        "Architecture": platform.machine(),
        "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": _registry_config(engine.settings.insecure_registries,
                                           engine.settings.registry_mirrors),
        "NCPU": os.cpu_count() or 1,
        "MemTotal": facts.mem_total,
        "GenericResources": None,
        "DockerRootDir": str(engine.data_root),
        "HttpProxy": os.environ.get("HTTP_PROXY", ""),
        "HttpsProxy": os.environ.get("HTTPS_PROXY", ""),
        "NoProxy": os.environ.get("NO_PROXY", ""),
        "Name": facts.hostname,
        "Labels": [],
        "ExperimentalBuild": False,
        "ServerVersion": __version__,
        "Runtimes": {engine.runtime.name: {"path": engine.runtime.path}},
        "DefaultRuntime": engine.runtime.name,
        "Swarm": {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive",
                  "ControlAvailable": False, "Error": "", "RemoteManagers": None},
        "LiveRestoreEnabled": True,
        "Isolation": "",
        "InitBinary": engine.settings.init_path,
        "ContainerdCommit": {"ID": "", "Expected": ""},
        "RuncCommit": {"ID": facts.runtime_version, "Expected": facts.runtime_version},
        "InitCommit": {"ID": "", "Expected": ""},
        "SecurityOptions": engine.host_security.security_options(),
        "Warnings": None,
    }
    return json_ok(body)


def _now_rfc3339() -> str:
    from stowd.engine.core.container import rfc3339_nano

    return rfc3339_nano()


# How often a quiet /events stream checks that its client is still there: aiohttp does not
# cancel a handler when the peer goes away, and a forgotten subscriber would leak.
DISCONNECT_POLL = 1.0


async def events(request: web.Request) -> web.StreamResponse:
    engine = backend_of(request)
    wanted = EventFilter(parse_filters(request.query.get("filters"), EVENT_FILTERS))
    since, until = time_param(request, "since"), time_param(request, "until")
    legacy = api_version(request) < (1, 52)
    queue = engine.events.subscribe()
    response = web.StreamResponse(headers={"Content-Type": "application/json"})

    def line(event: Event) -> bytes:
        return json_bytes(event.to_docker(legacy))

    try:
        await response.prepare(request)  # headers go out now: the CLI waits for them
        if since is not None:
            for event in list(engine.events.history):
                ts = event.time_nano / 1e9
                if ts >= since and (until is None or ts <= until) and wanted.matches(event):
                    await response.write(line(event))
        while request.transport is not None and not request.transport.is_closing():
            timeout = DISCONNECT_POLL
            if until is not None:
                remaining = until - time.time()
                if remaining <= 0:
                    break
                timeout = min(timeout, remaining)
            try:
                event = await asyncio.wait_for(queue.get(), timeout)
            except TimeoutError:
                continue
            if since is not None and event.time_nano / 1e9 < since:
                continue
            if until is not None and event.time_nano / 1e9 > until:
                break
            if wanted.matches(event):
                await response.write(line(event))
    except ConnectionResetError:
        pass  # the client went away mid-write
    finally:
        engine.events.unsubscribe(queue)
    return response


NOT_A_SWARM_MANAGER = ('This node is not a swarm manager. Use "docker swarm init" or '
                       '"docker swarm join" to connect this node to swarm and try again.')


async def swarm_manager_only(request: web.Request) -> web.Response:
    """Swarm objects (nodes, services, tasks, secrets, configs): stowd is a single engine,
    never a swarm node, and answers as an engine outside any swarm does."""
    raise Unavailable(NOT_A_SWARM_MANAGER)


async def swarm_leave(request: web.Request) -> web.Response:
    raise Unavailable("This node is not part of a swarm")


async def swarm_join(request: web.Request) -> web.Response:
    raise NotImplementedByEngine("stowd does not run swarm mode: it is a single engine")


async def plugins(request: web.Request) -> web.Response:
    return json_ok([])


async def build_prune(request: web.Request) -> web.Response:
    """The classic builder's cache is its step images: prune removes those unused."""
    deleted, reclaimed = await backend_of(request).builder.prune_cache()
    return json_ok({"CachesDeleted": deleted or None, "SpaceReclaimed": reclaimed})


def register(router: Router) -> None:
    router.add("POST", "/swarm/leave", swarm_leave)
    for path in ("/swarm/init", "/swarm/join"):
        router.add("POST", path, swarm_join)
    for path in ("/swarm", "/nodes", "/services", "/tasks", "/secrets", "/configs"):
        router.add("GET", path, swarm_manager_only)
    router.add("GET", "/plugins", plugins)
    router.add("POST", "/build/prune", build_prune)
    router.add("GET", "/_ping", ping)
    router.add("HEAD", "/_ping", ping)
    router.add("GET", "/version", version)
    router.add("GET", "/info", info)
    router.add("GET", "/events", events)
