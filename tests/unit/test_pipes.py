"""The bounded pipes between the event loop and threads, and the two-thread Stage."""

import asyncio
import threading
import time

import pytest

from stowd.engine.images.pipe import FeedPipe, Stage


def test_stage_does_the_work_in_order_in_another_thread() -> None:
    seen: list[bytes] = []
    threads: set[int] = set()

    def work(chunk: bytes) -> None:
        threads.add(threading.get_ident())
        seen.append(chunk)

    stage = Stage(work, depth=2)
    for i in range(50):
        stage.put(b"%d" % i)
    stage.finish()
    assert seen == [b"%d" % i for i in range(50)]
    assert threads and threading.get_ident() not in threads


def test_stage_error_reaches_the_caller_and_the_rest_is_dropped() -> None:
    done: list[bytes] = []

    def work(chunk: bytes) -> None:
        if chunk == b"bad":
            raise ValueError("bad chunk")
        done.append(chunk)

    stage = Stage(work, depth=1)
    stage.put(b"a")
    stage.put(b"bad")
    with pytest.raises(ValueError, match="bad chunk"):
        for _ in range(100):  # a later put, or finish, raises it
            stage.put(b"after")
            time.sleep(0.001)
        stage.finish()
    stage.abort()
    assert done == [b"a"]


def test_stage_abort_ends_the_thread_even_with_a_full_queue() -> None:
    gate = threading.Event()
    stage = Stage(lambda _: gate.wait(), depth=2)
    before = threading.active_count()
    stage.put(b"1")
    stage.put(b"2")
    stage.put(b"3")
    gate.set()
    stage.abort()
    assert threading.active_count() == before - 1


def test_feed_pipe_hands_chunks_on_without_a_copy() -> None:
    loop = asyncio.new_event_loop()
    pipe = FeedPipe(loop)
    chunk = bytes(range(256)) * 4096  # 1 MiB
    got: list[bytes] = []

    def reader() -> None:
        while data := pipe.read(1 << 20):
            got.append(data)

    async def main() -> None:
        t = asyncio.ensure_future(asyncio.to_thread(reader))
        await pipe.put(chunk)
        await pipe.put(chunk + b"tail")  # larger than a read: cut, the rest read next
        await pipe.finish()
        await t

    loop.run_until_complete(main())
    loop.close()
    assert got[0] is chunk
    assert b"".join(got[1:]) == chunk + b"tail" and len(got) == 3
