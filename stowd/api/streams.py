"""Bridges between aiohttp's async streams and blocking consumers, and JSON progress lines."""

import asyncio
import io
from typing import Any

from aiohttp import StreamReader

from stowd.api.common import json_bytes


class BodyReader(io.RawIOBase):
    """A blocking file over an async request body, for consumers in worker threads.

    Each read asks the event loop for the next chunk, so a large upload streams through
    without ever being held whole.
    """

    def __init__(self, content: StreamReader, loop: asyncio.AbstractEventLoop) -> None:
        self._content = content
        self._loop = loop
        self._buffer = b""
        self._eof = False

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if not self._buffer and not self._eof:
            chunk = asyncio.run_coroutine_threadsafe(
                self._content.readany(), self._loop).result()
            if not chunk:
                self._eof = True
            self._buffer = chunk
        n = min(len(b), len(self._buffer))
        b[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n


def json_line(obj: dict[str, Any]) -> bytes:
    """A progress line: the one JSON encoding, ended as dockerd's streams end theirs."""
    return json_bytes(obj)[:-1] + b"\r\n"


def error_line(message: str) -> bytes:
    """An in-band error in Docker's progress stream (both keys: old clients read `error`)."""
    return json_line({"errorDetail": {"message": message}, "error": message})
