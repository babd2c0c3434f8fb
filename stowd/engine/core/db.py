"""The one writer to SQLite: every store call runs, in order, on one database thread."""

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from stowd.engine.core.container import Container
from stowd.engine.store import Store

log = logging.getLogger("stowd.db")
T = TypeVar("T")


class Database:
    def __init__(self) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stowd-db")
        self.store: Store | None = None

    def open(self, store: Store) -> None:
        self.store = store

    @property
    def opened(self) -> Store:
        if self.store is None:
            raise RuntimeError("the database is not open")
        return self.store

    def run(self, fn: Callable[..., T], *args: Any) -> "asyncio.Future[T]":
        """Run a store call on the database thread.

        One thread, so writes commit in the order they were asked for (a container's
        state never goes back), and SQLite never blocks the event loop."""
        return asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """From a worker thread: run a store call on the database thread and wait for it,
        so writes made in threads (networks, volumes) are ordered with the loop's."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return self._thread.submit(fn, *args).result()
        raise RuntimeError("Database.call blocks: on the event loop, await run() instead")

    def persist(self, c: Container) -> "asyncio.Future[None]":
        """Commit the container's record as it is now; await it before answering."""
        future = self.run(self.opened.update_container, c.id, c.to_record())
        future.add_done_callback(_log_failure)
        return future

    async def close(self) -> None:
        if self.store is not None:
            await self.run(self.store.close)  # after every queued write has committed
        self._thread.shutdown(wait=False)  # idle by now: the close above was its last job


def _log_failure(future: "asyncio.Future[None]") -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("database write failed", exc_info=future.exception())
