"""Attaching to a container's stdio through conmon's attach socket.

conmon listens on a SOCK_SEQPACKET socket in the bundle directory. Each packet it sends is
one byte of stream (2 = stdout, 3 = stderr) and the data; what a client sends is the
container's stdin, and a shutdown of the client's write side closes that stdin (unless
conmon was told to leave it open). The socket exists from `runtime create` on, so a client
that attached before start is connected before the process runs and misses nothing.
"""

import asyncio
import contextlib
import os
import socket
from dataclasses import dataclass, field

from stowd.engine.errors import InvalidParameter

CONMON_STDOUT = 2
CONMON_STDERR = 3
STDOUT = 1
STDERR = 2
PACKET = 65536
STDIN_PACKET = 8192  # conmon's stdio buffer (STDIO_BUF_SIZE)
DEFAULT_DETACH_KEYS = b"\x10\x11"  # ctrl-p, ctrl-q


def parse_detach_keys(spec: str | None) -> bytes:
    """Docker's detach key syntax: `ctrl-p,ctrl-q`, `a,ctrl-@`, ... ; '' means the default."""
    if not spec:
        return DEFAULT_DETACH_KEYS
    out = bytearray()
    for key in spec.split(","):
        key = key.strip()
        if len(key) == 1:
            out.append(ord(key))
        elif key.lower().startswith("ctrl-") and len(key) == 6:
            ch = key[5].lower()
            if "a" <= ch <= "z":
                out.append(ord(ch) - ord("a") + 1)
            elif ch in "@[\\]^_":
                out.append({"@": 0, "[": 27, "\\": 28, "]": 29, "^": 30, "_": 31}[ch])
            else:
                raise InvalidParameter(f"Invalid detach keys ({spec}) provided")
        else:
            raise InvalidParameter(f"Invalid detach keys ({spec}) provided")
    return bytes(out)


class DetachScanner:
    """Finds the detach sequence in stdin, holding back a partial match until it resolves."""

    def __init__(self, keys: bytes) -> None:
        self.keys = keys
        self._held = b""

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """(bytes to forward, detached?)"""
        if not self.keys:
            return data, False
        out = bytearray()
        for byte in data:
            candidate = self._held + bytes([byte])
            if self.keys.startswith(candidate):
                if candidate == self.keys:
                    self._held = b""
                    return bytes(out), True
                self._held = candidate
            else:
                out += candidate
                self._held = b""
        return bytes(out), False


@dataclass(eq=False)
class AttachSession:
    """One client's attachment: output packets in, stdin out."""

    container_id: str
    stdin: bool
    stdout: bool
    stderr: bool
    detach_keys: bytes = DEFAULT_DETACH_KEYS
    stdin_once: bool = False
    output: "asyncio.Queue[tuple[int, bytes] | None]" = field(
        default_factory=lambda: asyncio.Queue(maxsize=256))
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    _sock: socket.socket | None = None
    _reader: "asyncio.Task[None] | None" = None
    closed: bool = False
    connected_ok: bool = False  # connected to conmon (not just told there is nothing)
    stdin_closed: bool = False  # the client ended its stdin, so the container's is closed

    async def connect(self, bundle_dir: str) -> None:
        """Connect to conmon's socket in bundle_dir (through /proc/self/fd: paths get long)."""
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sock.setblocking(False)
        dirfd = os.open(bundle_dir, os.O_PATH)
        try:
            await loop.sock_connect(sock, f"/proc/self/fd/{dirfd}/attach")
        except OSError:
            sock.close()
            raise
        finally:
            os.close(dirfd)
        self._sock = sock
        self._reader = loop.create_task(self._read())
        self.connected_ok = True
        self.connected.set()

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._sock is not None
        try:
            while True:
                packet = await loop.sock_recv(self._sock, PACKET)
                if not packet:
                    break
                kind, data = packet[0], packet[1:]
                if kind == CONMON_STDOUT and self.stdout:
                    await self.output.put((STDOUT, data))
                elif kind == CONMON_STDERR and self.stderr:
                    await self.output.put((STDERR, data))
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            with contextlib.suppress(asyncio.QueueFull):
                self.output.put_nowait(None)
            if self.output.full():
                # Make room for the end marker: the consumer must always learn the end.
                with contextlib.suppress(asyncio.QueueEmpty):
                    self.output.get_nowait()
                self.output.put_nowait(None)

    async def write_stdin(self, data: bytes) -> None:
        """Forward stdin; before start, this waits until the container's socket exists."""
        if not self.stdin or not data:
            return
        await self.connected.wait()
        if self._sock is None:
            return
        loop = asyncio.get_running_loop()
        # SOCK_SEQPACKET: conmon reads one packet into a fixed buffer and drops the rest of a
        # longer one, so stdin goes in packets no larger than that buffer.
        for start in range(0, len(data), STDIN_PACKET):
            await loop.sock_sendall(self._sock, data[start:start + STDIN_PACKET])

    async def close_stdin(self) -> None:
        if not self.stdin:
            return
        await self.connected.wait()
        if self._sock is not None:
            self.stdin_closed = True
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_WR)

    def park(self) -> None:
        """Keep the connection (and so the container's stdin) but drop all output."""
        self.stdout = self.stderr = False
        while not self.output.empty():
            self.output.get_nowait()

    def end(self) -> None:
        """Tell the consumer there is nothing more (container gone, or never started)."""
        self.connected.set()
        with contextlib.suppress(asyncio.QueueFull):
            self.output.put_nowait(None)

    def close(self) -> None:
        self.closed = True
        if self._reader is not None:
            self._reader.cancel()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
