"""Listeners: the unix socket and TCP (plain on loopback only, else mutual TLS).

An engine API on a network address without TLS gives root to anyone who can reach it, so
stowd refuses it unless the operator says `--insecure-tcp` on purpose; loopback stays plain
HTTP, as a local socket would. Everything here is checked by `plan_listeners` before the
engine touches any state, so a bad `-H` costs nothing.

`-H` accepts what dockerd accepts (moby `opts/hosts.go`): `unix:///path`, `unix://` (the
default socket), `tcp://HOST:PORT`, `tcp://HOST` (port 2375, or 2376 with TLS), `tcp://:PORT`
and `tcp://` (host localhost), and a bare `HOST:PORT`, which means TCP.
"""

import contextlib
import errno
import grp
import ipaddress
import logging
import os
import socket
import ssl
import stat
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from stowd.api.fastlane import FastLanes
from stowd.config import DEFAULT_HOST, Settings

log = logging.getLogger("stowd.server")

DEFAULT_TCP_PORT = 2375
DEFAULT_TLS_PORT = 2376
DEFAULT_TCP_HOST = "localhost"
DEFAULT_UNIX_PATH = DEFAULT_HOST[len("unix://"):]
# sockaddr_un.sun_path is 108 bytes, one of them the terminating NUL.
MAX_UNIX_PATH = 107


class ListenError(Exception):
    """A listen address stowd will not or cannot serve; the message says what to do."""


@dataclass(frozen=True)
class Listener:
    kind: str  # "unix" or "tcp"
    path: str = ""
    host: str = ""
    port: int = 0

    @property
    def loopback(self) -> bool:
        if self.kind == "unix":
            return True
        return is_loopback_name(self.host)

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix://{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"


def is_loopback_ip(address: str) -> bool:
    """True for 127.0.0.0/8, ::1 and IPv4-mapped loopback (::ffff:127.0.0.1)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def is_loopback_name(host: str) -> bool:
    """A loopback IP, `localhost`, or a `*.localhost` name (RFC 6761: always loopback)."""
    name = host.lower().rstrip(".")
    return name == "localhost" or name.endswith(".localhost") or is_loopback_ip(name)


def host_header_is_loopback(value: str) -> bool:
    """Whether an HTTP Host header (`name`, `name:port`, `[v6]:port`) names loopback."""
    value = value.strip()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return False
        return is_loopback_ip(value[1:end])
    name, sep, port = value.rpartition(":")
    if not sep or ":" in name:  # no port, or a bare IPv6 address without brackets
        name = value
    elif not port.isdigit():
        return False
    return is_loopback_name(name)


def _split_host_port(spec: str, rest: str, default_port: int) -> tuple[str, int]:
    if rest.startswith("["):
        end = rest.find("]")
        if end < 0:
            raise ListenError(f"invalid TCP address {spec!r}: unclosed '[' in an IPv6 address")
        host, tail = rest[1:end], rest[end + 1:]
        if tail and not tail.startswith(":"):
            raise ListenError(f"invalid TCP address {spec!r}: use tcp://[IPv6]:PORT")
        port_text = tail[1:]
    elif rest.count(":") > 1:
        raise ListenError(f"invalid TCP address {spec!r}: write IPv6 addresses in brackets, "
                          "as tcp://[::1]:2375")
    else:
        host, _, port_text = rest.partition(":")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ListenError(f"invalid port in {spec!r}: use a number from 1 to 65535")
    return host, int(port_text)


def parse_host(spec: str, tls: bool) -> Listener:
    """One `-H` value as a Listener; ListenError says what is wrong and what to write."""
    value = spec.strip()
    scheme, sep, rest = value.partition("://")
    if not sep:
        if not value:
            raise ListenError("empty listen address: use unix:///path or tcp://IP:PORT")
        if value.startswith("/"):
            raise ListenError(f"invalid listen address {spec!r}: a socket path needs the "
                              f"unix:// scheme, as unix://{value}")
        scheme, rest = "tcp", value
    if scheme == "unix":
        path = rest or DEFAULT_UNIX_PATH
        if not path.startswith("/"):
            raise ListenError(f"invalid unix socket address {spec!r}: "
                              "use unix:///absolute/path")
        if len(os.fsencode(path)) > MAX_UNIX_PATH:
            raise ListenError(f"unix socket path {path!r} is longer than {MAX_UNIX_PATH} "
                              "bytes, the kernel's limit: choose a shorter path")
        return Listener("unix", path=path)
    if scheme == "tcp":
        default_port = DEFAULT_TLS_PORT if tls else DEFAULT_TCP_PORT
        if "/" in rest or "?" in rest or "@" in rest:
            raise ListenError(f"invalid TCP address {spec!r}: use tcp://IP:PORT "
                              "(no path, query or user)")
        host, port = _split_host_port(spec, rest, default_port)
        return Listener("tcp", host=host or DEFAULT_TCP_HOST, port=port)
    if scheme == "fd":
        raise ListenError(f"{spec!r}: systemd socket activation (fd://) is not supported; "
                          "use unix:///path or tcp://IP:PORT")
    raise ListenError(f"invalid listen address {spec!r}: use unix:///path or tcp://IP:PORT")


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The server's mutual-TLS context, or None when TLS is off; ListenError if half-set."""
    given = [flag for flag, value in (("--tlscacert", settings.tls_ca_cert),
                                      ("--tlscert", settings.tls_cert),
                                      ("--tlskey", settings.tls_key)) if value]
    if not settings.tls_verify:
        if given:
            raise ListenError(
                f"{', '.join(given)} given without --tlsverify: stowd serves TLS only with "
                "client certificates. Add --tlsverify (with --tlscacert, --tlscert and "
                "--tlskey), or drop the TLS flags")
        return None
    missing = [flag for flag in ("--tlscacert", "--tlscert", "--tlskey") if flag not in given]
    if missing:
        raise ListenError("--tlsverify needs " + ", ".join(missing)
                          + ": the CA that signs client certificates, and the server's "
                          "certificate and key")
    assert settings.tls_ca_cert and settings.tls_cert and settings.tls_key
    for flag, path in (("--tlscacert", settings.tls_ca_cert), ("--tlscert", settings.tls_cert),
                       ("--tlskey", settings.tls_key)):
        if not Path(path).is_file():
            raise ListenError(f"{flag} {path}: no such file")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_verify_locations(cafile=str(settings.tls_ca_cert))
    except (ssl.SSLError, OSError) as exc:
        raise ListenError(f"--tlscacert {settings.tls_ca_cert}: not a usable PEM CA "
                          f"certificate ({exc})") from exc
    try:
        ctx.load_cert_chain(str(settings.tls_cert), str(settings.tls_key))
    except (ssl.SSLError, OSError) as exc:
        raise ListenError(f"--tlscert {settings.tls_cert} / --tlskey {settings.tls_key}: "
                          f"cannot load the server certificate and key; check that both are "
                          f"PEM and that the key matches the certificate ({exc})") from exc
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


ListenPlan = tuple[list[Listener], ssl.SSLContext | None]


def plan_listeners(settings: Settings) -> ListenPlan:
    """Check every -H address against the safety rules before anything listens.

    Blocking (reads the TLS files): call it from a thread once the event loop runs.
    """
    ctx = tls_context(settings)
    listeners = [parse_host(h, ctx is not None) for h in settings.hosts]
    seen: set[Listener] = set()
    for lst in listeners:
        if lst in seen:
            raise ListenError(f"{lst} is given twice with -H")
        seen.add(lst)
    if ctx is not None and not any(lst.kind == "tcp" for lst in listeners):
        log.warning("--tlsverify has no effect: no tcp:// address is given with -H "
                    "(the unix socket is never TLS)")
    for lst in listeners:
        if lst.kind == "tcp" and ctx is None and lst.loopback:
            log.warning(
                "%s is plain HTTP: every local user and process can reach it, without the "
                "unix socket's file permissions, and gets root. Prefer the unix socket, or "
                "--tlsverify. (Requests from web pages are refused: Origin and Host checks.)",
                lst)
        if lst.kind == "tcp" and ctx is None and not lst.loopback:
            if not settings.insecure_tcp:
                raise ListenError(
                    f"refusing to serve the Docker API without TLS on {lst}: anyone who "
                    "reaches it gets root on this host. Use --tlsverify with --tlscacert, "
                    "--tlscert and --tlskey, listen on 127.0.0.1, or pass --insecure-tcp if "
                    "you really mean it")
            log.warning(
                "!!! INSECURE: serving the Docker API on %s without TLS (--insecure-tcp). "
                "Anyone who can reach this address has root access to this machine !!!", lst)
    return listeners, ctx


# dockerd's listeners take Go's default backlog, which is the kernel's somaxconn (4096 since
# Linux 5.4): a burst of clients waits in the queue instead of being refused. The kernel caps
# whatever we ask at somaxconn, so asking for the larger of the two costs nothing.
MIN_BACKLOG = 4096
SOMAXCONN = "/proc/sys/net/core/somaxconn"


def listen_backlog() -> int:
    """dockerd's backlog: somaxconn, and never less than 4096 (blocking: reads /proc)."""
    try:
        somaxconn = int(Path(SOMAXCONN).read_text())
    except (OSError, ValueError):
        somaxconn = 0
    # listen(2) takes an int; the kernel stores it in 32 bits since 4.1, 16 bits before.
    return max(MIN_BACKLOG, min(somaxconn, 65535))


def _unix_socket(path: str, group: str) -> socket.socket:
    """Bind a unix socket at mode 0660 (never wider, not even for an instant)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise ListenError(f"{path} exists and is not a socket: remove it or choose "
                              "another -H path")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # stale socket from an earlier run
        else:
            raise ListenError(f"{path} is in use: another daemon is serving it")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o117)
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen on unix://{path}: {exc.strerror or exc}") from exc
    finally:
        os.umask(old)
    os.chmod(path, 0o660)
    try:
        os.chown(path, 0, grp.getgrnam(group).gr_gid)
    except KeyError:
        log.info("group %r does not exist: %s stays owned by root:root (mode 0660)",
                 group, path)
    except PermissionError:
        log.warning("cannot give %s to group %r: not running as root", path, group)
    return sock


def _tcp_sockets(lst: Listener, loopback_only: bool) -> list[socket.socket]:
    """Bind every address `lst.host` resolves to (localhost: 127.0.0.1 and ::1).

    With `loopback_only` (plain HTTP allowed because the name looked like loopback), a name
    that resolves anywhere else, by an odd /etc/hosts or DNS, is refused.
    """
    try:
        infos = socket.getaddrinfo(lst.host, lst.port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenError(f"cannot listen on {lst}: {exc.strerror}") from exc
    if loopback_only:
        for *_, addr in infos:
            if not is_loopback_ip(str(addr[0])):
                raise ListenError(
                    f"refusing to serve plain HTTP on {lst}: {lst.host} resolves to {addr[0]}, "
                    "which is not a loopback address. Listen on 127.0.0.1, or use --tlsverify")
    sockets: list[socket.socket] = []
    seen: set[tuple[int, object]] = set()
    try:
        for family, type_, proto, _, addr in infos:
            if (family, addr) in seen:
                continue
            seen.add((family, addr))
            sock = socket.socket(family, type_, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(addr)
            except OSError as exc:
                if len(infos) > 1 and exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
                    log.debug("%s: skipping %s: %s", lst, addr, exc)  # e.g. no IPv6 here
                    sockets.remove(sock)
                    sock.close()
                    continue
                raise ListenError(f"cannot listen on {lst}: {exc.strerror or exc}") from exc
        if not sockets:
            raise ListenError(f"cannot listen on {lst}: no usable address")
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class Sites:
    """Bound listeners, then their servers; removes only the socket files it made."""

    def __init__(self, tls: ssl.SSLContext | None) -> None:
        self.tls = tls
        self.backlog = MIN_BACKLOG
        self.bound: list[tuple[Listener, socket.socket]] = []
        self.lanes = FastLanes()
        self._sockets: list[tuple[str, int, int]] = []

    def own(self, path: str) -> None:
        st = os.stat(path)
        self._sockets.append((path, st.st_dev, st.st_ino))

    def close(self) -> None:
        """Close what is bound but not served yet, and remove our socket files."""
        if not self.lanes.servers:
            for _, sock in self.bound:
                sock.close()
        self.remove_sockets()

    def remove_sockets(self) -> None:
        for path, dev, ino in self._sockets:
            try:
                st = os.stat(path)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == (dev, ino):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)


def bind_listeners(plan: ListenPlan, settings: Settings) -> Sites:
    """Bind and listen on every address before the engine opens (blocking).

    A clash (port taken, socket in use) is then found before any state is touched, and a
    client that connects while the engine recovers waits in the backlog instead of failing.
    """
    listeners, ctx = plan
    sites = Sites(ctx)
    sites.backlog = listen_backlog()
    try:
        for lst in listeners:
            if lst.kind == "unix":
                sock = _unix_socket(lst.path, settings.socket_group)
                sites.own(lst.path)
                socks = [sock]
            else:
                socks = _tcp_sockets(lst, loopback_only=ctx is None and not settings.insecure_tcp)
            for sock in socks:
                sites.bound.append((lst, sock))
                sock.listen(sites.backlog)
                sock.setblocking(False)
    except BaseException:
        sites.close()
        raise
    return sites


async def start_sites(runner: web.AppRunner, sites: Sites) -> Sites:
    """Serve the app on every bound socket, each connection starting in the fast lane
    (api/fastlane.py), which hands it to aiohttp (runner.server) for all but a few
    requests."""
    assert runner.server is not None, "runner.setup() first"
    for lst, sock in sites.bound:
        tls = sites.tls if lst.kind == "tcp" else None
        await sites.lanes.serve(runner.app, runner.server, sock, tls, sites.backlog)
    for lst in dict.fromkeys(lst for lst, _ in sites.bound):
        log.info("API listening on %s%s", lst,
                 " (mutual TLS)" if lst.kind == "tcp" and sites.tls is not None else "")
    return sites
