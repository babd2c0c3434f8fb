"""The embedded DNS server at 127.0.0.11 inside containers on user-defined networks.

As Docker's: containers find each other by name, alias and short ID on the networks they
share; every other name is forwarded to the host's resolvers. One UDP and one TCP socket per
container, created inside the container's network namespace (see netns.py) and served by
stowd's event loop. The wire format part (parse a query, build an answer) is sans-IO.
"""

import asyncio
import contextlib
import ipaddress
import logging
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("stowd.dns")

ADDRESS = "127.0.0.11"
PORT = 53
TTL = 600
FORWARD_TIMEOUT = 2.0

TYPE_A = 1
TYPE_PTR = 12
TYPE_AAAA = 28
CLASS_IN = 1

RCODE_OK = 0
RCODE_FORMERR = 1
RCODE_SERVFAIL = 2
RCODE_NXDOMAIN = 3


class DnsFormatError(ValueError):
    pass


@dataclass(frozen=True)
class Query:
    id: int
    flags: int
    name: str  # lowercase, without the trailing dot
    qtype: int
    qclass: int
    question: bytes  # the question section as received, echoed in answers

    @property
    def recursion_desired(self) -> bool:
        return bool(self.flags & 0x0100)


def _read_name(data: bytes, offset: int) -> tuple[str, int]:
    labels: list[str] = []
    end = -1
    jumps = 0
    while True:
        if offset >= len(data):
            raise DnsFormatError("name runs past the message")
        length = data[offset]
        if length & 0xC0 == 0xC0:
            if offset + 1 >= len(data) or jumps > 16:
                raise DnsFormatError("bad compression pointer")
            if end < 0:
                end = offset + 2
            offset = ((length & 0x3F) << 8) | data[offset + 1]
            jumps += 1
            continue
        if length & 0xC0:
            raise DnsFormatError("bad label")
        offset += 1
        if length == 0:
            break
        labels.append(data[offset:offset + length].decode("ascii", errors="replace"))
        offset += length
    return ".".join(labels), (end if end >= 0 else offset)


def parse_query(data: bytes) -> Query:
    if len(data) < 12:
        raise DnsFormatError("short message")
    qid, flags, qdcount = struct.unpack("!HHH", data[:6])
    if flags & 0x8000:
        raise DnsFormatError("not a query")
    if qdcount != 1:
        raise DnsFormatError("expected one question")
    name, offset = _read_name(data, 12)
    if offset + 4 > len(data):
        raise DnsFormatError("short question")
    qtype, qclass = struct.unpack("!HH", data[offset:offset + 4])
    return Query(qid, flags, name.lower().rstrip("."), qtype, qclass, data[12:offset + 4])


def encode_name(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        raw = label.encode("ascii", errors="replace")[:63]
        out += bytes([len(raw)]) + raw
    return out + b"\0"


def _header(query: Query, rcode: int, answers: int) -> bytes:
    flags = 0x8000 | (query.flags & 0x7900) | 0x0080 | (rcode & 0xF)  # QR, opcode+RD, RA
    return struct.pack("!HHHHHH", query.id, flags, 1, answers, 0, 0)


def answer(query: Query, addresses: list[str], ttl: int = TTL) -> bytes:
    """An answer for a name stowd knows: its IPv4 addresses for A queries, its IPv6 ones
    for AAAA, no data for other types (nor for a family the name has no address of)."""
    records = b""
    count = 0
    family = {TYPE_A: socket.AF_INET, TYPE_AAAA: socket.AF_INET6}.get(query.qtype)
    if family is not None and query.qclass == CLASS_IN:
        for addr in addresses:
            if (":" in addr) != (family == socket.AF_INET6):
                continue
            rdata = socket.inet_pton(family, addr)
            records += struct.pack("!HHHIH", 0xC00C, query.qtype, CLASS_IN, ttl,
                                   len(rdata)) + rdata
            count += 1
    return _header(query, RCODE_OK, count) + query.question + records


def answer_ptr(query: Query, target: str, ttl: int = TTL) -> bytes:
    rdata = encode_name(target)
    record = struct.pack("!HHHIH", 0xC00C, TYPE_PTR, CLASS_IN, ttl, len(rdata)) + rdata
    return _header(query, RCODE_OK, 1) + query.question + record


def error(query: Query, rcode: int) -> bytes:
    return _header(query, rcode, 0) + query.question


def formerr(data: bytes) -> bytes | None:
    """FORMERR for a message too broken to parse, when at least its ID can be read."""
    if len(data) < 2:
        return None
    return struct.pack("!HHHHHH", struct.unpack("!H", data[:2])[0], 0x8081, 0, 0, 0, 0)


def reverse_ip(name: str) -> str | None:
    """The address a PTR query's in-addr.arpa (or ip6.arpa) name asks about."""
    if name.endswith(".ip6.arpa"):
        nibbles = name[: -len(".ip6.arpa")].split(".")
        if len(nibbles) != 32 or not all(len(n) == 1 for n in nibbles):
            return None
        try:
            return str(ipaddress.IPv6Address(int("".join(reversed(nibbles)), 16)))
        except ValueError:
            return None
    suffix = ".in-addr.arpa"
    if not name.endswith(suffix):
        return None
    parts = name[: -len(suffix)].split(".")
    if len(parts) != 4:
        return None
    try:
        return str(ipaddress.IPv4Address(".".join(reversed(parts))))
    except ValueError:
        return None


# The lookup a server asks of the engine: (container id, name) → addresses, or None when
# the name is not one of the engine's (then it is forwarded); (container id, ip) → name.
Lookup = Callable[[str, str], list[str] | None]
ReverseLookup = Callable[[str, str], str | None]


class Resolver:
    """Answers one query: local names from the engine, the rest from upstream servers."""

    def __init__(self, lookup: Lookup, reverse: ReverseLookup,
                 upstreams: Callable[[str], list[str]]) -> None:
        self.lookup = lookup
        self.reverse = reverse
        self.upstreams = upstreams

    def local(self, cid: str, query: Query) -> bytes | None:
        if query.qtype == TYPE_PTR:
            ip = reverse_ip(query.name)
            target = self.reverse(cid, ip) if ip else None
            return answer_ptr(query, target) if target else None
        found = self.lookup(cid, query.name)
        return answer(query, found) if found is not None else None

    async def resolve(self, cid: str, data: bytes, tcp: bool) -> bytes | None:
        try:
            query = parse_query(data)
        except DnsFormatError:
            return formerr(data)
        local = self.local(cid, query)
        if local is not None:
            return local
        for server in self.upstreams(cid):
            with contextlib.suppress(OSError, TimeoutError, asyncio.IncompleteReadError):
                if tcp:
                    return await asyncio.wait_for(_forward_tcp(server, data), FORWARD_TIMEOUT)
                return await asyncio.wait_for(_forward_udp(server, data), FORWARD_TIMEOUT)
        return error(query, RCODE_SERVFAIL)


class _OneReply(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: object) -> None:
        if not self.reply.done():
            self.reply.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.reply.done():
            self.reply.set_exception(exc)


async def _forward_udp(server: str, data: bytes) -> bytes:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(_OneReply, remote_addr=(server, PORT))
    try:
        transport.sendto(data)
        return await proto.reply
    finally:
        transport.close()


async def _forward_tcp(server: str, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(server, PORT)
    try:
        writer.write(struct.pack("!H", len(data)) + data)
        await writer.drain()
        size = struct.unpack("!H", await reader.readexactly(2))[0]
        return await reader.readexactly(size)
    finally:
        writer.close()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: "DnsServer") -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.server.spawn(self._answer(data, addr))

    async def _answer(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = await self.server.resolver.resolve(self.server.cid, data, tcp=False)
        if reply is not None and self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(reply, addr)


class DnsServer:
    """One container's resolver at 127.0.0.11:53, on sockets made in its namespace."""

    def __init__(self, cid: str, resolver: Resolver) -> None:
        self.cid = cid
        self.resolver = resolver
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coro: "asyncio.Future[None] | object") -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(
            coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def start(self, udp_sock: socket.socket, tcp_sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            self._udp, _ = await loop.create_datagram_endpoint(lambda: _Udp(self), sock=udp_sock)
            self._tcp = await asyncio.start_server(self._serve_tcp, sock=tcp_sock)
        except BaseException:
            self.close()
            udp_sock.close()
            tcp_sock.close()
            raise

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    size = struct.unpack("!H", await reader.readexactly(2))[0]
                    data = await reader.readexactly(size)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                reply = await self.resolver.resolve(self.cid, data, tcp=True)
                if reply is None:
                    return
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        finally:
            writer.close()

    def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            self._tcp = None
        for task in list(self._tasks):
            task.cancel()


def make_sockets() -> tuple[socket.socket, socket.socket]:
    """The UDP and TCP sockets of 127.0.0.11:53 in the calling thread's network namespace."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        for s in (udp, tcp):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((ADDRESS, PORT))
            s.setblocking(False)
        tcp.listen(64)
    except BaseException:
        udp.close()
        tcp.close()
        raise
    return udp, tcp


def host_resolvers(path: str = "/etc/resolv.conf") -> list[str]:
    """Where names that are not the engine's go: the host's nameservers."""
    servers = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                parts = line.split()
                if len(parts) > 1 and parts[0] == "nameserver":
                    with contextlib.suppress(ValueError):
                        if isinstance(ipaddress.ip_address(parts[1]), ipaddress.IPv4Address):
                            servers.append(parts[1])
    except OSError:
        pass
    return servers
