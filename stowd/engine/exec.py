"""Exec: extra processes in a running container, run by `<runtime> exec`.

stowd runs the runtime's exec directly (no conmon): it is the exec'd process's parent for
as long as it runs, relays its stdio (pipes, or the pty the runtime hands over on a console
socket for a TTY), and records its exit code. The process spec starts from the container's
own (capabilities, environment, user, rlimits) with the exec's changes on top.
"""

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import secrets
import signal
import struct
import termios
import time
import tty
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stowd.engine.attach import STDERR, STDOUT
from stowd.engine.runtime.oci import runtime_message

_READ = 65536
log = logging.getLogger("stowd.exec")


@dataclass(eq=False)
class ExecInstance:
    id: str
    container_id: str
    cmd: list[str]
    tty: bool = False
    attach_stdin: bool = False
    attach_stdout: bool = True
    attach_stderr: bool = True
    env: list[str] = field(default_factory=list)
    user: str = ""
    working_dir: str = ""
    privileged: bool = False
    detach_keys: bytes = b""
    detach_keys_given: bool = False
    console_size: tuple[int, int] | None = None
    running: bool = False
    started: bool = False
    exit_code: int | None = None
    pid: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)
    # The stream side, shaped like an AttachSession so the API relays both the same way.
    output: "asyncio.Queue[tuple[int, bytes] | None]" = field(
        default_factory=lambda: asyncio.Queue(maxsize=256))
    stdin_once: bool = True
    framed: bool = True  # stdcopy frames on the stream (the start request's Tty decides)
    process: asyncio.subprocess.Process | None = None
    pty_master: int = -1
    relays: list["asyncio.Task[Any]"] = field(default_factory=list)

    @property
    def stdin(self) -> bool:
        return self.attach_stdin

    async def write_stdin(self, data: bytes) -> None:
        if not self.attach_stdin or not data:
            return
        if self.pty_master >= 0:
            await _write_all_fd(self.pty_master, data)
        elif self.process is not None and self.process.stdin is not None:
            with contextlib.suppress(ConnectionError):
                self.process.stdin.write(data)
                await self.process.stdin.drain()

    async def close_stdin(self) -> None:
        if self.pty_master >= 0:
            with contextlib.suppress(OSError):
                os.write(self.pty_master, b"\x04")  # ^D: end of input for a terminal
        elif self.process is not None and self.process.stdin is not None:
            with contextlib.suppress(ConnectionError, OSError):
                self.process.stdin.close()

    def resize(self, height: int, width: int) -> None:
        if self.pty_master >= 0:
            _set_size(self.pty_master, height, width)
            if self.process is not None:
                with contextlib.suppress(ProcessLookupError):
                    self.process.send_signal(signal.SIGWINCH)

    def inspect_process(self) -> dict[str, Any]:
        return {
            "tty": self.tty,
            "entrypoint": self.cmd[0] if self.cmd else "",
            "arguments": self.cmd[1:],
            "privileged": self.privileged,
            **({"user": self.user} if self.user else {}),
        }


def new_exec_id() -> str:
    return secrets.token_hex(32)


def event_command(cmd: list[str]) -> str:
    """The command as exec events name it: dockerd writes the entrypoint, a space, and the
    arguments joined by spaces (so `ps` alone reads "ps ")."""
    return f"{cmd[0]} {' '.join(cmd[1:])}" if cmd else ""


def process_spec(container_spec: dict[str, Any], inst: ExecInstance, user: dict[str, Any],
                 privileged_caps: list[str] | None) -> dict[str, Any]:
    """The exec's process.json: the container's process with the exec's changes."""
    base = dict(container_spec.get("process") or {})
    env = list(base.get("env") or [])
    for entry in inst.env:
        key = entry.split("=", 1)[0]
        env = [e for e in env if e.split("=", 1)[0] != key] + [entry]
    if inst.tty and not any(e.startswith("TERM=") for e in env):
        env.append("TERM=xterm")
    process: dict[str, Any] = {
        **base,
        "terminal": inst.tty,
        "args": inst.cmd,
        "env": env,
        "cwd": inst.working_dir or base.get("cwd") or "/",
        "user": user,
    }
    process.pop("consoleSize", None)
    if inst.tty and inst.console_size and all(inst.console_size):
        process["consoleSize"] = {"height": inst.console_size[0],
                                  "width": inst.console_size[1]}
    if privileged_caps is not None:
        process["capabilities"] = {k: list(privileged_caps)
                                   for k in ("bounding", "effective", "permitted")}
    return process


async def _write_all_fd(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
            view = view[n:]
        except BlockingIOError:
            await asyncio.sleep(0.005)
        except OSError:
            return


def exit_status(returncode: int | None) -> int:
    if returncode is None:
        return -1
    return 128 - returncode if returncode < 0 else returncode


async def run(inst: ExecInstance, runtime_path: str, runtime_root: Path, spec_path: Path,
              detach: bool) -> None:
    """Start the exec'd process; its output flows into inst.output until it exits.

    For a TTY the runtime runs in the foreground on a pty of ours: it puts that pty in raw
    mode, relays it to the container's terminal, and on SIGWINCH copies its size over,
    so a resize is an ioctl on our side plus a signal (a console socket would need a
    detached process, whose exit code no one could then collect)."""
    loop = asyncio.get_running_loop()
    pid_file = spec_path.with_suffix(".pid")
    args = [runtime_path, f"--root={runtime_root}", "exec", "--process", str(spec_path),
            "--pid-file", str(pid_file), inst.container_id]
    slave = -1
    if inst.tty:
        master, slave = os.openpty()
        tty.setraw(slave)
        if inst.console_size:
            _set_size(master, *inst.console_size)
        os.set_blocking(master, False)
        inst.pty_master = master
    stdin: int = asyncio.subprocess.DEVNULL
    if slave >= 0:
        stdin = slave
    elif inst.attach_stdin and not detach:
        stdin = asyncio.subprocess.PIPE
    stdout: int = asyncio.subprocess.DEVNULL
    if slave >= 0:
        stdout = slave
    elif not detach:
        stdout = asyncio.subprocess.PIPE
    try:
        inst.process = await asyncio.create_subprocess_exec(
            *args, stdin=stdin, stdout=stdout, stderr=asyncio.subprocess.PIPE,
            start_new_session=True)
    finally:
        if slave >= 0:
            os.close(slave)
    inst.running = True
    inst.started = True
    inst.relays.append(loop.create_task(_relay(inst, pid_file, detach)))


def _set_size(fd: int, height: int, width: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))


async def _relay(inst: ExecInstance, pid_file: Path, detach: bool) -> None:
    """Relay the process's output until it exits; whatever happens, readers learn the end."""
    try:
        await _relay_output(inst, pid_file, detach)
    except BaseException:
        log.exception("exec %s: relaying its output failed", inst.id[:12])
        inst.running = False
        if inst.exit_code is None:
            inst.exit_code = 126
        with contextlib.suppress(asyncio.QueueFull):
            inst.output.put_nowait(None)
        inst.done.set()
        raise


async def _relay_output(inst: ExecInstance, pid_file: Path, detach: bool) -> None:
    proc = inst.process
    assert proc is not None
    loop = asyncio.get_running_loop()
    readers: list[asyncio.Task[Any]] = []
    stderr_text = bytearray()

    async def pump(stream: asyncio.StreamReader, kind: int, keep: bool) -> None:
        while chunk := await stream.read(_READ):
            if kind == STDERR and not inst.pid and chunk.startswith(b'time="') and (
                    b"level=error" in chunk):
                stderr_text.extend(chunk[:4096])  # the runtime's own error, not the process's
            elif keep:
                await inst.output.put((kind, chunk))

    if proc.stdout is not None:
        readers.append(loop.create_task(pump(proc.stdout, STDOUT, inst.attach_stdout)))
    if proc.stderr is not None:
        keep_err = inst.attach_stderr and not detach and not inst.tty
        readers.append(loop.create_task(pump(proc.stderr, STDERR, keep_err)))
    if inst.pty_master >= 0:
        readers.append(loop.create_task(_pump_master(inst, keep=not detach)))
    with contextlib.suppress(OSError, ValueError):
        inst.pid = int(await asyncio.to_thread(_read_pid, pid_file))
    returncode = await proc.wait()
    for reader in readers:
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    if inst.pty_master >= 0:
        os.close(inst.pty_master)
        inst.pty_master = -1
    if returncode and stderr_text:
        # The runtime failed before the process ran (no such executable, ...): Docker
        # reports it in-band on stdout and gives exit code 126.
        message = runtime_message(stderr_text.decode(errors="replace"))
        if not detach:
            with contextlib.suppress(asyncio.QueueFull):
                inst.output.put_nowait(
                    (STDOUT, f"OCI runtime exec failed: {message}: unknown\r\n".encode()))
        returncode = 126
    inst.exit_code = exit_status(returncode)
    inst.running = False
    await asyncio.to_thread(pid_file.unlink, True)
    await inst.output.put(None)
    inst.done.set()


async def _pump_master(inst: ExecInstance, keep: bool) -> None:
    loop = asyncio.get_running_loop()
    readable = asyncio.Event()
    fd = inst.pty_master
    loop.add_reader(fd, readable.set)
    try:
        while True:
            await readable.wait()
            readable.clear()
            try:
                data = os.read(fd, _READ)
            except BlockingIOError:
                continue
            except OSError:
                return  # EIO: the last process on the terminal has exited
            if not data:
                return
            if keep:
                await inst.output.put((STDOUT, data))
    finally:
        loop.remove_reader(fd)


def _read_pid(path: Path) -> str:
    for _ in range(100):
        with contextlib.suppress(FileNotFoundError):
            text = path.read_text().strip()
            if text:
                return text
        time.sleep(0.002)
    raise FileNotFoundError(path)


async def drain(inst: ExecInstance) -> None:
    """Discard a detached exec's output until it ends (a full queue would stall it)."""
    while await inst.output.get() is not None:
        pass


def kill(inst: ExecInstance, sig: int = signal.SIGKILL) -> None:
    if inst.process is not None and inst.running:
        with contextlib.suppress(ProcessLookupError):
            inst.process.send_signal(sig)


def load_spec(config: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(config.read_text())
    return result
