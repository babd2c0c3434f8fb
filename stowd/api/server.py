"""Listeners: the unix socket and TCP (plain on loopback only, else mutual TLS).

The founding document reaches the engine at IP:2375. An engine API on a network address
without TLS gives root to anyone who can reach it, so stowd refuses it unless the operator
says `--insecure-tcp` on purpose; loopback stays plain HTTP, as a local socket would.
"""

import grp
import ipaddress
import logging
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from stowd.config import Settings

log = logging.getLogger("stowd.server")

DEFAULT_TCP_PORT = 2375
DEFAULT_TLS_PORT = 2376


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
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def parse_host(spec: str, tls: bool) -> Listener:
    """`unix:///path`, `tcp://IP:PORT`, `tcp://IP`, `fd://` is not supported."""
    if spec.startswith("unix://"):
        path = spec[len("unix://"):]
        if not path.startswith("/"):
            raise ListenError(f"invalid unix socket address {spec!r}: use unix:///absolute/path")
        return Listener("unix", path=path)
    if spec.startswith("tcp://") or spec.startswith("http://"):
        parts = urlsplit(spec if spec.startswith("tcp://") else "tcp://" + spec[7:])
        host = parts.hostname or ""
        if not host:
            raise ListenError(f"invalid TCP address {spec!r}: use tcp://IP:PORT")
        try:
            port = parts.port or (DEFAULT_TLS_PORT if tls else DEFAULT_TCP_PORT)
        except ValueError as exc:
            raise ListenError(f"invalid port in {spec!r}") from exc
        return Listener("tcp", host=host, port=port)
    raise ListenError(f"invalid listen address {spec!r}: use unix:///path or tcp://IP:PORT")


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    if not settings.tls_verify:
        return None
    missing = [flag for flag, value in (("--tlscacert", settings.tls_ca_cert),
                                        ("--tlscert", settings.tls_cert),
                                        ("--tlskey", settings.tls_key)) if not value]
    if missing:
        raise ListenError("--tlsverify needs " + ", ".join(missing))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(settings.tls_ca_cert))
    ctx.load_cert_chain(str(settings.tls_cert), str(settings.tls_key))
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def plan_listeners(settings: Settings) -> tuple[list[Listener], ssl.SSLContext | None]:
    """Check every -H address against the safety rules before anything listens."""
    ctx = tls_context(settings)
    listeners = [parse_host(h, ctx is not None) for h in settings.hosts]
    for lst in listeners:
        if lst.kind == "tcp" and ctx is None and not lst.loopback:
            if not settings.insecure_tcp:
                raise ListenError(
                    f"refusing to serve the Docker API without TLS on {lst.host}:{lst.port}: "
                    "anyone who reaches it gets root on this host. Use --tlsverify with "
                    "--tlscacert, --tlscert and --tlskey, listen on 127.0.0.1, or pass "
                    "--insecure-tcp if you really mean it")
            log.warning(
                "!!! INSECURE: serving the Docker API on %s:%d without TLS (--insecure-tcp). "
                "Anyone who can reach this address has root access to this machine.",
                lst.host, lst.port)
    return listeners, ctx


def _unix_socket(path: str, group: str) -> socket.socket:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if os.path.exists(path):
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # stale socket from an earlier run
        else:
            raise ListenError(f"{path} is in use: another stowd is serving it")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o117)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    os.chmod(path, 0o660)
    try:
        os.chown(path, 0, grp.getgrnam(group).gr_gid)
    except (KeyError, PermissionError):
        pass
    return sock


class Sites:
    """The running listeners; on close, removes only the socket files this process made."""

    def __init__(self) -> None:
        self.sites: list[web.BaseSite] = []
        self._sockets: list[tuple[str, int, int]] = []

    def own(self, path: str) -> None:
        st = os.stat(path)
        self._sockets.append((path, st.st_dev, st.st_ino))

    def remove_sockets(self) -> None:
        for path, dev, ino in self._sockets:
            try:
                st = os.stat(path)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == (dev, ino):
                os.unlink(path)


async def start_sites(runner: web.AppRunner, settings: Settings) -> Sites:
    listeners, ctx = plan_listeners(settings)
    sites = Sites()
    for lst in listeners:
        site: web.BaseSite
        if lst.kind == "unix":
            sock = _unix_socket(lst.path, settings.socket_group)
            sites.own(lst.path)
            site = web.SockSite(runner, sock)
        else:
            site = web.TCPSite(runner, lst.host, lst.port, ssl_context=ctx, reuse_address=True)
        await site.start()
        log.info("API listening on %s", site.name)
        sites.sites.append(site)
    return sites
