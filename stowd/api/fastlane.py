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
stands: the protocol of the
transport becomes aiohttp's RequestHandler and receives the bytes read so far, and the
connection stays with aiohttp from then on. So routing, version checks, the Origin/Host
guards, error mapping and headers stay the app's, in one place.
"""

import asyncio
import contextlib
import logging
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
_METHODS = frozenset({"GET", "HEAD"})


class _HandOver(Exception):
    """Raised in a parser callback: this request is aiohttp's."""


class FastRequest(dict[str, Any]):
    """What stowd's middleware and the FAST_ROUTES handlers read of a web.Request."""

    def __init__(self, method: str, target: bytes, headers: CIMultiDict[str],
                 transport: asyncio.BaseTransport, app: web.Application) -> None:
        super().__init__()
        self.method = method
        self.rel_url = URL(target.decode("latin-1"), encoded=True)
        self.path = self.rel_url.path
        self.query = self.rel_url.query
        self.headers = CIMultiDictProxy(headers)
        self.transport = transport
        self.app = app
        self.match_info: web.UrlMappingMatchInfo | None = None
        self.version = (1, 1)


class FastLane(asyncio.Protocol):
    """One connection until it asks for something only aiohttp serves (module doc)."""

    def __init__(self, app: web.Application, server: Callable[[], asyncio.Protocol],
                 lanes: "set[FastLane]") -> None:
        self.app = app
        self.server = server  # aiohttp's protocol factory (web.Server)
        self.lanes = lanes
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.buf = bytearray()  # bytes of requests not answered yet
        self.busy = False  # a request is being answered
        self.used = 0  # how much of buf that request is
        self.task: asyncio.Future[None] | None = None
        self._reset()

    def _reset(self) -> None:
        self.url = b""
        self.headers: CIMultiDict[str] = CIMultiDict()
        self.begun = self.complete = 0
        self.has_body = False

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.begun += 1

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.add(name.decode("latin-1"), value.decode("latin-1"))

    def on_headers_complete(self) -> None:
        # A method with a body, or a body at all: aiohttp's, before a byte of it is kept.
        method = self.parser.get_method()
        if method not in (b"GET", b"HEAD") or "Content-Length" in self.headers \
                or "Transfer-Encoding" in self.headers or self.parser.should_upgrade():
            self.has_body = True
            raise _HandOver

    def on_body(self, body: bytes) -> None:
        self.has_body = True

    def on_message_complete(self) -> None:
        self.complete += 1

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.lanes.add(self)
        if transport.get_extra_info("ssl_object") is not None:
            # TLS listeners (remote clients, not the rates that matter) stay aiohttp's: a
            # TLS connection's close after an answer is aiohttp's to get right.
            self._hand_over()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lanes.discard(self)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
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
        method = self.parser.get_method().decode("latin-1")
        if method not in _METHODS:
            self._hand_over()
            return
        assert self.transport is not None
        request = FastRequest(method, self.url, self.headers, self.transport, self.app)
        self.busy = True
        self.used = len(self.buf)
        self.task = asyncio.ensure_future(
            self._answer(request, self.parser.should_keep_alive()))

    async def _answer(self, request: FastRequest, keep_alive: bool) -> None:
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
            self.transport.write(_serialize(response, request.method == "HEAD", keep_alive))
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            if self.transport is not None:
                self.transport.close()
            return
        finally:
            self.busy = False
        del self.buf[:self.used]
        self._reset()
        if not keep_alive:
            if self.transport is not None:
                self.transport.close()
            return
        if self.buf:  # what came while answering
            self._parse(bytes(self.buf))

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
        if self.buf:
            handler.data_received(bytes(self.buf))
        self.buf.clear()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def _bind(middleware: Any, handler: Any) -> Any:
    async def call(request: web.Request) -> web.StreamResponse:
        return cast(web.StreamResponse, await middleware(request, handler))
    return call


def _serialize(response: web.Response, head: bool, keep_alive: bool) -> bytes:
    """The response as aiohttp would write it (same headers), in one buffer."""
    body = response.body
    payload = bytes(body) if isinstance(body, bytes | bytearray | memoryview) else b""
    headers = response.headers
    lines = [f"HTTP/1.1 {response.status} {response.reason}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if "Content-Length" not in headers:
        lines.append(f"Content-Length: {len(payload)}")
    if "Date" not in headers:
        lines.append("Date: " + _http_date())
    if not keep_alive:
        lines.append("Connection: close")
    head_bytes = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head_bytes if head or response.status in (204, 304) else head_bytes + payload


_date_cache: tuple[int, str] = (0, "")


def _http_date() -> str:
    """The Date header, formatted once a second."""
    global _date_cache
    loop = asyncio.get_running_loop()
    now = int(loop.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(usegmt=True))
    return _date_cache[1]


class FastLanes:
    """The fast-lane servers of the listeners, for shutdown."""

    def __init__(self) -> None:
        self.lanes: set[FastLane] = set()
        self.servers: list[asyncio.AbstractServer] = []

    async def serve(self, app: web.Application, server: Callable[[], asyncio.Protocol],
                    sock: Any, ssl: Any, backlog: int) -> None:
        loop = asyncio.get_running_loop()
        self.servers.append(await loop.create_server(
            lambda: FastLane(app, server, self.lanes), sock=sock, ssl=ssl, backlog=backlog))

    async def close(self) -> None:
        for srv in self.servers:
            srv.close()
        for lane in list(self.lanes):
            lane.close()
        for srv in self.servers:
            with contextlib.suppress(Exception):
                await srv.wait_closed()
