"""Running healthcheck probes: one monitor task per running container with a probe.

Each probe is an exec in the container, as dockerd runs it (the container's process with
the probe's command, its user, working directory and environment, no TTY), one at a time:
the next is scheduled the interval after the previous one ended. The rules (what counts,
the log, the status) are in `health.py`; this module only runs processes and keeps time.

A probe is cheap on purpose (50 containers probed every second is the budget): the process
spec is written once per start, the runtime is spawned with posix_spawn (vfork, so the
size of stowd's address space does not matter) and followed through a pidfd and one pipe
on the event loop, with no stream objects or thread per probe. The record is written to
the database only when the status or the failing streak changes; the log of a healthy
container lives in memory between those writes (dockerd does the same: it replicates the
health state in memory and writes it on the next checkpoint).
"""

import asyncio
import contextlib
import functools
import json
import logging
import os
import secrets
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from stowd.engine import exec as execs
from stowd.engine import health
from stowd.engine.core.container import Container, parse_time, rfc3339_nano
from stowd.engine.runtime.oci import runtime_message

log = logging.getLogger("stowd.health")

# After the probe has exited, how long its output may still take to arrive (a process it
# left behind may hold the pipe open forever).
OUTPUT_GRACE = 0.2
# How long a killed probe's runtime may take to report before it is killed too.
KILL_GRACE = 10.0

EventFn = Callable[[Container, str, dict[str, str]], None]
PersistFn = Callable[[Container], Awaitable[None]]


class HealthMonitor:
    """Starts, stops and runs the probes of running containers."""

    def __init__(self, runtime_path: str, runtime_root: Path, state_dir: Path,
                 spec_of: Callable[[Container], Path], event: EventFn,
                 persist: PersistFn) -> None:
        self.runtime_path = runtime_path
        self.runtime_root = runtime_root
        self.state_dir = state_dir
        self._spec_of = spec_of  # the container's OCI spec (its layout knows where)
        self._event = event
        self._persist = persist
        self._tasks: dict[str, asyncio.Task[None]] = {}

    # lifecycle --------------------------------------------------------------------------

    def start(self, c: Container, *, reset: bool = True) -> None:
        """Begin probing a running container (after start or restart with reset; after a
        restart of stowd without, so its status and streak carry on)."""
        probe = health.probe_of(c.config)
        if probe is None:
            return
        self._cancel(c.id)
        if reset or c.state.health is None:
            c.state.health = health.reset(c.state.health)
        task = asyncio.get_running_loop().create_task(self._run(c, probe),
                                                      name=f"health {c.short_id}")
        self._tasks[c.id] = task
        task.add_done_callback(self._done)

    def pause(self, c: Container) -> None:
        """A paused container is not probed; dockerd then reports it unhealthy."""
        self.stop(c)

    def resume(self, c: Container) -> None:
        """Unpaused: probing resumes where it was (no reset, as dockerd)."""
        self.start(c, reset=False)

    def stop(self, c: Container) -> None:
        """The container stopped (or paused): no more probes, status `unhealthy`."""
        self._cancel(c.id)
        health.monitor_closed(c.state.health)

    def forget(self, cid: str) -> None:
        self._cancel(cid)

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        self._tasks.clear()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    @property
    def running(self) -> int:
        return len(self._tasks)

    def _cancel(self, cid: str) -> None:
        task = self._tasks.pop(cid, None)
        if task is not None:
            task.cancel()

    def _done(self, task: "asyncio.Task[None]") -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("health monitor failed", exc_info=task.exception())

    # the monitor ------------------------------------------------------------------------

    def _paths(self, cid: str) -> tuple[Path, Path]:
        return self.state_dir / f"{cid}.json", self.state_dir / f"{cid}.pid"

    def _write_spec(self, c: Container, probe: health.Probe, spec_path: Path) -> None:
        """Blocking: the probe's process.json, from the container's own process."""
        container_spec = execs.load_spec(self._spec_of(c))
        inst = execs.ExecInstance(id="", container_id=c.id, cmd=probe.cmd)
        user = (container_spec.get("process") or {}).get("user") or {"uid": 0, "gid": 0}
        process = execs.process_spec(container_spec, inst, user, None)
        spec_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = spec_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(process))
        os.replace(tmp, spec_path)

    async def _run(self, c: Container, probe: health.Probe) -> None:
        spec_path, pid_path = self._paths(c.id)
        try:
            await asyncio.to_thread(self._write_spec, c, probe, spec_path)
            started = parse_time(c.state.started_at)
            # Cancellation is how a monitor stops; the check on its own entry also ends a
            # monitor whose cancellation was lost in a race with a finishing await.
            while self._tasks.get(c.id) is asyncio.current_task():
                h = c.state.health
                status = str((h or {}).get("Status") or health.STARTING)
                await asyncio.sleep(health.next_delay(probe, time.time() - started, status))
                result_start = time.time()
                result = await self.probe(c, probe, spec_path, pid_path)
                h = c.state.health
                if h is None or self._tasks.get(c.id) is not asyncio.current_task():
                    return  # stopped meanwhile: dockerd drops such a result too
                streak = h.get("FailingStreak")
                changed = health.record(h, result, probe, result_start - started)
                if changed or h.get("FailingStreak") != streak:
                    await self._persist(c)
                if changed:
                    self._event(c, "health_status: " + changed, {})
        finally:
            await asyncio.to_thread(_remove, spec_path, pid_path)

    async def probe(self, c: Container, probe: health.Probe, spec_path: Path,
                    pid_path: Path) -> dict[str, Any]:
        """Run one probe: its result in Docker's shape (Start, End, ExitCode, Output)."""
        exec_id = secrets.token_hex(32)
        text = execs.event_command(probe.cmd)
        self._event(c, "exec_create: " + text, {"execID": exec_id})
        self._event(c, "exec_start: " + text, {"execID": exec_id})
        start = time.time()
        run = _Run(self.runtime_path, self.runtime_root, spec_path, pid_path, c.id)
        try:
            timed_out = not await run.wait(probe.timeout / health.SECOND)
            if timed_out:
                await run.kill()
            output = await run.finish()
        except BaseException:
            await asyncio.shield(run.abandon())
            raise
        end = time.time()
        code = execs.exit_status(run.returncode)
        if timed_out:
            result_code, message = -1, health.timeout_output(probe, output)
        elif code != 0 and _runtime_failed(output):
            # The runtime failed before the process ran (no such executable, ...): as
            # dockerd, the exec's error is the result, and no exec_die is sent.
            return {"Start": rfc3339_nano(start), "End": rfc3339_nano(end), "ExitCode": -1,
                    "Output": f"OCI runtime exec failed: {runtime_message(output)}: unknown"}
        else:
            result_code, message = code, output
        self._event(c, "exec_die", {"execID": exec_id, "exitCode": str(code)})
        return {"Start": rfc3339_nano(start), "End": rfc3339_nano(end),
                "ExitCode": result_code, "Output": message}


class _Run:
    """One `<runtime> exec` of a probe: spawned at once, output into one pipe."""

    def __init__(self, runtime: str, root: Path, spec_path: Path, pid_path: Path,
                 cid: str) -> None:
        self.loop = asyncio.get_running_loop()
        self.started = time.time()
        self.pid_path = pid_path
        self.output = health.OutputBuffer()
        self.returncode: int | None = None
        self._eof = asyncio.Event()
        self._exited = asyncio.Event()
        rfd, wfd = os.pipe()
        try:
            os.set_blocking(rfd, False)
            self.pid = os.posix_spawn(
                runtime,
                [runtime, f"--root={root}", "exec", "--process", str(spec_path),
                 "--pid-file", str(pid_path), cid],
                _environment(),
                file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                              (os.POSIX_SPAWN_DUP2, wfd, 1),
                              (os.POSIX_SPAWN_DUP2, wfd, 2)],
                setsid=True,
            )
        except BaseException:
            os.close(rfd)
            raise
        finally:
            os.close(wfd)
        self._rfd = rfd
        self.loop.add_reader(rfd, self._readable)
        self._pidfd = os.pidfd_open(self.pid)
        self.loop.add_reader(self._pidfd, self._reap)

    def _readable(self) -> None:
        while True:
            try:
                data = os.read(self._rfd, 65536)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._close_output()
                return
            self.output.write(data)

    def _close_output(self) -> None:
        if self._rfd >= 0:
            self.loop.remove_reader(self._rfd)
            os.close(self._rfd)
            self._rfd = -1
        self._eof.set()

    def _reap(self) -> None:
        with contextlib.suppress(ChildProcessError):
            _, status = os.waitpid(self.pid, os.WNOHANG)
            if _ == 0:
                return
            self.returncode = os.waitstatus_to_exitcode(status)
        self.loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = -1
        self._exited.set()

    async def wait(self, timeout: float) -> bool:
        """True when the runtime exited within timeout."""
        try:
            async with asyncio.timeout(timeout):
                await self._exited.wait()
            return True
        except TimeoutError:
            return False

    async def kill(self) -> None:
        """Kill the probe's process (the runtime then exits); the runtime itself if it
        has not started the process yet, or does not exit after it."""
        pid = await asyncio.to_thread(_read_pid, self.pid_path, self.started)
        if pid is not None:
            _kill_probe(pid)
        if pid is None or not await self.wait(KILL_GRACE):
            self._kill_runtime()
            await self._exited.wait()

    def _kill_runtime(self) -> None:
        if self._pidfd >= 0:
            with contextlib.suppress(ProcessLookupError, OSError):
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)

    async def finish(self) -> str:
        """The output, once the pipe is closed or shortly after the process exited."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(OUTPUT_GRACE):
                await self._eof.wait()
        self._close_output()
        return self.output.text()

    async def abandon(self) -> None:
        """Cancelled (the container stopped): the probe dies with the runtime, now."""
        if not self._exited.is_set():
            pid = await asyncio.to_thread(_read_pid, self.pid_path, self.started)
            if pid is not None:
                _kill_probe(pid)
            if not await self.wait(KILL_GRACE):
                self._kill_runtime()
                await self._exited.wait()
        self._close_output()


@functools.cache
def _environment() -> dict[bytes, bytes]:
    """stowd's environment for the runtime, encoded once: converting os.environ on every
    spawn was the largest part of a probe's cost in stowd."""
    return dict(os.environb)


def _kill_probe(pid: int) -> None:
    """SIGKILL the probe and what it started: the runtime makes the exec'd process a
    process-group leader, so a shell's children (`sleep 7; echo x`) go with it. dockerd
    kills only the process and leaves such children running in the container."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)


def _runtime_failed(output: str) -> bool:
    """The runtime's own error (it could not start the process) rather than the probe's
    output: runc and crun log it as `time="…" level=error msg="…"` and exit non-zero."""
    return output.startswith('time="') and "level=error" in output.split("\n", 1)[0]


def _read_pid(path: Path, since: float) -> int | None:
    """The probe's PID from the runtime's pid file, if this run wrote it (the file is
    reused from probe to probe, so an older one names a process long gone)."""
    with contextlib.suppress(OSError, ValueError):
        if path.stat().st_mtime >= since - 0.01:
            return int(path.read_text().strip())
    return None


def _remove(*paths: Path) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
