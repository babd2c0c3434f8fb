"""The engine's core: one handle per container, released in one call; the one database
writer; the one trash for directories; the one `until` parser."""

import asyncio
import os
import threading
import time
from pathlib import Path

import pytest

from stowd.engine.attach import AttachSession
from stowd.engine.core.container import Container
from stowd.engine.core.db import Database
from stowd.engine.core.handles import ExitStatus, Handles
from stowd.engine.core.layout import remove_tree, sweep_trash
from stowd.engine.errors import InvalidParameter, NotFound
from stowd.engine.exec import ExecInstance
from stowd.engine.timespec import parse_until


def _ctr(cid: str, name: str) -> Container:
    return Container(id=cid, name=name, created="", image_id="", config={}, host_config={},
                     path="true", args=[])


def test_handles_resolve_as_docker_and_release_everything_in_one_call() -> None:
    async def run() -> None:
        handles = Handles()
        a = handles.add(_ctr("a" * 64, "one"))
        handles.add(_ctr("ab" + "0" * 62, "two"))
        assert handles.get("one").id == "a" * 64
        assert handles.get("/two").name == "two"
        with pytest.raises(InvalidParameter):
            handles.get("a")  # two IDs start with it
        exited = a.exit_future()
        removed = a.removal_future()
        session = AttachSession(a.container.id, False, True, True, None)
        a.attachers.add(session)
        inst = ExecInstance(id="e1", container_id=a.container.id, cmd=["true"])
        handles.add_exec(a, inst)
        a.restart_timer = asyncio.get_running_loop().call_later(60, lambda: None)
        timer = a.restart_timer
        r, w = os.pipe()
        a.watch(r, lambda: None)

        waiters = handles.remove(a.container.id)

        assert a.container.id not in handles
        assert timer.cancelled() and a.restart_timer is None
        assert a.pidfd is None and not a.attachers and not a.execs
        with pytest.raises(OSError):
            os.fstat(r)  # the watched fd is closed
        os.close(w)
        with pytest.raises(NotFound):
            handles.exec("e1")
        assert set(waiters) == {exited, removed} and not exited.done()
        assert handles.remove(a.container.id) == []  # once

    asyncio.run(run())


def test_exited_tells_the_waiters_once() -> None:
    async def run() -> None:
        h = Handles().add(_ctr("c" * 64, "c"))
        fut = h.exit_future()
        h.exited(ExitStatus(3))
        assert fut.result().code == 3 and h.exit_waiters == []

    asyncio.run(run())


def test_database_writes_in_order_and_call_refuses_the_loop() -> None:
    db = Database()
    order: list[int] = []

    async def run() -> None:
        first = db.run(order.append, 1)
        second = await asyncio.to_thread(db.call, order.append, 2)  # from a worker thread
        await first
        assert second is None and order == [1, 2]
        with pytest.raises(RuntimeError):
            db.call(order.append, 3)  # it would block the loop

    asyncio.run(run())
    assert order == [1, 2]


def test_remove_tree_frees_the_name_at_once_and_sweep_finishes(tmp_path: Path) -> None:
    victim = tmp_path / "c1"
    (victim / "sub").mkdir(parents=True)
    (victim / "sub" / "f").write_text("x")
    remove_tree(victim)
    assert not victim.exists()
    for t in threading.enumerate():
        if t.daemon and t is not threading.current_thread():
            t.join(5)
    leftover = tmp_path / ".trash-c2-dead"  # what a crash leaves
    leftover.mkdir()
    sweep_trash(tmp_path)
    assert list(tmp_path.iterdir()) == []
    remove_tree(tmp_path / "missing")  # nothing to do


def test_one_until_parser() -> None:
    now = 1_000_000.0
    assert parse_until("12345", now) == 12345.0
    assert parse_until("10m", now) == now - 600
    assert parse_until("1h30m", now) == now - 5400  # container prune refused this before
    assert parse_until("2026-01-01T00:00:00Z", now) == 1767225600.0
    with pytest.raises(InvalidParameter, match="invalid filter 'until=soon'"):
        parse_until("soon", now)
    assert abs(parse_until("1s") - (time.time() - 1)) < 5

