"""Run `stowd serve` with timestamps around the engine's phases, for bench/lifecycle.py.

    python bench/stowd_trace.py TRACE.jsonl serve -H unix:///... [stowd serve options]

The engine code is not changed: this launcher wraps a fixed list of engine, store,
runtime and mount functions before calling `stowd.cli.main`, and appends one JSON line
per call to TRACE.jsonl. Each line has the call's path (for example
`start/task.create_task/OciRuntime.create`), the top-level operation it belongs to
(one of create, start, exit, remove, plus a sequence number), and its start and end on
the monotonic clock (`time.perf_counter()`), which is the same clock in every process,
so the bench client can line the daemon's timestamps up with its own.

Only calls made inside one of the four top-level operations are recorded. The cost is
a few microseconds per wrapped call (about 30 calls per container lifecycle).
"""

from __future__ import annotations

import contextvars
import functools
import itertools
import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# (operation id, path of the enclosing wrapped calls), or None outside an operation
_CURRENT: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar(
    "stowd_bench_trace", default=None)
_counter = itertools.count(1)
_lock = threading.Lock()
_pending: list[str] = []
_out: Any = None


def _record(entry: dict[str, Any], flush: bool = False) -> None:
    line = json.dumps(entry, separators=(",", ":")) + "\n"
    with _lock:
        _pending.append(line)
        if flush and _out is not None:
            _out.write("".join(_pending))
            _out.flush()
            _pending.clear()


def _wrap_sync(owner: Any, attr: str, name: str) -> None:
    fn: Callable[..., Any] = getattr(owner, attr)

    @functools.wraps(fn)
    def traced(*args: Any, **kwargs: Any) -> Any:
        cur = _CURRENT.get()
        if cur is None:
            return fn(*args, **kwargs)
        op, parent = cur
        path = f"{parent}/{name}"
        token = _CURRENT.set((op, path))
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            t1 = time.perf_counter()
            _CURRENT.reset(token)
            _record({"op": op, "path": path, "t0": t0, "t1": t1})

    setattr(owner, attr, traced)


def _wrap_async(owner: Any, attr: str, name: str) -> None:
    fn: Callable[..., Any] = getattr(owner, attr)

    @functools.wraps(fn)
    async def traced(*args: Any, **kwargs: Any) -> Any:
        cur = _CURRENT.get()
        if cur is None:
            return await fn(*args, **kwargs)
        op, parent = cur
        path = f"{parent}/{name}"
        token = _CURRENT.set((op, path))
        t0 = time.perf_counter()
        try:
            return await fn(*args, **kwargs)
        finally:
            t1 = time.perf_counter()
            _CURRENT.reset(token)
            _record({"op": op, "path": path, "t0": t0, "t1": t1})

    setattr(owner, attr, traced)


def _wrap_top(owner: Any, attr: str, phase: str, cid_of: Callable[[tuple[Any, ...], Any], str]
              ) -> None:
    """An async engine entry point: each call is one operation with its own id."""
    fn: Callable[..., Any] = getattr(owner, attr)

    @functools.wraps(fn)
    async def traced(*args: Any, **kwargs: Any) -> Any:
        op = f"{phase}#{next(_counter)}"
        token = _CURRENT.set((op, phase))
        t0 = time.perf_counter()
        result: Any = None
        ok = False
        try:
            result = await fn(*args, **kwargs)
            ok = True
            return result
        finally:
            t1 = time.perf_counter()
            _CURRENT.reset(token)
            try:
                cid = cid_of(args, result)
            except Exception:
                cid = ""
            _record({"op": op, "path": phase, "t0": t0, "t1": t1, "top": True, "cid": cid,
                     "ok": ok}, flush=True)

    setattr(owner, attr, traced)


def install(trace_path: str) -> None:
    global _out
    from stowd.engine import rootfs
    from stowd.engine.containers import create, delete, monitor, start, task
    from stowd.engine.core.core import Core
    from stowd.engine.core.db import Database
    from stowd.engine.images.store import ImageStore
    from stowd.engine.runtime import mounts
    from stowd.engine.runtime.oci import OciRuntime
    from stowd.engine.store import Store

    _out = open(trace_path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the daemon

    # top-level operations: what each API call (or conmon's exit) runs. The verbs are module
    # functions called through their module's globals, so wrapping the attribute reaches
    # every caller.
    _wrap_top(create, "create_container", "create", lambda a, r: r[0] if r else "")
    _wrap_top(start, "start", "start", lambda a, r: str(a[1]))
    _wrap_top(monitor, "handle_exit", "exit", lambda a, r: str(a[1]))
    _wrap_top(delete, "remove", "remove", lambda a, r: str(a[1]))

    _wrap_async(start, "start_locked", "start.start_locked")
    _wrap_async(delete, "finish_remove", "delete.finish_remove")
    for mod, attrs in ((create, ("prepare_dirs", "write_etc_files", "reserve")),
                       (task, ("create_task", "spec_input", "teardown_task")),
                       (delete, ("remove_files",)), (monitor, ("watch",))):
        for attr in attrs:
            if attr == "reserve":
                _wrap_async(mod, attr, f"{mod.__name__.rsplit('.', 1)[-1]}.{attr}")
            else:
                _wrap_sync(mod, attr, f"{mod.__name__.rsplit('.', 1)[-1]}.{attr}")
    _wrap_sync(Database, "persist", "Database.persist")
    _wrap_sync(Core, "event", "Core.event")
    for attr in ("resolve", "find", "layer_dirs"):
        _wrap_sync(ImageStore, attr, f"ImageStore.{attr}")
    for attr in ("insert_container", "update_container", "delete_container"):
        _wrap_sync(Store, attr, f"Store.{attr}")
    for attr in ("create", "start", "delete", "read_exit", "cleanup_files"):
        _wrap_sync(OciRuntime, attr, f"OciRuntime.{attr}")
    for attr in ("mount_overlay", "unmount", "is_mounted"):
        _wrap_sync(mounts, attr, f"mounts.{attr}")
    _wrap_sync(rootfs, "make_init_layer", "rootfs.make_init_layer")
    _wrap_sync(task, "build_spec", "build_spec")

    # when the pidfd of a container's conmon becomes readable (conmon has exited)
    on_exit = monitor.on_conmon_exit

    @functools.wraps(on_exit)
    def traced_on_exit(x: Any, cid: str, conmon_pid: int) -> None:
        _record({"op": "", "path": "conmon_exit_seen", "t0": time.perf_counter(), "cid": cid},
                flush=True)
        on_exit(x, cid, conmon_pid)

    monitor.on_conmon_exit = traced_on_exit  # type: ignore[assignment]


def main() -> int:
    if len(sys.argv) < 3:
        print("usage: stowd_trace.py TRACE.jsonl serve [stowd serve options]", file=sys.stderr)
        return 2
    install(sys.argv[1])
    from stowd.cli import main as stowd_main

    return stowd_main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
