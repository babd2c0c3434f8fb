"""Published ports: what a container asks for, host-port reservation, and Docker's views.

A request comes from HostConfig.PortBindings (HostPort fixed, empty = ephemeral, or a range
to pick from; HostIp empty = every host address) and PublishAllPorts (every exposed port on
an ephemeral port). Each host port is reserved by binding a socket to it, as docker-proxy
does, so a port in use fails `start` before anything else is set up, and nothing else can
take the port while the container has it. The traffic itself never reaches that socket:
iptables DNATs it to the container (see iptables.py).
"""

import contextlib
import errno
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from stowd.engine.errors import InvalidParameter, SystemError_

PROTOCOLS = ("tcp", "udp")


@dataclass(frozen=True)
class PortRequest:
    proto: str
    container_port: int
    host_ip: str  # "" for every IPv4 address of the host
    host_lo: int  # 0 and 0: an ephemeral port
    host_hi: int


@dataclass
class Binding:
    """A reserved host port, DNATed to container_port."""

    proto: str
    container_port: int
    host_ip: str
    host_port: int
    sock: socket.socket | None = None

    @property
    def key(self) -> str:
        return f"{self.container_port}/{self.proto}"

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def to_record(self) -> dict[str, object]:
        return {"proto": self.proto, "container_port": self.container_port,
                "host_ip": self.host_ip, "host_port": self.host_port}

    @classmethod
    def from_record(cls, rec: dict[str, object]) -> "Binding":
        return cls(str(rec["proto"]), int(rec["container_port"]),  # type: ignore[call-overload]
                   str(rec["host_ip"]), int(rec["host_port"]))  # type: ignore[call-overload]


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
                continue  # IPv6 host addresses: stowd publishes on IPv4 only
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


def bind(proto: str, host_ip: str, port: int) -> socket.socket:
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    sock = socket.socket(socket.AF_INET, kind)
    try:
        if proto == "udp":  # it never reads: keep what lands there small
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
        sock.bind((host_ip or "0.0.0.0", port))
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
            out.append(_reserve_one(req, held, who))
    except BaseException:
        for b in out:
            b.close()
        raise
    return out


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
