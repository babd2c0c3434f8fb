"""inotify wake-ups for log followers and log rotation (engine/logwatch.py)."""

import asyncio
import shutil
from pathlib import Path

from stowd.engine.logwatch import LogRotator, LogWatch, Rotation


def test_rotator_checks_a_log_when_written_and_only_then(tmp_path: Path) -> None:
    async def scenario() -> None:
        checked: list[list[str]] = []
        arrived = asyncio.Event()

        def rotate(due: list[Rotation]) -> None:
            checked.append([r.key for r in due])
            arrived.set()

        rotator = LogRotator(rotate)
        runner = asyncio.ensure_future(rotator.run())
        dirs = {}
        for key in ("a", "b"):
            dirs[key] = tmp_path / key
            dirs[key].mkdir()
            (dirs[key] / "ctr.log").write_bytes(b"")
            await rotator.watch(Rotation(key, dirs[key] / "ctr.log", dirs[key] / "ctl", 10, 2))
        assert checked == [["a"], ["b"]]  # once at watch: it may be over its size already
        assert rotator.watched == 2
        checked.clear()
        arrived.clear()
        (dirs["b"] / "other").write_bytes(b"x")  # not the log: no check
        await asyncio.sleep(0.1)
        assert checked == []
        with (dirs["b"] / "ctr.log").open("ab") as f:
            for _ in range(100):
                f.write(b"line\n")
                f.flush()
        await asyncio.wait_for(arrived.wait(), 5)
        assert ["b"] in checked and all(keys == ["b"] for keys in checked)
        # 100 writes in a row coalesce: far fewer checks than writes.
        await asyncio.sleep(0.2)
        assert len(checked) < 10
        rotator.unwatch("b")
        checked.clear()
        (dirs["b"] / "ctr.log").write_bytes(b"more\n")
        shutil.rmtree(dirs["a"])  # the directory goes: its watch is forgotten
        for _ in range(100):
            if rotator.watched == 0:
                break
            await asyncio.sleep(0.02)
        assert rotator.watched == 0 and checked == []
        runner.cancel()

    asyncio.run(scenario())


def test_follower_wakes_on_write_and_on_stop(tmp_path: Path) -> None:
    async def scenario() -> None:
        log = tmp_path / "ctr.log"
        log.write_bytes(b"")
        watch = LogWatch(log)
        loop = asyncio.get_running_loop()
        never: asyncio.Future[object] = loop.create_future()
        waiter = asyncio.ensure_future(watch.changed(never))
        await asyncio.sleep(0.05)
        assert not waiter.done()
        log.write_bytes(b"x\n")
        await asyncio.wait_for(waiter, 5)
        stop: asyncio.Future[object] = loop.create_future()
        waiter = asyncio.ensure_future(watch.changed(stop))
        await asyncio.sleep(0.05)
        assert not waiter.done()
        stop.set_result(None)
        await asyncio.wait_for(waiter, 5)
        watch.close()
        never.cancel()

    asyncio.run(scenario())
