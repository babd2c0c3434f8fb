"""Which URL and which TLS settings a registry host is reached with, as dockerd decides.

- HTTPS first, verified against the system CAs plus `<certs.d>/<host[:port]>/*.crt`, with a
  client certificate from `*.cert` + `*.key` there.
- An insecure registry (`127.0.0.0/8` and `::1` always, `--insecure-registry HOST[:PORT]` or
  `CIDR`) is tried over HTTPS without verification, then over plain HTTP.
- Docker Hub (`docker.io`) is served by `registry-1.docker.io`; `--registry-mirror` URLs are
  tried before it, for pulls.
"""

import ipaddress
import logging
import os
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from stowd.engine.errors import InvalidParameter
from stowd.engine.images.reference import DEFAULT_DOMAIN

log = logging.getLogger("stowd.distribution")

# STOWD_HUB_HOST is for tests: it points docker.io at a registry of theirs (or at a closed
# port), so that no test daemon ever reaches Docker Hub, even through a mirror's fallback.
HUB_HOST = os.environ.get("STOWD_HUB_HOST") or "registry-1.docker.io"
DEFAULT_CERTS_DIR = Path("/etc/docker/certs.d")
ALWAYS_INSECURE = ["127.0.0.0/8", "::1/128"]


@dataclass(frozen=True)
class Endpoint:
    url: str  # scheme://host[:port], no trailing slash
    ssl: ssl.SSLContext | bool  # False: TLS without verification, or plain HTTP
    mirror: bool = False

    @property
    def host(self) -> str:
        return self.url.split("://", 1)[1]


def _split_host(host: str) -> str:
    """The host name or address of `host[:port]` (brackets of an IPv6 address removed)."""
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


@dataclass
class RegistrySettings:
    insecure: list[str] = field(default_factory=list)
    mirrors: list[str] = field(default_factory=list)
    certs_dir: Path = DEFAULT_CERTS_DIR

    def __post_init__(self) -> None:
        self._contexts: dict[tuple[str, bool, tuple[tuple[str, int, int], ...]],
                             ssl.SSLContext] = {}
        self._networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self._names: set[str] = set()
        for entry in [*ALWAYS_INSECURE, *self.insecure]:
            text = entry.removeprefix("http://").removeprefix("https://").rstrip("/")
            try:
                self._networks.append(ipaddress.ip_network(text, strict=False))
            except ValueError:
                if not text or "/" in text:
                    raise InvalidParameter(f"invalid insecure registry {entry!r}") from None
                self._names.add(text.lower())
        for mirror in self.mirrors:
            if not mirror.startswith(("http://", "https://")):
                raise InvalidParameter(f"invalid mirror {mirror!r}: it must start with "
                                       "http:// or https://")

    def is_insecure(self, host: str) -> bool:
        """Blocking (a DNS lookup when a name must be matched against the CIDRs)."""
        host = host.lower()
        if host in self._names or _split_host(host) in self._names:
            return True
        name = _split_host(host)
        try:
            addresses = [ipaddress.ip_address(name)]
        except ValueError:
            try:
                infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
            except (OSError, UnicodeError):
                return False
            addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0])
                         for info in infos]
        return any(addr in net for addr in addresses for net in self._networks
                   if addr.version == net.version)

    def tls_context(self, host: str, verify: bool) -> ssl.SSLContext:
        """Blocking (reads certs.d). Docker's layout: *.crt CAs, *.cert + *.key pairs.

        Contexts are kept while the host's certs.d directory stays the same: loading the
        system CAs takes about 50 ms of CPU, more than pulling a small image."""
        directory = self.certs_dir / host
        try:
            listing = tuple(sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size)
                                   for p in directory.iterdir()))
        except OSError:
            listing = ()
        key = (host, verify, listing)
        ctx = self._contexts.get(key)
        if ctx is None:
            ctx = self._new_context(directory, verify)
            if len(self._contexts) > 64:
                self._contexts.clear()
            self._contexts[key] = ctx
        return ctx

    def _new_context(self, directory: Path, verify: bool) -> ssl.SSLContext:
        if verify:
            ctx = ssl.create_default_context()
        else:
            # Nothing is verified: the system CAs need not be loaded.
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if directory.is_dir():
            for path in sorted(directory.iterdir()):
                if path.suffix == ".crt" and verify:
                    ctx.load_verify_locations(cafile=str(path))
                elif path.suffix == ".cert":
                    key = path.with_suffix(".key")
                    if not key.exists():
                        raise InvalidParameter(f"missing key {key.name} for client "
                                               f"certificate {path.name}")
                    ctx.load_cert_chain(str(path), str(key))
                elif path.suffix == ".key" and not path.with_suffix(".cert").exists():
                    raise InvalidParameter(f"missing client certificate {path.stem}.cert for "
                                           f"key {path.name}")
        return ctx

    def endpoints(self, domain: str, pull: bool = True) -> list[Endpoint]:
        """Where to reach domain, in the order to try them. Blocking (see above)."""
        out: list[Endpoint] = []
        host = domain
        if domain == DEFAULT_DOMAIN:
            host = HUB_HOST
            if pull:
                for mirror in self.mirrors:
                    url = mirror.rstrip("/")
                    mhost = url.split("://", 1)[1]
                    if url.startswith("http://"):
                        out.append(Endpoint(url, False, mirror=True))
                    else:
                        out.append(Endpoint(url, self.tls_context(
                            mhost, not self.is_insecure(mhost)), mirror=True))
        if self.is_insecure(host):
            out.append(Endpoint(f"https://{host}", self.tls_context(host, verify=False)))
            out.append(Endpoint(f"http://{host}", False))
        else:
            out.append(Endpoint(f"https://{host}", self.tls_context(host, verify=True)))
        return out
