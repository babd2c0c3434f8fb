"""The userland proxy for `[::]` of a container without IPv6, as docker-proxy is for dockerd.

A port published on every address is reserved on `0.0.0.0` and on `::` (dockerd 20.10 does
the same on a host with IPv6). IPv4 reaches the container through iptables DNAT; a container
without an IPv6 address cannot be reached that way from IPv6, so connections to `[::]:port`
(`[::1]`, which clients that resolve `localhost` to IPv6 first use) are accepted here and
copied to the container's IPv4 address. TCP only; a UDP port stays IPv4 only.
"""

import asyncio
import contextlib
import logging
import socket

log = logging.getLogger("stowd.network")

CHUNK = 64 * 1024


class PortProxy:
    """Forwards what one reserved listening socket accepts to target:port (on the loop)."""

    def __init__(self, target: str, port: int) -> None:
        self.target, self.port = target, port
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()

    async def start(self, sock: socket.socket) -> None:
        """Serve on the reserved socket (it stays the reservation: closing stops both)."""
        sock.setblocking(False)
        self._server = await asyncio.start_server(self._serve, sock=sock)

    async def _serve(self, inbound_r: asyncio.StreamReader,
                     inbound_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        try:
            try:
                outbound_r, outbound_w = await asyncio.open_connection(self.target, self.port)
            except OSError as exc:
                log.debug("proxy to %s:%s: %s", self.target, self.port, exc)
                return
            try:
                await asyncio.gather(_copy(inbound_r, outbound_w), _copy(outbound_r, inbound_w))
            finally:
                outbound_w.close()
        finally:
            inbound_w.close()
            self._conns.discard(task)

    def close(self) -> None:
        """Stop accepting and drop the connections (the container is going away)."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._conns):
            task.cancel()


async def _copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    """One direction, until its end: then half-close, so the other direction can finish."""
    with contextlib.suppress(ConnectionError):
        while data := await source.read(CHUNK):
            sink.write(data)
            await sink.drain()
        if sink.can_write_eof():
            sink.write_eof()
