"""Bridges and veth pairs through iproute2 (`ip -batch`): a few milliseconds per endpoint.

Each function is idempotent: run twice, or after a crash half-way, it ends in the same
state. Everything here blocks: call it from a worker thread.
"""

import contextlib
import hashlib
import logging
import os
import subprocess

from stowd.engine.errors import SystemError_
from stowd.engine.network import netns

log = logging.getLogger("stowd.network")

SYS_NET = "/sys/class/net"


def _ip(batch: list[str], force: bool = False) -> None:
    args = ["ip", "-force", "-batch", "-"] if force else ["ip", "-batch", "-"]
    proc = subprocess.run(args, input="\n".join(batch) + "\n", capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0 and not force:
        raise SystemError_(f"ip: {proc.stderr.strip() or proc.returncode} "
                           f"(running: {'; '.join(batch)})")


def link_exists(name: str) -> bool:
    return os.path.exists(os.path.join(SYS_NET, name))


def _sysctl(path: str, value: str) -> None:
    try:
        with open(path, encoding="ascii") as f:
            if f.read().strip() == value:
                return
        with open(path, "w", encoding="ascii") as f:
            f.write(value)
    except OSError as exc:
        log.warning("cannot set %s to %s: %s", path, value, exc)


def ensure_forwarding() -> None:
    """Routing between the bridges and the world needs IPv4 forwarding (dockerd sets it too)."""
    _sysctl("/proc/sys/net/ipv4/ip_forward", "1")


def ensure_forwarding6() -> None:
    """The same for IPv6, set when an IPv6 network is first set up, as dockerd's bridge
    driver does (published ports reached from a container and traffic between bridges are
    forwarded)."""
    _sysctl("/proc/sys/net/ipv6/conf/default/forwarding", "1")
    _sysctl("/proc/sys/net/ipv6/conf/all/forwarding", "1")


def ensure_bridge(name: str, gateway: str, prefixlen: int, gateway6: str = "",
                  prefixlen6: int = 0) -> None:
    """The bridge device with the gateway address(es), up, and 127.0.0.1 routable to it."""
    batch = []
    if not link_exists(name):
        # A fixed MAC: else the bridge takes its ports' and changes as they come and go.
        digest = hashlib.sha256(name.encode()).digest()
        mac = "02:" + ":".join(f"{b:02x}" for b in digest[:5])
        batch.append(f"link add name {name} address {mac} type bridge")
    if gateway6:
        if batch:  # the device must exist for its IPv6 setting
            _ip(batch)
            batch = []
        _sysctl(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6", "0")
        # nodad: usable at once, not after a second of duplicate detection on our own bridge
        batch.append(f"addr replace {gateway6}/{prefixlen6} dev {name} nodad")
    batch += [f"addr replace {gateway}/{prefixlen} dev {name}", f"link set {name} up"]
    _ip(batch)
    # DNAT of 127.0.0.1:port to a container sends packets from 127.0.0.1 out of the bridge;
    # the kernel drops those as martians unless route_localnet is on for this device.
    _sysctl(f"/proc/sys/net/ipv4/conf/{name}/route_localnet", "1")


def delete_link(name: str) -> None:
    if link_exists(name):
        _ip([f"link del {name}"], force=True)


def bridge_ports(bridge: str) -> list[str]:
    """The host-side interfaces enslaved to a bridge."""
    try:
        return sorted(os.listdir(os.path.join(SYS_NET, bridge, "brif")))
    except OSError:
        return []


def add_endpoint(ns_path: str, bridge: str, veth: str, ifname: str, address: str,
                 prefixlen: int, mac: str, gateway: str | None, address6: str = "",
                 prefixlen6: int = 0, gateway6: str | None = None) -> None:
    """A veth pair: `veth` on the bridge, `ifname` with the address(es) inside the
    namespace, and the default route(s) through the gateway(s) given."""
    delete_link(veth)  # a leftover of a crash: its peer goes with it
    _ip([f"link add {veth} type veth peer name {ifname} netns {ns_path}",
         f"link set {veth} master {bridge}",
         f"link set dev {veth} type bridge_slave hairpin on",
         f"link set {veth} up"])
    inside = ["link set lo up", f"link set {ifname} address {mac}",
              f"addr add {address}/{prefixlen} dev {ifname}", f"link set {ifname} up"]
    if address6:
        inside.insert(-1, f"addr add {address6}/{prefixlen6} dev {ifname} nodad")
    if gateway:
        inside.append(f"route replace default via {gateway} dev {ifname}")
    if gateway6:
        inside.append(f"route replace default via {gateway6} dev {ifname}")
    try:
        netns.run_in(ns_path, lambda: _ip(inside))
    except BaseException:
        delete_link(veth)
        raise


def loopback_up(ns_path: str) -> None:
    netns.run_in(ns_path, lambda: _ip(["link set lo up"]))


def set_default_route(ns_path: str, gateway: str, ifname: str) -> None:
    with contextlib.suppress(SystemError_):
        netns.run_in(ns_path, lambda: _ip([f"route replace default via {gateway} dev {ifname}"]))
