"""Bounded pipes between the event loop and worker threads, and between two threads.

`ThreadPipe`: a blocking writer in a worker thread to a reader on the event loop. The writer
sees a file (`write`); the reader iterates chunks. At most `depth` chunks wait in between, so
a slow reader slows the writer instead of filling memory, and a reader that goes away makes
the next `write` raise BrokenPipeError. `FeedPipe` is the other direction, `Stage` a second
worker thread doing one step of a stream while the first thread does the step before.
"""

import asyncio
import concurrent.futures
import io
import queue
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

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


class FeedPipe(io.RawIOBase):
    """The other direction: chunks put on the event loop, read as a file in a worker thread.

    At most `depth` chunks wait in between, so a fast network waits for a slow extraction
    instead of filling memory. `fail(exc)` makes the reader's next read raise exc.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, depth: int = 4) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[object] = asyncio.Queue(depth)
        self._buffer = memoryview(b"")
        self._item = b""  # the chunk _buffer is a view of
        self._eof = False
        self._closed = False

    # the writer's side (event loop) ------------------------------------------------------

    async def put(self, chunk: bytes) -> None:
        """Raises BrokenPipeError once the reader is gone (see close)."""
        if self._closed:
            raise BrokenPipeError("the reader went away")
        if chunk:
            await self._queue.put(chunk)

    async def finish(self) -> None:
        if self._closed:
            raise BrokenPipeError("the reader went away")
        await self._queue.put(_DONE)

    def close(self) -> None:
        """The reader is done (or failed): a writer waiting for room is let go."""
        self._closed = True
        while not self._queue.empty():
            self._queue.get_nowait()

    def fail(self, exc: BaseException) -> None:
        """Never blocks: what was queued is dropped, the reader sees exc next."""
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(exc)

    # the reader's side (worker thread) ---------------------------------------------------

    def readable(self) -> bool:
        return True

    def _next(self) -> None:
        item = asyncio.run_coroutine_threadsafe(self._queue.get(), self._loop).result()
        if item is _DONE:
            self._eof = True
        elif isinstance(item, BaseException):
            self._eof = True
            raise item
        else:
            assert isinstance(item, bytes)
            self._item = item
            self._buffer = memoryview(item)

    def readinto(self, b: Any) -> int:
        if not self._buffer and not self._eof:
            self._next()
        n = min(len(b), len(self._buffer))
        b[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n

    def read(self, size: int | None = -1) -> bytes:
        """A chunk as it was put, without a copy when it fits in size (the usual case:
        the writer puts chunks of the reader's size)."""
        if size is None or size < 0:
            return self.readall()
        if not self._buffer and not self._eof:
            self._next()
        if len(self._buffer) <= size:
            out = self._item if len(self._buffer) == len(self._item) else bytes(self._buffer)
            self._buffer = memoryview(b"")
            return out
        out = bytes(self._buffer[:size])
        self._buffer = self._buffer[size:]
        return out


class _Stop:
    pass


_STOP = _Stop()


class Stage:
    """A worker thread applying `work` to each chunk handed to it, in order, while the
    caller's thread goes on with the next chunk: two steps of one stream on two CPUs
    (hashlib, zlib and isal let go of the GIL on large buffers). At most `depth` chunks wait,
    so memory stays bounded. An error in `work` is raised to the caller by its next `put` or
    by `finish`; after one, the chunks still queued are dropped.

    Every Stage must end with `finish()` (all work done, errors raised) or `abort()` (the
    caller failed: nothing more matters), or its thread waits forever.
    """

    def __init__(self, work: Callable[[bytes], None], depth: int = 4,
                 name: str = "stage") -> None:
        self._work = work
        self._queue: queue.Queue[bytes | _Stop] = queue.Queue(depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if isinstance(item, _Stop):
                return
            if self._error is not None:
                continue
            try:
                self._work(item)
            except BaseException as exc:  # handed to the caller
                self._error = exc

    def put(self, chunk: bytes) -> None:
        """chunk must not change afterwards (bytes, not a reused buffer)."""
        if self._error is not None:
            raise self._error
        self._queue.put(chunk)

    def finish(self) -> None:
        self._queue.put(_STOP)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def abort(self) -> None:
        if self._error is None:
            self._error = BrokenPipeError("the stage was aborted")
        # The thread drops what is queued once _error is set, so there is room soon.
        self._queue.put(_STOP)
        self._thread.join()
