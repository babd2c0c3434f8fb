"""A bounded pipe from a blocking writer in a worker thread to a reader on the event loop.

The writer sees a file (`write`); the reader iterates chunks. At most `depth` chunks wait
in between, so a slow reader slows the writer instead of filling memory, and a reader that
goes away makes the next `write` raise BrokenPipeError.
"""

import asyncio
import concurrent.futures
import threading
from collections.abc import AsyncIterator

_DONE = object()


class ThreadPipe:
    def __init__(self, loop: asyncio.AbstractEventLoop, chunk_size: int = 1 << 20,
                 depth: int = 4) -> None:
        self._loop = loop
        self._chunk_size = chunk_size
        self._queue: asyncio.Queue[object] = asyncio.Queue(depth)
        self._buffer = bytearray()
        self._closed = threading.Event()

    # the writer's side (worker thread) --------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._buffer += data
        if len(self._buffer) >= self._chunk_size:
            self._send(bytes(self._buffer))
            self._buffer = bytearray()
        return len(data)

    def flush(self) -> None:
        if self._buffer:
            self._send(bytes(self._buffer))
            self._buffer = bytearray()

    def finish(self) -> None:
        """The writer is done: the reader's iteration ends after the last chunk."""
        self.flush()
        self._send(_DONE)

    def fail(self, exc: BaseException) -> None:
        """The writer failed: the reader's iteration raises exc (if it is still reading)."""
        try:
            self._send(exc)
        except BrokenPipeError:
            pass

    def _send(self, item: object) -> None:
        if self._closed.is_set():
            raise BrokenPipeError("the reader went away")
        future = asyncio.run_coroutine_threadsafe(self._queue.put(item), self._loop)
        while True:
            try:
                future.result(timeout=0.5)
                return
            except concurrent.futures.TimeoutError:
                if self._closed.is_set():
                    future.cancel()
                    raise BrokenPipeError("the reader went away") from None

    # the reader's side (event loop) -----------------------------------------------------

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            item = await self._queue.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, bytes)
            yield item

    def close(self) -> None:
        """The reader stops: a blocked or later write fails instead of waiting forever."""
        self._closed.set()
        while not self._queue.empty():
            self._queue.get_nowait()
