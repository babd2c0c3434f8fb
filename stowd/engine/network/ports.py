"""Published ports: what a container asks for, host-port reservation, and Docker's views.

A request comes from HostConfig.PortBindings (HostPort fixed, empty = ephemeral, or a range
to pick from; HostIp empty = every host address) and PublishAllPorts (every exposed port on
an ephemeral port). Each host port is reserved by binding a socket to it, as docker-proxy
does, so a port in use fails `start` before anything else is set up, and nothing else can
take the port while the container has it (`bind` says how). IPv4 traffic never reaches
that socket: iptables DNATs it to the container (see iptables.py).

A container whose first network has IPv6 is published on both families, as dockerd 20.10
does on a host with IPv6: each binding for every address (`HostIp` empty) is a pair,
`0.0.0.0` and `::` on the same host port (an ephemeral port is one free on both), the
`::` one DNATed by ip6tables to the container's IPv6
address. A `HostIp` of an IPv6 address publishes there only. Containers without IPv6 leave
IPv6 host addresses out, but their every-address TCP ports are paired on `::` too, served
by the userland proxy (proxy.py) where the host has IPv6, as docker-proxy serves them.
"""

import contextlib
import dataclasses
import errno
import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from stowd.engine.errors import InvalidParameter, SystemError_

PROTOCOLS = ("tcp", "udp")
LISTEN_BACKLOG = 128  # the proxy's accept queue; a DNATed port's socket never sees a SYN


@dataclass(frozen=True)
class PortRequest:
    proto: str
    container_port: int
    host_ip: str  # "" for every IPv4 address of the host, "::" for every IPv6 one
    host_lo: int  # 0 and 0: an ephemeral port
    host_hi: int
    with_ipv6: bool = False  # host_ip "": also `::` on the same port
    proxy_v6: bool = False  # ... through the userland proxy (the container has no IPv6)


@dataclass
class Binding:
    """A reserved host port, DNATed to container_port."""

    proto: str
    container_port: int
    host_ip: str
    host_port: int
    sock: socket.socket | None = None
    proxied: bool = False  # `::` of a container without IPv6: proxy.py forwards it

    @property
    def key(self) -> str:
        return f"{self.container_port}/{self.proto}"

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def to_record(self) -> dict[str, object]:
        return {"proto": self.proto, "container_port": self.container_port,
                "host_ip": self.host_ip, "host_port": self.host_port,
                **({"proxied": True} if self.proxied else {})}

    @classmethod
    def from_record(cls, rec: dict[str, object]) -> "Binding":
        return cls(str(rec["proto"]), int(rec["container_port"]),  # type: ignore[call-overload]
                   str(rec["host_ip"]), int(rec["host_port"]),  # type: ignore[call-overload]
                   proxied=bool(rec.get("proxied")))


def _split_key(key: str) -> tuple[int, int, str]:
    number, _, proto = str(key).partition("/")
    proto = (proto or "tcp").lower()
    lo, _, hi = number.partition("-")
    if not lo.isdigit() or (hi and not hi.isdigit()):
        raise InvalidParameter(f'invalid port specification: "{key}"')
    first, last = int(lo), int(hi or lo)
    if not 0 < first <= last <= 65535:
        raise InvalidParameter(f'invalid port specification: "{key}"')
    return first, last, proto


def _host_range(text: str) -> tuple[int, int]:
    text = str(text or "").strip()
    if not text:
        return 0, 0
    lo, _, hi = text.partition("-")
    if not lo.isdigit() or (hi and not hi.isdigit()):
        raise InvalidParameter(f'invalid port specification: "{text}"')
    first, last = int(lo), int(hi or lo)
    if not 0 <= first <= last <= 65535:
        raise InvalidParameter(f'invalid port specification: "{text}"')
    return first, last


def exposed_keys(exposed: dict[str, object] | None, bindings: dict[str, object] | None
                 ) -> list[str]:
    """Every `port/proto` a container exposes or binds, ranges expanded, in port order."""
    keys = set()
    for key in list((exposed or {}).keys()) + list((bindings or {}).keys()):
        first, last, proto = _split_key(key)
        for port in range(first, last + 1):
            keys.add((port, proto))
    return [f"{p}/{proto}" for p, proto in sorted(keys)]


def requests(exposed: dict[str, object] | None, bindings: dict[str, object] | None,
             publish_all: bool) -> list[PortRequest]:
    """What to publish, from Config.ExposedPorts, HostConfig.PortBindings and -P."""
    out: list[PortRequest] = []
    bound: set[tuple[int, str]] = set()
    for key, entries in (bindings or {}).items():
        first, last, proto = _split_key(key)
        if proto not in PROTOCOLS:
            raise InvalidParameter(f"publishing {proto} ports is not supported")
        for entry in entries or [{}]:  # type: ignore[attr-defined]
            if not isinstance(entry, dict):
                raise InvalidParameter(f"invalid port binding for {key}")
            host_ip = str(entry.get("HostIp") or "").strip()
            if host_ip in ("0.0.0.0", ""):
                host_ip = ""
            elif ":" in host_ip:
                try:
                    host_ip = str(ipaddress.IPv6Address(host_ip))
                except ValueError:
                    raise InvalidParameter(f"invalid host IP address: {host_ip}") from None
            else:
                try:
                    socket.inet_aton(host_ip)
                except OSError:
                    raise InvalidParameter(f"invalid host IP address: {host_ip}") from None
            h_lo, h_hi = _host_range(str(entry.get("HostPort") or ""))
            count = last - first + 1
            if count > 1 and h_lo and h_hi - h_lo + 1 != count:
                if h_lo != h_hi:
                    raise InvalidParameter(
                        f"invalid ranges specified for container and host Ports: {key} and "
                        f"{entry.get('HostPort')}")
            for i, port in enumerate(range(first, last + 1)):
                if count > 1 and h_lo and h_hi - h_lo + 1 == count:
                    lo = hi = h_lo + i
                else:
                    lo, hi = h_lo, h_hi
                out.append(PortRequest(proto, port, host_ip, lo, hi))
                bound.add((port, proto))
    if publish_all:
        for key in exposed_keys(exposed, None):
            first, _, proto = _split_key(key)
            if (first, proto) not in bound and proto in PROTOCOLS:
                out.append(PortRequest(proto, first, "", 0, 0))
    return out


def for_container(reqs: list[PortRequest], ipv6: bool, host_ipv6: bool) -> list[PortRequest]:
    """The requests as published for a container with (or without) an IPv6 address on its
    first network: every-address ones on both families (without it, TCP on `::` goes
    through the userland proxy, where the host has IPv6), IPv6 host addresses only with
    it."""
    if not ipv6:
        return [dataclasses.replace(r, with_ipv6=True, proxy_v6=True)
                if not r.host_ip and r.proto == "tcp" and host_ipv6 else r
                for r in reqs if ":" not in r.host_ip]
    return [dataclasses.replace(r, with_ipv6=True) if not r.host_ip else r for r in reqs]


def host_has_ipv6() -> bool:
    """Whether `::` can be bound here (IPv6 not disabled): blocking, a socket call."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def bind(proto: str, host_ip: str, port: int) -> socket.socket:
    """A socket holding the port. A TCP one listens, as docker-proxy's do, with
    SO_REUSEADDR: a port whose last connections (an earlier server's, or the userland
    proxy's) are still in TIME_WAIT can be taken, and nothing else can bind it meanwhile (a
    listening socket conflicts with every other bind; a bound, non-listening one with
    SO_REUSEADDR would let another SO_REUSEADDR socket share the port). Traffic never
    reaches it: iptables DNATs it to the container, and the userland proxy (proxy.py)
    serves the `::` side of a container without IPv6 from this very socket."""
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    v6 = ":" in host_ip
    sock = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, kind)
    try:
        if v6:  # `::` reserves IPv6 only: the IPv4 side has a socket of its own
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if proto == "tcp":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if proto == "udp":  # it never reads: keep what lands there small
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
        sock.bind((host_ip or "0.0.0.0", port))
        if proto == "tcp":
            sock.listen(LISTEN_BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


def reserve(reqs: Iterable[PortRequest], held: Callable[[str, str, int], bool],
            who: str) -> list[Binding]:
    """Bind a socket for each request (blocking); all or nothing.

    held(proto, host_ip, port) says whether another container of this engine has the port,
    for Docker's "port is already allocated" message.
    """
    out: list[Binding] = []
    try:
        for req in reqs:
            out.extend(_reserve_pair(req, held, who) if req.with_ipv6
                       else [_reserve_one(req, held, who)])
    except BaseException:
        for b in out:
            b.close()
        raise
    return out


# An ephemeral port free on IPv4 may be taken on IPv6: so many tries for one free on both.
PAIR_TRIES = 20


def _reserve_pair(req: PortRequest, held: Callable[[str, str, int], bool],
                  who: str) -> list[Binding]:
    """A binding on every IPv4 address and one on every IPv6 address, on the same port."""
    for _ in range(PAIR_TRIES if req.host_lo == 0 else 1):
        first = _reserve_one(req, held, who)
        try:
            sock = bind(req.proto, "::", first.host_port)
        except OSError as exc:
            first.close()
            if req.host_lo == 0:
                continue
            reason = ("address already in use" if exc.errno == errno.EADDRINUSE
                      else str(exc.strerror).lower())
            raise SystemError_(f"driver failed programming external connectivity on endpoint "
                               f"{who}: cannot publish {req.proto} [::]:{first.host_port}: "
                               f"bind: {reason}") from None
        return [first, Binding(req.proto, req.container_port, "::", first.host_port, sock,
                               proxied=req.proxy_v6)]
    raise SystemError_(f"driver failed programming external connectivity on endpoint {who}: "
                       f"cannot publish {req.proto}: no port free on both IPv4 and IPv6")


def _reserve_one(req: PortRequest, held: Callable[[str, str, int], bool], who: str) -> Binding:
    shown_ip = req.host_ip or "0.0.0.0"
    prefix = f"driver failed programming external connectivity on endpoint {who}"
    if req.host_lo == 0:
        sock = bind(req.proto, req.host_ip, 0)
        return Binding(req.proto, req.container_port, shown_ip, sock.getsockname()[1], sock)
    last_error: OSError | None = None
    allocated = False
    for port in range(req.host_lo, req.host_hi + 1):
        if held(req.proto, req.host_ip, port):
            allocated = True
            continue
        try:
            sock = bind(req.proto, req.host_ip, port)
        except OSError as exc:
            last_error = exc
            continue
        return Binding(req.proto, req.container_port, shown_ip, port, sock)
    where = (f"{shown_ip}:{req.host_lo}" if req.host_lo == req.host_hi
             else f"{shown_ip}:{req.host_lo}-{req.host_hi}")
    if last_error is None and allocated:
        raise SystemError_(f"{prefix}: Bind for {where} failed: port is already allocated")
    reason = "no free port"
    if last_error is not None:
        reason = ("address already in use" if last_error.errno == errno.EADDRINUSE
                  else str(last_error.strerror).lower())
    raise SystemError_(f"{prefix}: cannot publish {req.proto} {where}: bind: {reason}")


def close_all(bindings: Iterable[Binding]) -> None:
    for b in bindings:
        with contextlib.suppress(OSError):
            b.close()


def ports_view(keys: list[str], bindings: list[Binding]) -> dict[str, list[dict[str, str]] | None]:
    """NetworkSettings.Ports: each exposed or bound port, with its host bindings or null."""
    view: dict[str, list[dict[str, str]] | None] = {k: None for k in keys}
    for b in bindings:
        entry = {"HostIp": b.host_ip, "HostPort": str(b.host_port)}
        current = view.get(b.key)
        if current is None:
            view[b.key] = [entry]
        else:
            current.append(entry)
    return view


def summary(keys: list[str], bindings: list[Binding]) -> list[dict[str, object]]:
    """The list's `Ports`: one row per binding, and one per exposed port without any."""
    rows: list[dict[str, object]] = []
    bound = {b.key for b in bindings}
    for b in sorted(bindings, key=lambda b: (b.container_port, b.proto, b.host_ip)):
        rows.append({"IP": b.host_ip, "PrivatePort": b.container_port,
                     "PublicPort": b.host_port, "Type": b.proto})
    for key in keys:
        if key not in bound:
            port, _, proto = key.partition("/")
            rows.append({"PrivatePort": int(port), "Type": proto})
    rows.sort(key=lambda r: (r["PrivatePort"], r["Type"], "IP" not in r))
    return rows
