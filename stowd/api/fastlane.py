"""The first protocol of every API connection: the hot read-only requests answered lean,
everything else handed to aiohttp with the connection.

Monitoring tools, dashboards and the docker CLI mostly send `GET /_ping` and
`GET /containers/json` (the CLI pings before every command). Through aiohttp each costs
about 80–110 µs of CPU here, most of it in aiohttp's own request, writer and response
machinery rather than in stowd; dockerd answers in about 35. So each connection starts
with this protocol: llhttp (through httptools, the parser uvicorn uses) parses the
request; when it is a GET or HEAD without a body, not an upgrade, and the route it
resolves to is in FAST_ROUTES, the app's own middleware and handler answer it through a
small stand-in for aiohttp's Request (what those handlers read: method, path, query,
headers, transport, app, match_info), and the Response it returns is written as one
buffer. Anything else (a body, an upgrade, attach/exec hijacking, streaming, websocket,
another route, pipelined requests, and every TLS connection) is handed to aiohttp as it
stands: the protocol of the transport becomes aiohttp's RequestHandler and receives the
bytes read so far, and the connection stays with aiohttp from then on. So routing, version
checks, the Origin/Host guards, error mapping and headers stay the app's, in one place.

Canned answers. A route in CANNED_ROUTES (`/_ping`) answers the same bytes whatever the
state of the engine, so once the app has answered a request 200 through the path above,
the bytes it wrote are kept (split around the Date header) under everything the answer
and the guards depended on: method, target, keep-alive, and on TCP the Host header and
the address it came to (a request with an Origin header never comes
from the cache). The next identical request is answered from data_received itself: no
task, no Request or Response object, no header dictionary, one write. That is what brings
a ping to about the cost of the parse and the write (bench/README.md).
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from email.utils import formatdate
from typing import Any, cast

import httptools
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

log = logging.getLogger("stowd.api")

# Routes whose handlers answer with a plain web.Response (never prepare a stream, hijack or
# read a body): only these may run here.
FAST_ROUTES = frozenset({"/_ping", "/version", "/containers/json", "/info", "/images/json"})
# Routes whose 200 answer depends on nothing but the request line (module doc).
CANNED_ROUTES = frozenset({"/_ping"})
# Distinct canned requests kept: a few clients' pings (bare and per API version).
CANNED_MAX = 64
_METHODS = frozenset({b"GET", b"HEAD"})
_BODY_HEADERS = frozenset({b"content-length", b"transfer-encoding"})

# (method, target, keep-alive, Host on a TCP connection and the address it came to; None
# and "" on the unix socket, where no guard applies)
CannedKey = tuple[bytes, bytes, bool, bytes | None, str]


class _HandOver(Exception):
    """Raised in a parser callback: this request is aiohttp's."""


class FastRequest(dict[str, Any]):
    """What stowd's middleware and the FAST_ROUTES handlers read of a web.Request."""

    def __init__(self, method: str, target: bytes, headers: list[tuple[bytes, bytes]],
                 transport: asyncio.BaseTransport, app: web.Application) -> None:
        super().__init__()
        self.method = method
        self.rel_url = URL(target.decode("latin-1"), encoded=True)
        self.path = self.rel_url.path
        self.query = self.rel_url.query
        self.headers = CIMultiDictProxy(CIMultiDict(
            (k.decode("latin-1"), v.decode("latin-1")) for k, v in headers))
        self.transport = transport
        self.app = app
        self.match_info: web.UrlMappingMatchInfo | None = None
        self.version = (1, 1)


class Canned:
    """The kept answers of CANNED_ROUTES, shared by every connection of the daemon."""

    def __init__(self) -> None:
        self.answers: dict[CannedKey, tuple[bytes, bytes]] = {}
        self._second = 0
        self._date = b""

    def date(self) -> bytes:
        """The Date header's value, formatted once a second."""
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._date = formatdate(now, usegmt=True).encode("ascii")
        return self._date

    def keep(self, key: CannedKey, answer: tuple[bytes, bytes]) -> None:
        if len(self.answers) < CANNED_MAX:
            self.answers[key] = answer


class FastLane(asyncio.Protocol):
    """One connection until it asks for something only aiohttp serves (module doc)."""

    def __init__(self, app: web.Application, server: Callable[[], asyncio.Protocol],
                 lanes: "set[FastLane]", canned: Canned) -> None:
        self.app = app
        self.server = server  # aiohttp's protocol factory (web.Server)
        self.lanes = lanes
        self.canned = canned
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.pending: list[bytes] = []  # bytes of requests not answered yet
        self.busy = False  # a request is being answered by a task
        self.local = ""  # the address a TCP connection came to
        self.used = 0  # how many of the pending chunks the request in a task is
        self.task: asyncio.Future[None] | None = None
        self._reset()

    def _reset(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.host: bytes | None = None
        self.origin = False
        self.begun = self.complete = 0
        self.has_body = False
        self.keep_alive = True

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.begun += 1

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        lower = name.lower()
        if lower == b"host":
            self.host = value
        elif lower == b"origin":
            self.origin = True
        elif lower in _BODY_HEADERS:
            self.has_body = True

    def on_headers_complete(self) -> None:
        # A method with a body, or a body at all: aiohttp's, before a byte of it is kept.
        if self.has_body or self.parser.get_method() not in _METHODS \
                or self.parser.should_upgrade():
            self.has_body = True
            raise _HandOver

    def on_body(self, body: bytes) -> None:
        self.has_body = True

    def on_message_complete(self) -> None:
        self.complete += 1
        # Asked now: once feed_data returns, llhttp has reset it for the next message.
        self.keep_alive = self.parser.should_keep_alive()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.lanes.add(self)
        if transport.get_extra_info("ssl_object") is not None:
            # TLS listeners (remote clients, not the rates that matter) stay aiohttp's: a
            # TLS connection's close after an answer is aiohttp's to get right.
            self._hand_over()
            return
        sockname = transport.get_extra_info("sockname")
        if isinstance(sockname, tuple):  # TCP (the unix socket's name is a str)
            self.local = str(sockname[0])

    def connection_lost(self, exc: Exception | None) -> None:
        self.lanes.discard(self)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.pending.append(data)
        if self.busy:
            return  # pipelined: looked at once the current answer is written
        self._parse(data)

    def _parse(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserUpgrade, httptools.HttpParserCallbackError):
            self._hand_over()
            return
        except httptools.HttpParserError:
            self._hand_over()  # aiohttp answers the bad request as it always did
            return
        if not self.complete:
            return  # the rest of the request is still to come
        if self.complete > 1 or self.begun > 1 or self.has_body:
            self._hand_over()
            return
        method = self.parser.get_method()
        keep_alive = self.keep_alive
        key = self._canned_key(method, keep_alive)
        if key is not None and (answer := self.canned.answers.get(key)) is not None:
            assert self.transport is not None
            head, tail = answer
            self.transport.write(head + self.canned.date() + tail)
            self._done(keep_alive)
            return
        assert self.transport is not None
        request = FastRequest(method.decode("latin-1"), self.url, self.headers,
                              self.transport, self.app)
        self.busy = True
        self.used = len(self.pending)
        self.task = asyncio.ensure_future(self._answer(request, keep_alive, key))

    def _canned_key(self, method: bytes, keep_alive: bool) -> CannedKey | None:
        """Where this request's answer is kept (module doc); None: never from the cache."""
        if not self.local:
            return (method, self.url, keep_alive, None, "")
        if self.origin:
            return None  # the guards refuse it; the app says so
        return (method, self.url, keep_alive, self.host, self.local)

    def _done(self, keep_alive: bool) -> None:
        """The current request is answered: on to what came after it."""
        self.pending.clear()
        self._reset()
        if not keep_alive:
            if self.transport is not None:
                self.transport.close()
            return

    async def _answer(self, request: FastRequest, keep_alive: bool,
                      key: CannedKey | None) -> None:
        try:
            match = await self.app.router.resolve(cast(web.Request, request))
            route = match.route.resource
            if (route is None or route.canonical not in FAST_ROUTES
                    or match.http_exception is not None):
                self._hand_over()
                return
            request.match_info = match
            handler = match.handler
            for middleware in reversed(self.app.middlewares):
                handler = _bind(middleware, handler)
            response = await handler(cast(web.Request, request))
            if type(response) is not web.Response:
                raise TypeError(f"{request.path} answered with {type(response).__name__}")
            await self.app.on_response_prepare.send(cast(web.Request, request), response)
            if self.transport is None:
                return
            head, tail = _serialize(response, request.method == "HEAD", keep_alive)
            self.transport.write(head + self.canned.date() + tail)
            if key is not None and response.status == 200 \
                    and route.canonical in CANNED_ROUTES:
                self.canned.keep(key, (head, tail))
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            if self.transport is not None:
                self.transport.close()
            return
        finally:
            self.busy = False
        # What came while answering is the next request's.
        rest = b"".join(self.pending[self.used:])
        self._done(keep_alive)
        if keep_alive and rest:
            self.pending.append(rest)
            self._parse(rest)

    def _hand_over(self) -> None:
        """aiohttp takes the connection, with every byte read so far."""
        transport = self.transport
        if transport is None:
            return
        self.lanes.discard(self)
        self.transport = None
        handler = self.server()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if self.pending:
            handler.data_received(b"".join(self.pending))
        self.pending.clear()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def _bind(middleware: Any, handler: Any) -> Any:
    async def call(request: web.Request) -> web.StreamResponse:
        return cast(web.StreamResponse, await middleware(request, handler))
    return call


def _serialize(response: web.Response, head: bool, keep_alive: bool) -> tuple[bytes, bytes]:
    """The response as aiohttp would write it (same headers), in two pieces: the Date
    header's value goes between them."""
    body = response.body
    payload = bytes(body) if isinstance(body, bytes | bytearray | memoryview) else b""
    headers = response.headers
    lines = [f"HTTP/1.1 {response.status} {response.reason}"]
    lines += [f"{k}: {v}" for k, v in headers.items() if k != "Date"]
    if "Content-Length" not in headers:
        lines.append(f"Content-Length: {len(payload)}")
    if not keep_alive:
        lines.append("Connection: close")
    lines.append("Date: ")
    before = "\r\n".join(lines).encode("latin-1")
    after = b"\r\n\r\n" if head or response.status in (204, 304) else b"\r\n\r\n" + payload
    return before, after


class FastLanes:
    """The fast-lane servers of the listeners, for shutdown."""

    def __init__(self) -> None:
        self.lanes: set[FastLane] = set()
        self.canned = Canned()
        self.servers: list[asyncio.AbstractServer] = []

    async def serve(self, app: web.Application, server: Callable[[], asyncio.Protocol],
                    sock: Any, ssl: Any, backlog: int) -> None:
        loop = asyncio.get_running_loop()
        self.servers.append(await loop.create_server(
            lambda: FastLane(app, server, self.lanes, self.canned), sock=sock, ssl=ssl,
            backlog=backlog))

    async def close(self) -> None:
        for srv in self.servers:
            srv.close()
        for lane in list(self.lanes):
            lane.close()
        for srv in self.servers:
            with contextlib.suppress(Exception):
                await srv.wait_closed()
