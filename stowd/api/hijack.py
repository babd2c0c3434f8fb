"""Hijacked connections (attach, exec start): HTTP upgrade to a raw two-way stream.

The client sends `Connection: Upgrade` + `Upgrade: tcp` and wants `101 UPGRADED`; after the
blank line the socket is a raw duplex stream. aiohttp's request handler would read what
follows as the next request and closes the connection on the client's half-close (the
docker CLI shuts its write side down as soon as its stdin ends, which for `docker run image
cmd` is at once, and still reads all output). So after validating the request we take the
transport over with our own protocol: it keeps the write side open on EOF, forwards stdin,
and pauses for flow control.
"""

import asyncio
import contextlib
from typing import Any, Protocol

from aiohttp import web

from stowd.api.common import COMMON_HEADERS
from stowd.engine.attach import DetachScanner
from stowd.engine.logs import frame


class HijackedConnection(asyncio.Protocol):
    """The raw stream after the switch: stdin chunks in a queue, output with back-pressure."""

    def __init__(self, transport: asyncio.Transport, original: Any) -> None:
        self.transport = transport
        self.original = original  # aiohttp's protocol, told when the connection is gone
        self.incoming: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.lost = asyncio.Event()
        self._can_write = asyncio.Event()
        self._can_write.set()

    def data_received(self, data: bytes) -> None:
        self.incoming.put_nowait(data)

    def eof_received(self) -> bool:
        self.incoming.put_nowait(None)
        return True  # keep our side open: the client still reads the output

    def connection_lost(self, exc: Exception | None) -> None:
        self.incoming.put_nowait(None)
        self.lost.set()
        self._can_write.set()
        with contextlib.suppress(Exception):
            self.original.connection_lost(exc)

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    async def write(self, data: bytes | memoryview) -> bool:
        """Write and wait for buffer room; False once the client has gone."""
        if self.lost.is_set() or self.transport.is_closing():
            return False
        self.transport.write(data)
        await self._can_write.wait()
        return not self.lost.is_set()

    def close(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()


class StdioSession(Protocol):
    """What relay needs of an attachment or an exec: output items, and a way to stdin."""

    output: "asyncio.Queue[tuple[int, bytes] | None]"
    detach_keys: bytes
    stdin_once: bool

    @property
    def stdin(self) -> bool: ...

    async def write_stdin(self, data: bytes) -> None: ...

    async def close_stdin(self) -> None: ...


async def relay(conn: HijackedConnection, session: StdioSession, tty: bool) -> bool:
    """Copy output to the client and the client's input to stdin until either side ends;
    True when the client detached (its detach keys, or the end of its input on a TTY)."""
    # Detach keys apply only with a TTY, as in Docker: binary stdin must pass untouched.
    scanner = DetachScanner(session.detach_keys if tty else b"")
    detached = asyncio.Event()

    async def output() -> None:
        while True:
            item = await session.output.get()
            if item is None:
                return
            stream, data = item
            if not await conn.write(data if tty else frame(stream, data)):
                return

    async def stdin() -> None:
        while True:
            chunk = await conn.incoming.get()
            if chunk is None:
                if not session.stdin:
                    return  # the CLI half-closes at once when it has no stdin to send
                if session.stdin_once and not tty:
                    # Docker closes a StdinOnce container's stdin and keeps streaming.
                    await session.close_stdin()
                else:
                    # With a TTY (the CLI ends its input on ctrl-p ctrl-q) or without
                    # StdinOnce, the end of the client's input ends the attachment.
                    detached.set()
                return
            data, detach = scanner.feed(chunk)
            if data:
                await session.write_stdin(data)
            if detach:
                detached.set()
                return

    tasks = [asyncio.ensure_future(output()), asyncio.ensure_future(conn.lost.wait()),
             asyncio.ensure_future(detached.wait())]
    reader = asyncio.ensure_future(stdin())
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in [*tasks, reader]:
            task.cancel()
    return detached.is_set()



def stream_content_type(request: web.Request, framed: bool) -> str:
    """Docker names a framed (stdcopy) stream `multiplexed-stream` from API 1.42 on; raw
    TTY output, and everything for older clients, is `raw-stream`."""
    version: tuple[int, int] = request["api_version"]
    if framed and version >= (1, 42):
        return "application/vnd.docker.multiplexed-stream"
    return "application/vnd.docker.raw-stream"


def hijack(request: web.Request, content_type: str) -> HijackedConnection:
    """Answer 101 (or 200 without an Upgrade header) and own the connection from here on."""
    transport = request.transport
    assert transport is not None
    original = request.protocol
    tail = bytes(getattr(original, "_message_tail", b"") or b"")
    conn = HijackedConnection(transport, original)
    transport.set_protocol(conn)
    upgrade = "upgrade" in request.headers.get("Connection", "").lower()
    status = b"HTTP/1.1 101 UPGRADED\r\n" if upgrade else b"HTTP/1.1 200 OK\r\n"
    head = [status, f"Content-Type: {content_type}\r\n".encode()]
    if upgrade:
        head.append(b"Connection: Upgrade\r\nUpgrade: tcp\r\n")
    for key, value in COMMON_HEADERS.items():
        head.append(f"{key}: {value}\r\n".encode())
    transport.write(b"".join(head) + b"\r\n")
    if tail:
        conn.data_received(tail)
    with contextlib.suppress(Exception):
        transport.resume_reading()
    return conn


def finished(request: web.Request) -> web.StreamResponse:
    """What a hijacking handler returns: aiohttp finds the connection closed and moves on."""
    with contextlib.suppress(Exception):
        request.protocol.force_close()
    return web.Response()
