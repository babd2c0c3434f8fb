"""Address management: subnets for networks, addresses for endpoints (pure, no I/O).

Subnets are chosen so they never overlap a route the host already has (`ip route`), nor
another network of this engine. Addresses are handed out lowest-free first, as Docker's
default IPAM does; since the MAC address is derived from the IP (Docker's 02:42:… scheme),
a reused address comes back with the same MAC and neighbours' ARP caches stay right.

An `EnableIPv6` network has a second pool, of the IPv6 subnet its `IPAM.Config` names: the
same rules (gateway the first address unless given, lowest free first, auxiliary addresses
kept), without a broadcast address to keep out.
"""

import ipaddress
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from stowd.engine.errors import Conflict, Forbidden, InvalidParameter

IPv4Network = ipaddress.IPv4Network
IPv4Address = ipaddress.IPv4Address
IPv6Network = ipaddress.IPv6Network
IPv6Address = ipaddress.IPv6Address
AnyNetwork = IPv4Network | IPv6Network
AnyAddress = IPv4Address | IPv6Address

# Candidates for the default bridge when --bridge-subnet is not given, in order.
DEFAULT_BRIDGE_CANDIDATES = ["10.88.0.0/16", "10.87.0.0/16", "10.86.0.0/16", "10.85.0.0/16",
                             "172.29.0.0/16", "172.30.0.0/16", "192.168.220.0/24"]
DEFAULT_POOL = "10.89.0.0/16"
DEFAULT_POOL_SIZE = 24


def _cidr(text: str, what: str, version: int, host_bits: bool = False) -> AnyNetwork:
    """A network of the given IP version from CIDR text; host bits must be zero (Docker
    refuses them in IPv4) unless host_bits."""
    try:
        net = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError as exc:
        raise InvalidParameter(f"invalid {what} {text!r}: {exc}") from None
    if net.version != version:
        raise InvalidParameter(f"invalid {what} {text!r}: " + (
            "only IPv4 is supported" if version == 4 else "not an IPv6 subnet"))
    if not host_bits and net.network_address != ipaddress.ip_interface(text.strip()).ip:
        raise InvalidParameter(f"invalid {what} {text.strip()}: it should be {net}")
    return net


def network(text: str, what: str = "subnet") -> IPv4Network:
    """An IPv4 network from CIDR text."""
    net = _cidr(text, what, 4)
    assert isinstance(net, IPv4Network)
    return net


def network6(text: str, what: str = "subnet") -> IPv6Network:
    """An IPv6 network from CIDR text. Host bits are dropped: dockerd 20.10 takes
    `2001:389::1/64` (docker-py's own tests send it) and keeps the text; stowd keeps the
    network it means, `2001:389::/64`."""
    net = _cidr(text, what, 6, host_bits=True)
    assert isinstance(net, IPv6Network)
    if net.prefixlen > 126:  # a gateway and at least one container
        raise InvalidParameter(f"invalid {what} {net}: the prefix is too long")
    return net


def _ip(text: str, what: str, version: int) -> AnyAddress:
    try:
        ip = ipaddress.ip_address(text.strip())
    except ValueError:
        raise InvalidParameter(f"invalid {what}: {text!r}") from None
    if ip.version != version:
        raise InvalidParameter(f"invalid {what}: {text!r}" + (
            ": only IPv4 is supported" if version == 4 else ""))
    return ip


def address(text: str, what: str = "address") -> IPv4Address:
    ip = _ip(text, what, 4)
    assert isinstance(ip, IPv4Address)
    return ip


def address6(text: str, what: str = "IPv6 address") -> IPv6Address:
    ip = _ip(text, what, 6)
    assert isinstance(ip, IPv6Address)
    return ip


def parse_routes(text: str) -> list[IPv4Network]:
    """The destinations of `ip -4 route show table all` output (default routes left out)."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        dest = parts[0]
        if dest in ("broadcast", "local", "unicast", "anycast", "multicast") and len(parts) > 1:
            dest = parts[1]
        if dest == "default" or dest.startswith(("fe80", "ff")):
            continue
        try:
            net = ipaddress.ip_network(dest, strict=False)
        except ValueError:
            continue
        if isinstance(net, IPv4Network) and net.prefixlen > 0 and not net.is_loopback:
            out.append(net)
    return out


def overlaps(net: AnyNetwork, others: Iterable[AnyNetwork]) -> bool:
    return any(net.version == o.version and net.overlaps(o) for o in others)


def parse_pool(text: str) -> tuple[IPv4Network, int]:
    """dockerd's --default-address-pool form `base=10.89.0.0/16,size=24`, or a bare CIDR."""
    base, size = "", DEFAULT_POOL_SIZE
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep:
            base = key
        elif key.strip() == "base":
            base = value
        elif key.strip() == "size":
            if not value.strip().isdigit():
                raise InvalidParameter(f"invalid address pool size: {value!r}")
            size = int(value)
        else:
            raise InvalidParameter(f"invalid address pool option: {part!r}")
    net = network(base, "address pool")
    if not net.prefixlen <= size <= 30:
        raise InvalidParameter(f"invalid address pool: size {size} does not fit in {net}")
    return net, size


def pool_subnets(base: IPv4Network, size: int, start: int = 0) -> Iterator[IPv4Network]:
    """base split into /size subnets, beginning at the start-th one and wrapping around."""
    subnets = list(base.subnets(new_prefix=size)) if size > base.prefixlen else [base]
    n = len(subnets)
    for i in range(n):
        yield subnets[(start + i) % n]


def pick_subnet(candidates: Iterable[IPv4Network], taken: list[IPv4Network]) -> IPv4Network:
    for net in candidates:
        if not overlaps(net, taken):
            return net
    raise Conflict("could not find an available, non-overlapping IPv4 address pool among the "
                   "defaults to assign to the network")


def mac_for(ip: IPv4Address) -> str:
    """Docker's MAC for an address: 02:42 and the address's four bytes."""
    return "02:42:" + ":".join(f"{b:02x}" for b in ip.packed)


@dataclass
class Pool:
    """The addresses of one subnet of a network: who holds which, lowest free first."""

    subnet: AnyNetwork
    gateway: AnyAddress
    ip_range: AnyNetwork | None = None
    used: set[AnyAddress] = field(default_factory=set)
    # IPAM.Config[].AuxiliaryAddresses: addresses kept from containers (routers, hosts …)
    aux: set[AnyAddress] = field(default_factory=set)

    @classmethod
    def of(cls, subnet: str, gateway: str = "", ip_range: str = "",
           aux: dict[str, str] | None = None) -> "Pool":
        net = network(subnet)
        gw = address(gateway, "gateway") if gateway else default_gateway(net)
        if gw not in net:
            raise InvalidParameter(f"gateway {gw} is not in subnet {net}")
        rng = network(ip_range, "ip-range") if ip_range else None
        if rng is not None and not rng.subnet_of(net):
            raise InvalidParameter(f"ip-range {rng} is not in subnet {net}")
        return cls(net, gw, rng, aux=auxiliary_addresses(aux, net))

    @classmethod
    def of6(cls, subnet: str, gateway: str = "", ip_range: str = "",
            aux: dict[str, str] | None = None) -> "Pool":
        """The IPv6 pool of an EnableIPv6 network (its IPAM.Config entry of an IPv6 Subnet)."""
        net = network6(subnet)
        gw = address6(gateway, "gateway") if gateway else net.network_address + 1
        if gw not in net:
            raise InvalidParameter(f"gateway {gw} is not in subnet {net}")
        rng = network6(ip_range, "ip-range") if ip_range else None
        if rng is not None and not rng.subnet_of(net):
            raise InvalidParameter(f"ip-range {rng} is not in subnet {net}")
        return cls(net, gw, rng, aux=auxiliary_addresses(aux, net))

    @property
    def version(self) -> int:
        return self.subnet.version

    def _reserved(self, ip: AnyAddress) -> bool:
        if ip == self.gateway or ip in self.aux:
            return True
        if self.version == 6:  # the subnet-router anycast address; IPv6 has no broadcast
            return ip == self.subnet.network_address
        if self.subnet.prefixlen < 31:
            return ip in (self.subnet.network_address, self.subnet.broadcast_address)
        return False

    def allocate(self, want: str = "") -> AnyAddress:
        if want:
            ip: AnyAddress = (address6(want) if self.version == 6
                              else address(want, "IPv4 address"))
            if ip not in self.subnet:
                raise InvalidParameter(f"no configured subnet or ip-range contain the IP "
                                       f"address {ip}")
            if ip in self.used or self._reserved(ip):
                raise Conflict(f"Address already in use: {ip}")
            self.used.add(ip)
            return ip
        scope = self.ip_range or self.subnet
        # Lowest free first: a /64 is never walked far, the first free address ends the loop.
        for offset in range(scope.num_addresses):
            ip = scope.network_address + offset
            if ip not in self.used and not self._reserved(ip):
                self.used.add(ip)
                return ip
        raise Conflict(f"no available IPv{self.version} addresses on this network's address "
                       f"pools: {self.subnet}")

    def mark(self, ip: str) -> None:
        """Record an address held since before a restart."""
        with_ip = ipaddress.ip_address(ip)
        if with_ip.version == self.version and with_ip in self.subnet:
            self.used.add(with_ip)

    def release(self, ip: str) -> None:
        self.used.discard(ipaddress.ip_address(ip))


def auxiliary_addresses(aux: Any, subnet: AnyNetwork) -> set[AnyAddress]:
    """dockerd's checks on IPAM.Config[].AuxiliaryAddresses (name → address in the subnet)."""
    if not aux:
        return set()
    if not isinstance(aux, dict):
        raise InvalidParameter("AuxiliaryAddresses must be a map of names to addresses")
    out: set[AnyAddress] = set()
    for name, text in aux.items():
        try:
            ip = ipaddress.ip_address(str(text))
        except ValueError:
            raise InvalidParameter(f"invalid auxiliary address {name}: {text!r}") from None
        if ip.version != subnet.version or ip not in subnet:
            raise Forbidden(f"auxiliary address: ({name}:{text}) must belong to the master "
                            f"pool: {subnet}")
        out.add(ip)
    return out


def default_gateway(net: IPv4Network) -> IPv4Address:
    return net.network_address + 1 if net.num_addresses > 2 else net.network_address
