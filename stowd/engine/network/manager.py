"""Container networks: the networks themselves, and each container's namespace in them.

Modes (HostConfig.NetworkMode): `bridge`/`default` and user-defined bridge networks give a
container its own namespace (`<exec-root>/netns/<id>`) with loopback and one veth per
network (eth0, eth1, …) on the network's bridge; `none` gives loopback only; `host` shares
stowd's namespace; `container:<id>` joins another container's.

State: networks are rows in SQLite. What a running container holds (namespace, endpoints,
addresses, published ports, DNAT rules) is its record's `network` field, written *before*
anything is set up on the host, so that start-up recovery always knows what to undo. Every
host-side step (links.py, iptables.py, netns.py) is idempotent. Address leases live in
memory, rebuilt at start-up from the running containers' records.
"""

import asyncio
import concurrent.futures
import contextlib
import hashlib
import ipaddress
import logging
import os
import re
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stowd.engine import rootfs
from stowd.engine.core.container import Container, parse_time, rfc3339_nano
from stowd.engine.core.core import Core
from stowd.engine.errors import Conflict, Forbidden, InvalidParameter, NotFound, SystemError_
from stowd.engine.labels import labels_match
from stowd.engine.network import dns, ipam, legacy_links, links, netns, ports, proxy
from stowd.engine.network.iptables import Firewall
from stowd.engine.options import HOST_GATEWAY
from stowd.engine.timespec import parse_until

log = logging.getLogger("stowd.network")

PREDEFINED = ("bridge", "host", "none")
# dockerd takes nearly any network name (spaces included); "/" could not be routed.
NAME_RE = re.compile(r"^[^/\x00-\x1f\x7f]+$")
BRIDGE_NAME_OPTION = "com.docker.network.bridge.name"


@dataclass
class Network:
    """One network: Docker's record as stored, with typed accessors."""

    record: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.record["Id"])

    @property
    def name(self) -> str:
        return str(self.record["Name"])

    @property
    def driver(self) -> str:
        return str(self.record["Driver"])

    @property
    def bridge(self) -> str:
        return str(self.record.get("bridge") or "")

    @property
    def internal(self) -> bool:
        return bool(self.record.get("Internal"))

    @property
    def predefined(self) -> bool:
        return self.name in PREDEFINED

    @property
    def user_defined(self) -> bool:
        """Docker's embedded DNS and aliases work on these, not on the default bridge."""
        return self.driver == "bridge" and self.name != "bridge"

    def ipam_configs(self, v6: bool) -> list[dict[str, Any]]:
        configs = (self.record.get("IPAM") or {}).get("Config") or []
        return [c for c in configs if (":" in str(c.get("Subnet") or "")) == v6]

    @property
    def ipam_config(self) -> dict[str, Any]:
        """The IPv4 entry of IPAM.Config."""
        configs = self.ipam_configs(v6=False)
        return configs[0] if configs else {}

    @property
    def ipam_config6(self) -> dict[str, Any]:
        """The IPv6 entry of IPAM.Config, used only when EnableIPv6 (as dockerd: an IPv6
        subnet on a network without it is kept in the record and given to no one)."""
        configs = self.ipam_configs(v6=True)
        return configs[0] if configs and self.record.get("EnableIPv6") else {}

    @property
    def ipv6(self) -> bool:
        return bool(self.ipam_config6)

    @property
    def subnet6(self) -> str:
        return str(self.ipam_config6.get("Subnet", ""))

    @property
    def gateway6(self) -> str:
        """The IPv6 gateway: as given, else the subnet's first address (dockerd shows a
        given one only, in IPAM.Config)."""
        if not self.ipv6:
            return ""
        given = str(self.ipam_config6.get("Gateway") or "")
        return given or str(ipaddress.ip_network(self.subnet6).network_address + 1)

    @property
    def prefixlen6(self) -> int:
        return ipaddress.ip_network(self.subnet6).prefixlen if self.ipv6 else 0

    @property
    def subnet(self) -> str:
        return str(self.ipam_config.get("Subnet", ""))

    @property
    def gateway(self) -> str:
        return str(self.ipam_config.get("Gateway", ""))

    @property
    def prefixlen(self) -> int:
        return ipaddress.ip_network(self.subnet).prefixlen


def network_mode(c: Container) -> str:
    mode = c.host_config.get("NetworkMode") or "default"
    return "bridge" if mode == "default" else mode


def _veth_name(cid: str, network_id: str) -> str:
    return "ve" + hashlib.sha256(f"{cid}/{network_id}".encode()).hexdigest()[:13]


def _endpoint_id(cid: str, network_id: str, started: str) -> str:
    return hashlib.sha256(f"{cid}/{network_id}/{started}".encode()).hexdigest()


def check_settings(bridge: str, bridge_subnet: str, chain_prefix: str, pool: str) -> None:
    """Refuse bad networking flags before anything is set up."""
    if not 0 < len(bridge) <= 15 or not NAME_RE.match(bridge):
        raise InvalidParameter(f"invalid --bridge {bridge!r}: an interface name of at most 15 "
                               "characters [a-zA-Z0-9_.-]")
    if bridge_subnet:
        ipam.network(bridge_subnet, "--bridge-subnet")
    if not re.fullmatch(r"[A-Za-z0-9_]{1,16}", chain_prefix):
        raise InvalidParameter(f"invalid --chain-prefix {chain_prefix!r}: 1 to 16 characters "
                               "[A-Za-z0-9_]")
    ipam.parse_pool(pool)


class NetworkManager:
    def __init__(self, core: Core) -> None:
        self.core = core
        self.settings = core.settings
        check_settings(self.settings.bridge, self.settings.bridge_subnet,
                       self.settings.chain_prefix, self.settings.default_address_pool)
        self.netns_dir = core.settings.exec_root / "netns"
        self.firewall = Firewall(self.settings.chain_prefix)
        # The same chains in ip6tables, made when the first IPv6 network is set up.
        self.firewall6 = Firewall(self.settings.chain_prefix, ipv6=True)
        self._networks: dict[str, Network] = {}
        self._pools: dict[str, ipam.Pool] = {}
        self._pools6: dict[str, ipam.Pool] = {}  # networks with EnableIPv6
        self._ready: set[str] = set()  # networks whose bridge and rules are in place
        self._base_ready = False
        self._base6_ready = False
        self._bindings: dict[str, list[ports.Binding]] = {}
        self._dns: dict[str, dns.DnsServer] = {}
        self._proxies: dict[str, list[proxy.PortProxy]] = {}
        self._host_ipv6 = False  # whether `::` can be bound here: found at open
        self._lock = threading.Lock()  # pools, bindings, DNS servers: touched by threads too
        self._setup_lock = threading.Lock()  # bridges and base rules: made once
        self._loop: asyncio.AbstractEventLoop | None = None
        self.resolver = dns.Resolver(self._dns_lookup, self._dns_reverse, self._dns_upstreams)
        self._upstreams: dict[str, list[str]] = {}

    # start-up and shut-down -------------------------------------------------------------

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self._open_blocking)

    def _open_blocking(self) -> None:
        self._host_ipv6 = ports.host_has_ipv6()
        self.netns_dir.mkdir(parents=True, exist_ok=True)
        for record in self.core.db.opened.all_networks():
            net = Network(record)
            self._networks[net.id] = net
        by_name = {n.name: n for n in self._networks.values()}
        for name, driver in (("bridge", "bridge"), ("host", "host"), ("none", "null")):
            if name not in by_name:
                self._put(self._new_record(name, driver, {}, {}))
        self._configure_default_bridge()
        for net in self._networks.values():
            if net.driver == "bridge" and net.subnet:
                cfg = net.ipam_config
                self._pools[net.id] = ipam.Pool.of(cfg["Subnet"], cfg.get("Gateway", ""),
                                                   cfg.get("IPRange", ""),
                                                   cfg.get("AuxiliaryAddresses"))
            if net.driver == "bridge" and net.ipv6:
                self._pools6[net.id] = _pool6(net.ipam_config6)
        # Leases of containers that were running: before anything can allocate again.
        for c in self.core.handles.containers():
            if c.state.live:
                for ep in (c.network.get("endpoints") or {}).values():
                    for pool, addr in self._leases(ep):
                        pool.mark(addr)

    def _configure_default_bridge(self) -> None:
        """The default bridge's device and subnet: the flags, else what was persisted, else
        a private subnet that no route of this host uses yet."""
        net = self.by_name("bridge")
        record = dict(net.record)
        changed = False
        if net.bridge != self.settings.bridge:
            record["bridge"] = self.settings.bridge
            record["Options"] = dict(record.get("Options") or {},
                                     **{BRIDGE_NAME_OPTION: self.settings.bridge})
            changed = True
        subnet = self.settings.bridge_subnet
        if subnet:
            subnet = str(ipam.network(subnet, "--bridge-subnet"))
        elif not net.subnet:
            taken = ipam.parse_routes(_routes()) + self._subnets(exclude=net.id)
            candidates = [ipam.network(s) for s in ipam.DEFAULT_BRIDGE_CANDIDATES]
            subnet = str(ipam.pick_subnet(candidates, taken))
            log.info("default bridge %s: subnet %s", self.settings.bridge, subnet)
        if subnet and subnet != net.subnet:
            gw = str(ipam.default_gateway(ipaddress.ip_network(subnet)))  # type: ignore[arg-type]
            record["IPAM"] = {"Driver": "default", "Options": None,
                              "Config": [{"Subnet": subnet, "Gateway": gw}]}
            changed = True
        if changed:
            self._put(record)

    async def close(self) -> None:
        """Stop serving DNS and holding ports. With no container running, take stowd's
        bridges and iptables chains away too (they come back at the next start)."""
        servers, bindings = await asyncio.to_thread(self._take_servers_and_ports)
        for server in servers:
            server.close()
        ports.close_all(bindings)
        if not any(c.state.live for c in self.core.handles.containers()):
            try:
                await asyncio.to_thread(self._remove_infrastructure)
            except Exception:
                log.exception("removing stowd's bridges and iptables chains failed")

    def _take_servers_and_ports(self) -> tuple[list[Any], list[Any]]:
        with self._lock:  # also taken by worker threads setting containers up
            servers = [*self._dns.values(), *(p for ps in self._proxies.values() for p in ps)]
            self._dns.clear()
            self._proxies.clear()
            bindings = [b for bs in self._bindings.values() for b in bs]
            self._bindings.clear()
        return servers, bindings

    def _remove_infrastructure(self) -> None:
        for net in self._networks.values():
            if net.bridge:
                links.delete_link(net.bridge)
        try:
            self.firewall.remove_all()
        except SystemError_ as exc:
            log.warning("removing iptables chains: %s", exc)
        try:
            self.firewall6.remove_all()
        except (SystemError_, OSError) as exc:  # OSError: no ip6tables on this host
            log.warning("removing ip6tables chains: %s", exc)
        with contextlib.suppress(OSError):
            self.netns_dir.rmdir()
        self._ready.clear()
        self._base_ready = False
        self._base6_ready = False

    # networks ---------------------------------------------------------------------------

    def _new_record(self, name: str, driver: str, ipam_cfg: dict[str, Any],
                    options: dict[str, str], labels: dict[str, str] | None = None,
                    internal: bool = False, attachable: bool = False,
                    ipam_cfg6: dict[str, Any] | None = None,
                    enable_ipv6: bool = False) -> dict[str, Any]:
        nid = secrets.token_hex(32)
        record: dict[str, Any] = {
            "Name": name,
            "Id": nid,
            "Created": rfc3339_nano(),
            "Scope": "local",
            "Driver": driver,
            "EnableIPv6": enable_ipv6,
            "IPAM": {"Driver": "default", "Options": None,
                     "Config": [c for c in (ipam_cfg, ipam_cfg6) if c]},
            "Internal": internal,
            "Attachable": attachable,
            "Ingress": False,
            "ConfigFrom": {"Network": ""},
            "ConfigOnly": False,
            "Options": options,
            "Labels": labels or {},
        }
        if name == "bridge":
            record["bridge"] = self.settings.bridge
            record["Options"] = {
                "com.docker.network.bridge.default_bridge": "true",
                "com.docker.network.bridge.enable_icc": "true",
                "com.docker.network.bridge.enable_ip_masquerade": "true",
                "com.docker.network.bridge.host_binding_ipv4": "0.0.0.0",
                BRIDGE_NAME_OPTION: self.settings.bridge,
                "com.docker.network.driver.mtu": "1500",
            }
        elif driver == "bridge":
            record["bridge"] = options.get(BRIDGE_NAME_OPTION) or "br-" + nid[:12]
        return record

    def _put(self, record: dict[str, Any]) -> Network:
        # Blocking (worker threads): through the database thread, as every record write.
        self.core.db.call(self.core.db.opened.put_network, record["Id"], record["Name"],
                          time.time(), record)
        net = Network(record)
        self._networks[net.id] = net
        return net

    def networks(self) -> list[Network]:
        return sorted(self._networks.values(), key=lambda n: n.record["Created"])

    def by_name(self, name: str) -> Network:
        for net in self._networks.values():
            if net.name == name:
                return net
        raise NotFound(f"network {name} not found")

    def get(self, ref: str) -> Network:
        """By name, full ID, or unique ID prefix (Docker's order)."""
        if not ref:
            raise NotFound("network  not found")
        for net in self._networks.values():
            if net.name == ref:
                return net
        if ref in self._networks:
            return self._networks[ref]
        matches = [n for n in self._networks.values() if n.id.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise InvalidParameter(f"network {ref} is ambiguous ({len(matches)} matches found "
                                   "based on ID prefix)")
        raise NotFound(f"network {ref} not found")

    def _subnets(self, exclude: str = "") -> list[ipaddress.IPv4Network]:
        out = []
        for net in self._networks.values():
            if net.id != exclude and net.subnet:
                out.append(ipaddress.IPv4Network(net.subnet))
        return out

    def _subnets6(self) -> list[ipaddress.IPv6Network]:
        """The IPv6 subnets of every network, with EnableIPv6 or not (they are in its
        record either way, and taken once it is recreated with it)."""
        out = []
        for net in self._networks.values():
            for cfg in net.ipam_configs(v6=True):
                with contextlib.suppress(ValueError):
                    out.append(ipaddress.IPv6Network(cfg["Subnet"]))
        return out

    def containers_on(self, net: Network) -> list[Container]:
        """Containers attached to the network (by configuration, running or not)."""
        return [c for c in self.core.handles.containers() if net.name in self._endpoints_config(c)]

    def active_endpoints(self, net: Network) -> list[tuple[Container, dict[str, Any]]]:
        """Running containers with an endpoint on the network, and the endpoint."""
        out = []
        for c in self.core.handles.containers():
            ep = (c.network.get("endpoints") or {}).get(net.name)
            if ep and c.state.live and ep.get("NetworkID") == net.id:
                out.append((c, ep))
        return out

    async def create_network(self, body: dict[str, Any]) -> tuple[Network, str]:
        name = body.get("Name")
        if not isinstance(name, str) or not name:
            raise InvalidParameter("network name must be specified")
        if not NAME_RE.match(name):
            raise InvalidParameter(f'invalid network name "{name}": a name is printable '
                                   "characters other than '/' (dockerd allows spaces)")
        driver = body.get("Driver") or "bridge"
        if name in PREDEFINED:
            raise Forbidden(f"{name} is a pre-defined network and cannot be created")
        if driver in ("host", "null"):
            raise Forbidden(f'only one instance of "{driver}" network is allowed')
        if driver != "bridge":
            raise NotFound(f'plugin "{driver}" not found')
        if any(n.name == name for n in self._networks.values()):
            raise Conflict(f"network with name {name} already exists")
        ipam_body = body.get("IPAM") or {}
        if not isinstance(ipam_body, dict):
            raise InvalidParameter("IPAM must be an object")
        if (ipam_body.get("Driver") or "default") != "default":
            raise NotFound(f'plugin "{ipam_body["Driver"]}" not found')
        all_configs = ipam_body.get("Config") or []
        if not isinstance(all_configs, list) or not all(isinstance(c, dict)
                                                        for c in all_configs):
            raise InvalidParameter("IPAM.Config entries must be objects")
        configs = [c for c in all_configs if ":" not in str(c.get("Subnet") or "")]
        configs6 = [c for c in all_configs if ":" in str(c.get("Subnet") or "")]
        if len(configs) > 1 or len(configs6) > 1:
            raise InvalidParameter("bridge driver doesn't support multiple subnets")
        cfg = dict(configs[0]) if configs else {}
        enable_ipv6 = bool(body.get("EnableIPv6"))
        ipam_cfg6 = self._ipam_config6(configs6[0] if configs6 else None, enable_ipv6)
        options = {str(k): str(v) for k, v in (body.get("Options") or {}).items()}
        labels = body.get("Labels") or {}
        if not isinstance(labels, dict):
            raise InvalidParameter("Labels must be a map of strings")
        subnet_text = str(cfg.get("Subnet") or "")
        taken = self._subnets()
        if subnet_text:
            subnet = ipam.network(subnet_text)
            if ipam.overlaps(subnet, taken):
                raise Forbidden("Pool overlaps with other one on this address space")
        else:
            if cfg.get("Gateway") or cfg.get("IPRange") or cfg.get("AuxiliaryAddresses"):
                raise InvalidParameter("a Gateway, IPRange or AuxiliaryAddresses needs a Subnet")
            routes = await asyncio.to_thread(_routes)
            base, size = ipam.parse_pool(self.settings.default_address_pool)
            subnet = ipam.pick_subnet(ipam.pool_subnets(base, size),
                                      taken + ipam.parse_routes(routes))
        pool = ipam.Pool.of(str(subnet), str(cfg.get("Gateway") or ""),
                            str(cfg.get("IPRange") or ""), cfg.get("AuxiliaryAddresses"))
        ipam_cfg: dict[str, Any] = {"Subnet": str(subnet)}
        if cfg.get("IPRange"):
            ipam_cfg["IPRange"] = str(pool.ip_range)
        ipam_cfg["Gateway"] = str(pool.gateway)
        if cfg.get("AuxiliaryAddresses"):
            ipam_cfg["AuxiliaryAddresses"] = {str(k): str(v) for k, v in
                                              cfg["AuxiliaryAddresses"].items()}
        record = self._new_record(name, "bridge", ipam_cfg, options, labels,
                                  internal=bool(body.get("Internal")),
                                  attachable=bool(body.get("Attachable")),
                                  ipam_cfg6=ipam_cfg6, enable_ipv6=enable_ipv6)
        bridge = record["bridge"]
        if len(bridge) > 15 or not NAME_RE.match(bridge):
            raise InvalidParameter(f"invalid bridge name {bridge!r}")
        if any(n.bridge == bridge for n in self._networks.values()):
            raise Conflict(f"bridge name {bridge} is used by another network")
        net = Network(record)
        await asyncio.to_thread(self._ensure_network, net)
        try:
            await asyncio.to_thread(self._put, record)
        except BaseException:
            await asyncio.to_thread(self._remove_network_blocking, net)
            raise
        self._pools[net.id] = pool
        if net.ipv6:
            self._pools6[net.id] = _pool6(net.ipam_config6)
        self.core.events.publish("network", "create", net.id,
                                   {"name": net.name, "type": net.driver})
        return net, ""

    async def remove_network(self, ref: str) -> None:
        net = self.get(ref)
        if net.predefined:
            raise Forbidden(f"{net.name} is a pre-defined network and cannot be removed")
        if self.active_endpoints(net):
            raise Forbidden(f"error while removing network: network {net.name} id {net.id} "
                            "has active endpoints")
        await asyncio.to_thread(self._remove_network_blocking, net)
        await self.core.db.run(self.core.db.opened.delete_network, net.id)
        self._networks.pop(net.id, None)
        self._pools.pop(net.id, None)
        self._pools6.pop(net.id, None)
        self.core.events.publish("network", "destroy", net.id,
                                   {"name": net.name, "type": net.driver})

    def _remove_network_blocking(self, net: Network) -> None:
        with self._setup_lock:
            self._ready.discard(net.id)
            if net.bridge:
                self.firewall.remove_network(net.bridge)
                if net.ipv6:
                    self.firewall6.remove_network(net.bridge)
                links.delete_link(net.bridge)

    async def prune(self, filters: dict[str, list[str]]) -> list[str]:
        """`docker network prune`: unused user networks, narrowed by until and label."""
        until = parse_until(filters["until"][-1]) if filters.get("until") else None
        deleted = []
        for net in self.networks():
            if net.predefined or self.active_endpoints(net):
                continue
            if any(c.state.live for c in self.containers_on(net)):
                continue
            if until is not None and _created(net) >= until:
                continue
            if not labels_match(net.record.get("Labels"), filters.get("label", []),
                                filters.get("label!", [])):
                continue
            try:
                await self.remove_network(net.id)
            except (Forbidden, NotFound):
                continue
            deleted.append(net.name)
        return deleted

    # host-side setup of one network --------------------------------------------------

    def _ensure_base(self) -> None:
        if not self._base_ready:
            links.ensure_forwarding()
            self.firewall.ensure_base()
            self._base_ready = True

    def _ensure_base6(self) -> None:
        if not self._base6_ready:
            links.ensure_forwarding6()
            self.firewall6.ensure_base()
            self._base6_ready = True

    def _ensure_network(self, net: Network) -> None:
        """Blocking: the network's bridge and iptables rules, once per daemon life."""
        if net.driver != "bridge":
            return
        with self._setup_lock:
            if net.id in self._ready:
                return
            self._ensure_base()
            links.ensure_bridge(net.bridge, net.gateway, net.prefixlen, net.gateway6,
                                net.prefixlen6)
            self.firewall.ensure_network(net.bridge, net.subnet, net.internal)
            if net.ipv6:
                self._ensure_base6()
                self.firewall6.ensure_network(net.bridge, net.subnet6, net.internal)
            self._ready.add(net.id)

    def _ipam_config6(self, cfg: dict[str, Any] | None, enable_ipv6: bool) -> dict[str, Any]:
        """A create request's IPv6 IPAM.Config entry as the record keeps it (checked)."""
        if cfg is None:
            if enable_ipv6:  # dockerd 20.10's words (its status, 404, is no help: a 400)
                raise InvalidParameter("could not find an available, non-overlapping IPv6 "
                                       "address pool among the defaults to assign to the "
                                       "network")
            return {}
        aux = cfg.get("AuxiliaryAddresses")
        pool = ipam.Pool.of6(str(cfg.get("Subnet")), str(cfg.get("Gateway") or ""),
                             str(cfg.get("IPRange") or ""), aux)
        if ipam.overlaps(pool.subnet, self._subnets6()):
            raise Forbidden("Pool overlaps with other one on this address space")
        out: dict[str, Any] = {"Subnet": str(pool.subnet)}
        if cfg.get("IPRange"):
            out["IPRange"] = str(pool.ip_range)
        if cfg.get("Gateway"):  # shown only when given, as dockerd
            out["Gateway"] = str(pool.gateway)
        if aux:
            out["AuxiliaryAddresses"] = {str(k): str(v) for k, v in aux.items()}
        return out

    # create-time rules --------------------------------------------------------------------

    def prepare(self, config: dict[str, Any], host_config: dict[str, Any],
                networking_config: Any) -> dict[str, Any]:
        """Validate a create request's networking and return its NetworkingConfig, keyed by
        network name, the network the mode names first. May set Config.Hostname (host)."""
        mode = host_config.get("NetworkMode") or "default"
        if not isinstance(mode, str):
            raise InvalidParameter("NetworkMode must be a string")
        given = networking_config or {}
        if not isinstance(given, dict):
            raise InvalidParameter("NetworkingConfig must be an object")
        endpoints_in = given.get("EndpointsConfig") or {}
        if not isinstance(endpoints_in, dict):
            raise InvalidParameter("EndpointsConfig must be an object")
        ports.requests(config.get("ExposedPorts"), host_config.get("PortBindings"), False)
        if mode == "host":
            if not config.get("Hostname"):
                config["Hostname"] = rootfs.host_hostname()
            return {"EndpointsConfig": {"host": self._endpoint_config(
                self.by_name("host"), endpoints_in.get("host") or {})}}
        if mode.startswith("container:"):
            ref = mode.split(":", 1)[1]
            self.core.handles.get(ref)
            for field, what in (("Hostname", "hostname"), ("MacAddress", "mac-address")):
                if config.get(field):
                    raise InvalidParameter(f"conflicting options: {what} and the network mode")
            if host_config.get("PortBindings") or host_config.get("PublishAllPorts"):
                raise InvalidParameter("conflicting options: port publishing and the container "
                                       "type network mode")
            if host_config.get("Dns"):
                raise InvalidParameter("conflicting options: dns and the network mode")
            if host_config.get("ExtraHosts"):
                raise InvalidParameter("conflicting options: custom host-to-IP mapping and the "
                                       "network mode")
            return {"EndpointsConfig": {}}
        if mode == "none":
            if host_config.get("PortBindings") or host_config.get("PublishAllPorts"):
                log.info("published ports are discarded with network mode none")
            return {"EndpointsConfig": {"none": self._endpoint_config(
                self.by_name("none"), endpoints_in.get("none") or {})}}
        primary = self.get("bridge" if mode in ("default", "bridge") else mode)
        if primary.driver != "bridge":
            raise InvalidParameter(f"network mode {mode!r} is not supported")
        out: dict[str, Any] = {primary.name: {}}
        for ref, ep in endpoints_in.items():
            net = self.get("bridge" if ref == "default" else ref)
            if net.driver != "bridge":
                raise InvalidParameter(f"container cannot be connected to network {net.name} "
                                       f"and to {primary.name}")
            out[net.name] = ep or {}
        for name, ep in list(out.items()):
            out[name] = self._endpoint_config(self.by_name(name), ep)
        return {"EndpointsConfig": out}

    def _endpoint_config(self, net: Network, ep: Any) -> dict[str, Any]:
        if not isinstance(ep, dict):
            raise InvalidParameter("endpoint settings must be objects")
        aliases = ep.get("Aliases") or None
        if aliases is not None and (not isinstance(aliases, list)
                                    or not all(isinstance(a, str) for a in aliases)):
            raise InvalidParameter("Aliases must be a list of strings")
        if aliases and not net.user_defined:
            raise InvalidParameter("network-scoped alias is supported only for containers in "
                                   "user defined networks")
        ipam_cfg = ep.get("IPAMConfig") or None
        if ipam_cfg is not None:
            if not isinstance(ipam_cfg, dict):
                raise InvalidParameter("IPAMConfig must be an object")
            want = ipam_cfg.get("IPv4Address") or ""
            if want:
                if not net.user_defined or not net.subnet:
                    raise InvalidParameter("user specified IP address is supported only when "
                                           "connecting to networks with user configured subnets")
                ip = ipam.address(want, "IPv4 address")
                if ip not in ipaddress.ip_network(net.subnet):
                    raise InvalidParameter(f"no configured subnet or ip-range contain the IP "
                                           f"address {ip}")
            want6 = ipam_cfg.get("IPv6Address") or ""
            if want6:
                # An IPv6 subnet without EnableIPv6 takes the address and gives none, as
                # dockerd (docker-py's own tests rely on it); no IPv6 subnet is a 400.
                subnets6 = net.ipam_configs(v6=True)
                if not net.user_defined or not subnets6:
                    raise InvalidParameter("user specified IP address is supported only when "
                                           "connecting to networks with user configured subnets")
                ip6 = ipam.address6(str(want6))
                if ip6 not in ipaddress.ip_network(subnets6[0]["Subnet"]):
                    raise InvalidParameter(f"no configured subnet or ip-range contain the IP "
                                           f"address {ip6}")
        legacy_links.parse_all(ep.get("Links"))  # the format: name:alias
        mac = ep.get("MacAddress") or ""
        if mac and (not isinstance(mac, str) or not _MAC.fullmatch(mac)):
            raise InvalidParameter(f"invalid MAC address: {mac}")
        return {
            "IPAMConfig": ipam_cfg,
            "Links": ep.get("Links") or None,
            "Aliases": aliases,
            # The endpoint's own MAC (API 1.44: at create and at connect)
            **({"MacAddress": mac.lower()} if mac else {}),
            "NetworkID": net.id,
            "DriverOpts": ep.get("DriverOpts") or None,
        }

    # start: set a container's network up ------------------------------------------------

    def netns_path(self, c: Container) -> str | None:
        """The namespace the container joins (SpecInput.netns_path); None for a new one."""
        return c.network.get("netns_path") or None

    def _endpoints_config(self, c: Container) -> dict[str, dict[str, Any]]:
        return dict((c.networking_config or {}).get("EndpointsConfig") or {})

    async def attach(self, c: Container) -> None:
        """Before the task is created: namespace, endpoints, ports, DNS, /etc files.

        On failure everything made so far is undone before the error is raised."""
        mode = network_mode(c)
        if c.network.get("sandbox"):  # left over: a crash between setup and a recorded start
            await asyncio.to_thread(self.release, c)
        try:
            if mode == "host":
                await asyncio.to_thread(self._etc_host, c)
                c.network = {"mode": "host", "netns_path": f"/proc/{os.getpid()}/ns/net",
                             "endpoints": {}}
            elif mode.startswith("container:"):
                await self._attach_container_mode(c, mode.split(":", 1)[1])
            else:
                await self._attach_own(c, mode)
        except BaseException:
            await asyncio.to_thread(self.release, c)
            raise

    async def _attach_container_mode(self, c: Container, ref: str) -> None:
        try:
            target = self.core.handles.get(ref)
        except NotFound:
            raise NotFound(f"No such container: {ref}") from None
        if not target.state.live:
            raise Conflict(f"cannot join network of a non running container: {target.id}")
        path = target.network.get("netns_path") or f"/proc/{target.state.pid}/ns/net"
        c.config["Hostname"] = target.config.get("Hostname") or c.config.get("Hostname")
        c.config["Domainname"] = target.config.get("Domainname") or ""
        src, dst = self.core.dir(target), self.core.dir(c)

        def copy() -> None:
            for name in dst.ETC_FILES:
                with contextlib.suppress(OSError):
                    shutil.copyfile(src.etc_file(name), dst.etc_file(name))

        await asyncio.to_thread(copy)
        c.network = {"mode": "container", "netns_path": path, "container": target.id,
                     "endpoints": {}}

    async def _attach_own(self, c: Container, mode: str) -> None:
        sandbox = str(self.netns_dir / c.id)
        started = rfc3339_nano()
        record: dict[str, Any] = {"mode": "none" if mode == "none" else "bridge",
                                  "sandbox": sandbox, "netns_path": sandbox,
                                  "sandbox_id": hashlib.sha256(
                                      f"{c.id}/{started}".encode()).hexdigest(),
                                  "endpoints": {}, "ports": [], "port_rules": [], "dns": False}
        c.network = record  # from here on, release() undoes whatever is in it
        nets: list[tuple[Network, dict[str, Any]]] = []
        if mode != "none":
            for name, ep in self._endpoints_config(c).items():
                try:
                    net = self.by_name(name)
                except NotFound:
                    raise NotFound(f"network {name} not found") from None
                if ep.get("NetworkID") and ep["NetworkID"] != net.id:
                    raise NotFound(f"network {ep['NetworkID']} not found")
                nets.append((net, ep))
        # Addresses, interface and veth names: decided and recorded before the host changes.
        for index, (net, ep) in enumerate(nets):
            ip, ip6 = self._allocate(net, ep)
            record["endpoints"][net.name] = self._endpoint_record(c, net, ep, ip, ip6,
                                                                  f"eth{index}", started)
        record["dns"] = any(net.user_defined for net, _ in nets)
        reqs = []
        if nets:
            primary = next(iter(record["endpoints"].values()))
            reqs = ports.for_container(
                ports.requests(c.config.get("ExposedPorts"), c.host_config.get("PortBindings"),
                               bool(c.host_config.get("PublishAllPorts"))),
                ipv6=bool(primary.get("GlobalIPv6Address")), host_ipv6=self._host_ipv6)
        await self._save(c)
        bindings = await asyncio.to_thread(ports.reserve, reqs, self._port_held, c.name)
        with self._lock:
            self._bindings[c.id] = bindings
        record["ports"] = [b.to_record() for b in bindings]
        if nets and bindings:
            primary = next(iter(record["endpoints"].values()))
            v4, v6 = _by_family(bindings)
            record["port_rules"] = self.firewall.port_rules(c.id, primary["IPAddress"], v4)
            if v6:
                record["port_rules6"] = self.firewall6.port_rules(
                    c.id, primary["GlobalIPv6Address"], v6)
            await self._save(c)
        await asyncio.to_thread(self._build_sandbox, c, nets, bindings)
        await self._start_proxies(c, bindings)
        if record["dns"]:
            await self._start_dns(c)
        await asyncio.to_thread(self._write_etc, c)
        for net, _ in nets:
            self._event(net, "connect", c.id)

    def _allocate(self, net: Network, ep_cfg: dict[str, Any]
                  ) -> tuple[ipam.IPv4Address, ipam.AnyAddress | None]:
        """The endpoint's IPv4 address and, on an IPv6 network, its IPv6 one (both or
        neither: a failed second gives the first back)."""
        ipam_cfg = ep_cfg.get("IPAMConfig") or {}
        with self._lock:
            ip = self._pools[net.id].allocate(ipam_cfg.get("IPv4Address") or "")
            if not isinstance(ip, ipam.IPv4Address):  # an IPv4 pool gives IPv4 addresses
                raise SystemError_(f"address {ip} from the IPv4 pool of {net.name}")
            pool6 = self._pools6.get(net.id)
            if pool6 is None:
                return ip, None
            try:
                return ip, pool6.allocate(ipam_cfg.get("IPv6Address") or "")
            except BaseException:
                self._pools[net.id].release(str(ip))
                raise

    def _endpoint_record(self, c: Container, net: Network, ep_cfg: dict[str, Any],
                         ip: ipam.IPv4Address, ip6: ipam.AnyAddress | None, ifname: str,
                         started: str) -> dict[str, Any]:
        aliases = list(ep_cfg.get("Aliases") or [])
        if net.user_defined:  # Docker adds the short ID, which its DNS answers too
            aliases.append(c.short_id)
        return {
            "Aliases": aliases or None,
            "NetworkID": net.id,
            "EndpointID": _endpoint_id(c.id, net.id, started),
            "Gateway": "" if net.internal else net.gateway,
            "IPAddress": str(ip),
            "IPPrefixLen": net.prefixlen,
            "GlobalIPv6Address": str(ip6) if ip6 else "",
            "GlobalIPv6PrefixLen": net.prefixlen6 if ip6 else 0,
            "IPv6Gateway": net.gateway6 if ip6 and not net.internal else "",
            # A MAC the user chose (per endpoint since 1.44, else Config.MacAddress for the
            # container's own network), else one derived from the address, as Docker does.
            "MacAddress": (ep_cfg.get("MacAddress") or (
                c.config.get("MacAddress") if net.name == _primary_network(c) else "")
                or ipam.mac_for(ip)),
            "veth": _veth_name(c.id, net.id),
            "ifname": ifname,
            "bridge": net.bridge,
        }

    def _build_sandbox(self, c: Container, nets: list[tuple[Network, dict[str, Any]]],
                       bindings: list[ports.Binding]) -> None:
        """Blocking: the namespace, its interfaces and the DNAT rules."""
        record = c.network
        netns.create(record["sandbox"])
        if not nets:
            links.loopback_up(record["sandbox"])
            return
        gateway_set = gateway6_set = False
        for net, _ in nets:
            self._ensure_network(net)
            ep = record["endpoints"][net.name]
            gw = ep["Gateway"] if ep["Gateway"] and not gateway_set else None
            gw6 = ep.get("IPv6Gateway") if not gateway6_set else None
            links.add_endpoint(record["sandbox"], net.bridge, ep["veth"], ep["ifname"],
                               ep["IPAddress"], ep["IPPrefixLen"], ep["MacAddress"], gw,
                               ep.get("GlobalIPv6Address", ""), ep.get("GlobalIPv6PrefixLen", 0),
                               gw6 or None)
            gateway_set = gateway_set or bool(gw)
            gateway6_set = gateway6_set or bool(gw6)
        if bindings:
            primary = next(iter(record["endpoints"].values()))
            v4, v6 = _by_family(bindings)
            self.firewall.add_ports(c.id, primary["IPAddress"], v4)
            if v6:
                self.firewall6.add_ports(c.id, primary["GlobalIPv6Address"], v6)

    def _on_loop(self, fn: Callable[[], None]) -> None:
        """Run fn on the event loop and wait for it: a port must be free once the stop
        that released it has answered (called from worker threads, or on the loop)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            if self._loop is not None and self._loop.is_running():
                done: concurrent.futures.Future[None] = concurrent.futures.Future()

                def run() -> None:
                    try:
                        fn()
                    except BaseException as exc:
                        done.set_exception(exc)
                    else:
                        done.set_result(None)

                self._loop.call_soon_threadsafe(run)
                done.result(timeout=10)
                return
        fn()

    async def _start_proxies(self, c: Container, bindings: list[ports.Binding]) -> None:
        """Serve the `::` side of a container without IPv6 (proxy.py)."""
        proxied = [b for b in bindings if b.proxied and b.sock is not None]
        if not proxied:
            return
        target = next(iter(c.network["endpoints"].values()))["IPAddress"]
        started: list[proxy.PortProxy] = []
        with self._lock:  # recorded as they start: release closes those a failure leaves
            old = self._proxies.pop(c.id, [])
            self._proxies[c.id] = started
        for server in old:
            server.close()
        for b in proxied:
            assert b.sock is not None
            server = proxy.PortProxy(target, b.container_port)
            await server.start(b.sock)
            started.append(server)

    async def _start_dns(self, c: Container) -> None:
        sandbox = c.network["sandbox"]
        # Where other names go: the container's --dns, else the host's resolvers (read now,
        # as Docker reads them when a container starts).
        upstreams = list(c.host_config.get("Dns") or []) or await asyncio.to_thread(
            dns.host_resolvers)
        udp, tcp = await asyncio.to_thread(netns.run_in, sandbox, dns.make_sockets)
        server = dns.DnsServer(c.id, self.resolver)
        await server.start(udp, tcp)
        with self._lock:
            old = self._dns.pop(c.id, None)
            self._dns[c.id] = server
            self._upstreams[c.id] = upstreams
        if old is not None:
            old.close()

    # stop: take it down again -----------------------------------------------------------

    def release(self, c: Container) -> None:
        """Blocking, idempotent: undo whatever attach() set up for the container."""
        record = c.network
        if not record:
            return
        with self._lock:
            server = self._dns.pop(c.id, None)
            bindings = self._bindings.pop(c.id, [])
            self._upstreams.pop(c.id, None)
            proxies = self._proxies.pop(c.id, [])
        closers: list[Callable[[], None]] = [p.close for p in proxies]
        if server is not None:
            closers.append(server.close)
        for close in closers:
            self._on_loop(close)
        ports.close_all(bindings)
        if record.get("port_rules") or record.get("ports"):
            try:
                self.firewall.remove_ports(c.id, record.get("port_rules"))
            except SystemError_ as exc:
                log.warning("removing the DNAT rules of %s: %s", c.id[:12], exc)
        if record.get("port_rules6"):
            try:
                self.firewall6.remove_ports(c.id, record["port_rules6"])
            except (SystemError_, OSError) as exc:
                log.warning("removing the IPv6 DNAT rules of %s: %s", c.id[:12], exc)
        # Destroying the namespace destroys its end of each veth pair, and with it the
        # host's end: no `ip link del` (a process per endpoint) when the namespace goes.
        namespace_goes = bool(record.get("sandbox")) and os.path.exists(record["sandbox"])
        for ep in (record.get("endpoints") or {}).values():
            if ep.get("veth") and not namespace_goes:
                links.delete_link(ep["veth"])
            net = self._networks.get(ep.get("NetworkID", ""))
            self._release_addresses(ep)
            if net is not None and self._loop is not None and self._loop.is_running():
                self._loop.call_soon_threadsafe(self._event, net, "disconnect", c.id)
        if record.get("sandbox"):
            netns.delete(record["sandbox"])
        c.network = {}

    def _leases(self, ep: dict[str, Any]) -> list[tuple[ipam.Pool, str]]:
        """(pool, address) for each address an endpoint record holds (IPv4, IPv6)."""
        out = []
        for pools, key in ((self._pools, "IPAddress"), (self._pools6, "GlobalIPv6Address")):
            pool = pools.get(ep.get("NetworkID", ""))
            if pool is not None and ep.get(key):
                out.append((pool, str(ep[key])))
        return out

    def _release_addresses(self, ep: dict[str, Any]) -> None:
        """An endpoint's addresses back in their pools."""
        with self._lock:
            for pool, addr in self._leases(ep):
                pool.release(addr)

    # after a restart of stowd -------------------------------------------------------------

    async def reattach(self, c: Container) -> None:
        """A container that kept running while stowd was down: hold its ports again, serve
        its DNS again, and make sure its networks' bridges and rules are there."""
        record = c.network
        if record.get("mode") != "bridge":
            return
        nets = []
        for name, ep in (record.get("endpoints") or {}).items():
            net = self._networks.get(ep.get("NetworkID", ""))
            if net is not None:
                nets.append(net)
            else:
                log.warning("%s: network %s is gone", c.id[:12], name)
        for net in nets:
            await asyncio.to_thread(self._ensure_network, net)
        bindings = [ports.Binding.from_record(r) for r in record.get("ports") or []]

        def hold() -> None:
            for b in bindings:
                try:
                    b.sock = ports.bind(b.proto, "" if b.host_ip == "0.0.0.0" else b.host_ip,
                                         b.host_port)
                except OSError as exc:
                    log.warning("%s: cannot hold %s port %s:%s again: %s", c.id[:12], b.proto,
                                b.host_ip, b.host_port, exc)

        await asyncio.to_thread(hold)
        with self._lock:
            self._bindings[c.id] = bindings
        try:
            await self._start_proxies(c, bindings)
        except OSError as exc:
            log.warning("%s: cannot serve its IPv6 ports again: %s", c.id[:12], exc)
        if record.get("dns"):
            try:
                await self._start_dns(c)
            except OSError as exc:
                log.warning("%s: cannot serve DNS again: %s", c.id[:12], exc)

    async def sweep(self) -> None:
        """After recovery: undo what no container holds any more (crash leftovers: records of
        stopped containers, namespaces, veths, DNAT rules).

        A restart policy may start a container meanwhile; its record names what it sets up
        before it sets anything up, so ownership is read from the records at each step."""
        for c in self.core.handles.containers():
            if not c.state.live and c.network:
                async with self.core.handles.lock(c.id):  # no start is half-way while we hold it
                    if not c.state.live and c.network:
                        await asyncio.to_thread(self.release, c)
                        await self._save(c)
        bridges = [n.bridge for n in self._networks.values() if n.bridge]

        def owned(what: str) -> set[str]:
            out: set[str] = set()
            for c in self.core.handles.containers():
                rec = c.network
                if what == "netns" and rec.get("sandbox"):
                    out.add(rec["sandbox"])
                elif what == "veth":
                    out.update(ep.get("veth", "") for ep in (rec.get("endpoints") or {}).values())
                elif what in ("rules", "rules6") and rec.get(
                        "port_rules" if what == "rules" else "port_rules6"):
                    out.add(c.id)
            return out

        def sweep_rules6() -> None:
            try:
                if not self.firewall6.present():
                    return
                have = self.firewall6.port_owners()
            except OSError:  # no ip6tables on this host
                return
            for cid in have - owned("rules6"):
                log.info("removing leftover IPv6 DNAT rules of %s", cid[:12])
                self.firewall6.remove_ports(cid)
            for c in self.core.handles.containers():
                lines = c.network.get("port_rules6") or []
                if lines and c.state.live and c.id not in have:
                    log.info("restoring the IPv6 DNAT rules of %s", c.short_id)
                    self.firewall6.add_lines(lines)

        def sweep() -> None:
            if self.netns_dir.is_dir():
                for entry in self.netns_dir.iterdir():
                    if str(entry) not in owned("netns"):
                        log.info("removing leftover network namespace %s", entry)
                        netns.delete(str(entry))
            for bridge in bridges:
                for port in links.bridge_ports(bridge):
                    if port not in owned("veth"):
                        log.info("removing leftover interface %s", port)
                        links.delete_link(port)
            sweep_rules6()
            if not self.firewall.present():
                return
            have = self.firewall.port_owners()
            for cid in have - owned("rules"):
                log.info("removing leftover DNAT rules of %s", cid[:12])
                self.firewall.remove_ports(cid)
            for c in self.core.handles.containers():
                lines = c.network.get("port_rules") or []
                if lines and c.state.live and c.id not in have:  # iptables was flushed?
                    log.info("restoring the DNAT rules of %s", c.short_id)
                    self.firewall.add_lines(lines)

        await asyncio.to_thread(sweep)

    # connect and disconnect ---------------------------------------------------------------

    async def connect(self, net_ref: str, container_ref: str, endpoint: Any) -> None:
        net = self.get(net_ref)
        c = self.core.handles.get(container_ref)
        mode = network_mode(c)
        if net.driver == "host" or mode == "host":
            raise InvalidParameter("container cannot be disconnected from host network or "
                                   "connected to host network")
        if mode.startswith("container:"):
            raise InvalidParameter("container sharing network namespace with another container "
                                   "or host cannot be connected to any other network")
        if net.driver == "null" or mode == "none":
            raise InvalidParameter("container cannot be connected to multiple networks with one "
                                   "of the networks in private (none) mode")
        async with self.core.handles.lock(c.id):
            eps = self._endpoints_config(c)
            if net.name in eps:
                raise Forbidden(f"endpoint with name {c.name} already exists in network "
                                f"{net.name}")
            ep_cfg = self._endpoint_config(net, endpoint or {})
            if c.state.live and c.network.get("sandbox"):
                await self._connect_running(c, net, ep_cfg)
            eps[net.name] = ep_cfg
            c.networking_config = dict(c.networking_config or {}, EndpointsConfig=eps)
            await self._save(c)
        self._event(net, "connect", c.id)

    async def _connect_running(self, c: Container, net: Network, ep_cfg: dict[str, Any]) -> None:
        record = c.network
        used = {ep["ifname"] for ep in record["endpoints"].values()}
        ifname = next(f"eth{i}" for i in range(len(used) + 1) if f"eth{i}" not in used)
        ip, ip6 = self._allocate(net, ep_cfg)
        ep = self._endpoint_record(c, net, ep_cfg, ip, ip6, ifname, rfc3339_nano())
        record["endpoints"][net.name] = ep
        await self._save(c)
        others = [e for n, e in record["endpoints"].items() if n != net.name]
        has_gateway = any(e.get("Gateway") for e in others)
        has_gateway6 = any(e.get("IPv6Gateway") for e in others)

        def build() -> None:
            self._ensure_network(net)
            links.add_endpoint(record["sandbox"], net.bridge, ep["veth"], ifname,
                               ep["IPAddress"], ep["IPPrefixLen"], ep["MacAddress"],
                               None if has_gateway else (ep["Gateway"] or None),
                               ep["GlobalIPv6Address"], ep["GlobalIPv6PrefixLen"],
                               None if has_gateway6 else (ep["IPv6Gateway"] or None))

        try:
            await asyncio.to_thread(build)
        except BaseException:
            record["endpoints"].pop(net.name, None)
            self._release_addresses(ep)
            raise
        if net.user_defined and c.id not in self._dns:
            # As Docker: the first user network brings the embedded DNS, and resolv.conf
            # is rewritten to point at it.
            record["dns"] = True
            await self._start_dns(c)
            await asyncio.to_thread(self._write_etc, c)
        else:
            await asyncio.to_thread(self._write_hosts, c)

    async def disconnect(self, net_ref: str, container_ref: str, force: bool = False) -> None:
        net = self.get(net_ref)
        c = self.core.handles.get(container_ref)
        if net.driver == "host" or network_mode(c) == "host":
            raise InvalidParameter("container cannot be disconnected from host network or "
                                   "connected to host network")
        async with self.core.handles.lock(c.id):
            eps = self._endpoints_config(c)
            if net.name not in eps:
                raise SystemError_(f"container {c.id} is not connected to network {net.name}")
            record = c.network
            ep = (record.get("endpoints") or {}).pop(net.name, None)
            if ep is not None:
                def take_down() -> None:
                    links.delete_link(ep["veth"])
                    self._release_addresses(ep)
                    for key in ("Gateway", "IPv6Gateway"):  # the default route(s) it had
                        if not ep.get(key) or not record.get("sandbox"):
                            continue
                        for other in record["endpoints"].values():
                            if other.get(key):
                                links.set_default_route(record["sandbox"], other[key],
                                                        other["ifname"])
                                break

                await asyncio.to_thread(take_down)
                await asyncio.to_thread(self._write_hosts, c)
            eps.pop(net.name, None)
            c.networking_config = dict(c.networking_config or {}, EndpointsConfig=eps)
            await self._save(c)
        self._event(net, "disconnect", c.id)

    async def _save(self, c: Container) -> None:
        """Persist the container's record, in order with the engine's own writes."""
        await self.core.db.persist(c)

    def _event(self, net: Network, action: str, cid: str) -> None:
        self.core.events.publish("network", action, net.id,
                                   {"container": cid, "name": net.name, "type": net.driver})

    # published ports --------------------------------------------------------------------

    def _port_held(self, proto: str, host_ip: str, port: int) -> bool:
        with self._lock:
            for bindings in self._bindings.values():
                for b in bindings:
                    if b.proto == proto and b.host_port == port and (
                            not host_ip or b.host_ip in ("0.0.0.0", host_ip)):
                        return True
        return False

    def bindings(self, c: Container) -> list[ports.Binding]:
        return [ports.Binding.from_record(r) for r in c.network.get("ports") or []]

    # /etc/hosts, /etc/resolv.conf, /etc/hostname --------------------------------------

    def extra_hosts(self, c: Container) -> list[str]:
        """ExtraHosts with `host-gateway` as the address of the default bridge's gateway
        (the host, as containers on it reach it), as dockerd resolves it."""
        out = []
        for entry in c.host_config.get("ExtraHosts") or []:
            host, _, addr = entry.partition(":")
            if addr == HOST_GATEWAY:
                addr = self.by_name("bridge").gateway
            out.append(f"{host}:{addr}")
        for link in c.links:  # legacy links: the running children's default-bridge address
            try:
                child = self.core.handles.get(link["id"])
            except NotFound:
                continue
            if ip := self.bridge_address(child):
                out.append(legacy_links.hosts_entry(link["alias"], child.name,
                                                    self._hostname(child), ip))
        return out

    async def refresh_hosts(self, c: Container) -> None:
        """Rewrite a running container's /etc/hosts (its links changed or moved)."""
        if c.state.live and c.network.get("mode") == "bridge":
            await asyncio.to_thread(self._write_hosts, c)

    def bridge_address(self, c: Container) -> str | None:
        """c's address on the default bridge while it runs (what a legacy link points at)."""
        if not c.state.live:
            return None
        ep = (c.network.get("endpoints") or {}).get("bridge") or {}
        return ep.get("IPAddress") or None

    def _hostname(self, c: Container) -> str:
        return str(c.config.get("Hostname") or c.short_id)

    def _etc_host(self, c: Container) -> None:
        """Host mode: the host's name, hosts (plus ExtraHosts) and resolv.conf."""
        d = self.core.dir(c)
        d.etc_file("hostname").write_text(self._hostname(c) + "\n")
        try:
            hosts = Path("/etc/hosts").read_text()
        except OSError:
            hosts = rootfs.hosts_file(self._hostname(c))
        for entry in self.extra_hosts(c):
            host, _, addr = entry.partition(":")
            hosts = hosts.rstrip("\n") + f"\n{addr}\t{host}\n"
        d.etc_file("hosts").write_text(hosts)
        try:
            resolv = Path("/etc/resolv.conf").read_text()
        except OSError:
            resolv = ""
        d.etc_file("resolv.conf").write_text(resolv)

    def _write_hosts(self, c: Container) -> None:
        d = self.core.dir(c)
        text = rootfs.hosts_file(self._hostname(c), None, self.extra_hosts(c))
        for ep in (c.network.get("endpoints") or {}).values():
            if ep.get("IPAddress"):
                text += f"{ep['IPAddress']}\t{self._hostname(c)}\n"
            if ep.get("GlobalIPv6Address"):  # as dockerd, after the IPv4 line
                text += f"{ep['GlobalIPv6Address']}\t{self._hostname(c)}\n"
        d.etc_file("hosts").write_text(text)

    def _write_etc(self, c: Container) -> None:
        d = self.core.dir(c)
        d.etc_file("hostname").write_text(self._hostname(c) + "\n")
        self._write_hosts(c)
        hc = c.host_config
        if c.network.get("dns"):
            search = _host_search()
            lines = ["nameserver " + dns.ADDRESS]
            if hc.get("DnsSearch") or search:
                lines.append("search " + " ".join(hc.get("DnsSearch") or search))
            lines.append("options " + " ".join(hc.get("DnsOptions") or ["ndots:0"]))
            text = "\n".join(lines) + "\n"
        else:
            text = rootfs.resolv_conf(hc.get("Dns"), hc.get("DnsSearch"), hc.get("DnsOptions"))
        d.etc_file("resolv.conf").write_text(text)

    # embedded DNS -------------------------------------------------------------------------

    def _peers(self, cid: str) -> list[tuple[str, Container, dict[str, Any]]]:
        """(network name, container, its endpoint) on the user networks cid is on."""
        try:
            me = self.core.handles.get(cid)
        except NotFound:
            return []
        mine = {name for name, ep in (me.network.get("endpoints") or {}).items()
                if (net := self._networks.get(ep.get("NetworkID", ""))) and net.user_defined}
        out = []
        for c in self.core.handles.containers():
            if not c.state.live:
                continue
            for name, ep in (c.network.get("endpoints") or {}).items():
                if name in mine and ep.get("IPAddress"):
                    out.append((name, c, ep))
        return out

    def _dns_lookup(self, cid: str, qname: str) -> list[str] | None:
        found: list[str] = []
        linked = self._link_aliases(cid, qname)
        for net_name, c, ep in self._peers(cid):
            eps_cfg = self._endpoints_config(c).get(net_name) or {}
            names = {c.name.lower(), c.short_id}
            names.update(a.lower() for a in eps_cfg.get("Aliases") or [])
            candidates = {qname}
            suffix = "." + net_name.lower()
            if qname.endswith(suffix):
                candidates.add(qname[: -len(suffix)])
            if (net_name, c.name) in linked or names & candidates:
                # Both families: the server answers A with the one, AAAA with the other.
                for addr in (ep["IPAddress"], ep.get("GlobalIPv6Address")):
                    if addr and addr not in found:
                        found.append(addr)
        return found or None

    def _link_aliases(self, cid: str, qname: str) -> set[tuple[str, str]]:
        """(network, container name) pairs that qname names through the querying
        container's own `Links` on its user networks (`name:alias`, as dockerd's DNS)."""
        try:
            me = self.core.handles.get(cid)
        except NotFound:
            return set()
        out = set()
        for net_name, ep_cfg in self._endpoints_config(me).items():
            for link in (ep_cfg or {}).get("Links") or []:
                with contextlib.suppress(InvalidParameter):
                    name, alias = legacy_links.parse(link)
                    if qname in (alias.lower(), f"{alias.lower()}.{net_name.lower()}"):
                        out.add((net_name, name))
        return out

    def _dns_reverse(self, cid: str, ip: str) -> str | None:
        for net_name, c, ep in self._peers(cid):
            if ip in (ep["IPAddress"], ep.get("GlobalIPv6Address")):
                return f"{c.name}.{net_name}"
        return None

    def _dns_upstreams(self, cid: str) -> list[str]:
        return self._upstreams.get(cid) or []


_MAC = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")


def _by_family(bindings: list[ports.Binding]) -> tuple[list[ports.Binding],
                                                       list[ports.Binding]]:
    """(IPv4 bindings, IPv6 bindings DNATed to the container's IPv6 address): the ones
    the userland proxy serves need no rule."""
    return ([b for b in bindings if ":" not in b.host_ip],
            [b for b in bindings if ":" in b.host_ip and not b.proxied])


def _pool6(cfg: dict[str, Any]) -> ipam.Pool:
    return ipam.Pool.of6(cfg["Subnet"], cfg.get("Gateway", ""), cfg.get("IPRange", ""),
                         cfg.get("AuxiliaryAddresses"))


def _routes() -> str:
    proc = subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True,
                          text=True, check=False)
    return proc.stdout


def _host_search() -> list[str]:
    search: list[str] = []
    try:
        with open("/etc/resolv.conf", encoding="utf-8") as f:
            for line in f:
                parts = line.split()
                if parts and parts[0] == "search":
                    search = parts[1:]
    except OSError:
        pass
    return search


def _created(net: Network) -> float:
    return parse_time(str(net.record.get("Created") or ""))


def _primary_network(c: Container) -> str:
    """The network the container's NetworkMode names (the default bridge for "default")."""
    mode = c.host_config.get("NetworkMode") or "default"
    return "bridge" if mode == "default" else mode
