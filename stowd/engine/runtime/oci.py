"""The OCI runtime (runc or crun) driven through conmon.

conmon, not stowd, is each container's parent: it double-forks away from stowd, runs
`<runtime> create`, keeps the container's stdio, writes its log (k8s-file) and, when the
container dies, its exit code to `<exit-dir>/<id>`. So containers outlive stowd, and an
exit that happens while stowd is down is still on disk when it comes back.

Everything here blocks (fork/exec, pipes, files): call it from a worker thread.
"""

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from stowd.engine.errors import SystemError_


@dataclass(frozen=True)
class ExitRecord:
    code: int
    finished_at: float  # unix seconds, from the exit file's mtime


class RuntimeError_(SystemError_):
    pass


class OciRuntime:
    def __init__(self, runtime: str, exec_root: Path, conmon: str = "conmon") -> None:
        path = shutil.which(runtime)
        if path is None:
            raise RuntimeError_(
                f"OCI runtime {runtime!r} not found on PATH: install it (apt-get install {runtime})"
            )
        conmon_path = shutil.which(conmon)
        if conmon_path is None:
            raise RuntimeError_("conmon not found on PATH: install it (apt-get install conmon)")
        self.name = os.path.basename(runtime)
        self.path = path
        self.conmon = conmon_path
        self.root = exec_root / "runtime"
        self.exit_dir = exec_root / "exits"
        self.conmon_dir = exec_root / "conmon"
        self.socket_dir = exec_root / "sockets"
        for d in (self.root, self.exit_dir, self.conmon_dir, self.socket_dir):
            d.mkdir(parents=True, exist_ok=True)

    # paths ------------------------------------------------------------------------------

    def exit_file(self, cid: str) -> Path:
        return self.exit_dir / cid

    def conmon_pidfile(self, cid: str) -> Path:
        return self.conmon_dir / f"{cid}.conmon.pid"

    def container_pidfile(self, cid: str) -> Path:
        return self.conmon_dir / f"{cid}.pid"

    def attach_socket(self, cid: str) -> Path:
        return self.socket_dir / cid / "attach"

    def ctl_fifo(self, cid: str) -> Path:
        return self.conmon_dir / cid / "ctl"

    # lifecycle --------------------------------------------------------------------------

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        proc = subprocess.run(
            [self.path, f"--root={self.root}", *args], capture_output=True, check=False
        )
        if check and proc.returncode != 0:
            msg = proc.stderr.decode(errors="replace").strip() or f"exit status {proc.returncode}"
            raise RuntimeError_(f"{self.name} {args[0]}: {runtime_message(msg)}")
        return proc

    def create(
        self,
        cid: str,
        name: str,
        bundle: Path,
        log_path: Path,
        *,
        tty: bool,
        open_stdin: bool,
        stdin_once: bool,
        log_size_max: int = 0,
    ) -> tuple[int, int]:
        """Start conmon, which runs `<runtime> create`. Returns (container pid, conmon pid)."""
        for stale in (self.exit_file(cid), self.conmon_pidfile(cid), self.container_pidfile(cid)):
            stale.unlink(missing_ok=True)
        persist = self.conmon_dir / cid
        persist.mkdir(parents=True, exist_ok=True)
        args = [
            self.conmon,
            "--api-version", "1",
            "-c", cid,
            "-u", cid,
            "-n", name,
            "-r", self.path,
            "-b", str(bundle),
            "-p", str(self.container_pidfile(cid)),
            "-P", str(self.conmon_pidfile(cid)),
            "-l", f"k8s-file:{log_path}",
            "--exit-dir", str(self.exit_dir),
            "--socket-dir-path", str(self.socket_dir),
            "--persist-dir", str(persist),
            "--runtime-arg", f"--root={self.root}",
            "--log-level", "error",
        ]
        if tty:
            args.append("-t")
        if open_stdin:
            args.append("-i")
            if not stdin_once:
                args.append("--leave-stdin-open")
        if log_size_max > 0:
            args += ["--log-size-max", str(log_size_max)]
        sync_r, sync_w = os.pipe()
        try:
            env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
                   "_OCI_SYNCPIPE": str(sync_w)}
            # conmon writes its OOM marker both in --persist-dir and as `oom` in its working
            # directory (CRI-O's bundle): run it in the persist dir, not in stowd's cwd.
            proc = subprocess.Popen(
                args, pass_fds=(sync_w,), env=env, start_new_session=True, cwd=persist,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )
            os.close(sync_w)
            sync_w = -1
            _, err = proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError_(f"conmon failed: {err.decode(errors='replace').strip()}")
            data = b""
            while chunk := os.read(sync_r, 65536):
                data += chunk
                if b"\n" in data:
                    break
        finally:
            os.close(sync_r)
            if sync_w >= 0:
                os.close(sync_w)
        try:
            message = json.loads(data.splitlines()[0]) if data else {}
        except ValueError as exc:
            raise RuntimeError_(f"conmon sent an unreadable reply: {data!r}") from exc
        pid = int(message.get("data", -1))
        if pid <= 0:
            text = message.get("message") or "the runtime failed to create the container"
            self.delete(cid, force=True)
            raise RuntimeError_(runtime_message(str(text)))
        try:
            conmon_pid = int(self.conmon_pidfile(cid).read_text().strip())
        except (OSError, ValueError):
            conmon_pid = 0
        return pid, conmon_pid

    def start(self, cid: str) -> None:
        self._run("start", cid)

    def kill(self, cid: str, signal: int, all_processes: bool = False) -> None:
        args = ["kill"] + (["--all"] if all_processes else []) + [cid, str(signal)]
        self._run(*args)

    def update(self, cid: str, resources: dict[str, object]) -> None:
        """Apply new cgroup limits to a running container (`<runtime> update -r -`)."""
        proc = subprocess.run(
            [self.path, f"--root={self.root}", "update", "--resources", "-", cid],
            input=json.dumps(resources).encode(), capture_output=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError_(
                f"{self.name} update: {runtime_message(proc.stderr.decode(errors='replace'))}")

    def pause(self, cid: str) -> None:
        self._run("pause", cid)

    def resume(self, cid: str) -> None:
        self._run("resume", cid)

    def delete(self, cid: str, force: bool = False) -> None:
        args = ["delete"] + (["--force"] if force else []) + [cid]
        proc = self._run(*args, check=False)
        if proc.returncode != 0:
            text = proc.stderr.decode(errors="replace")
            if "does not exist" not in text and "not exist" not in text:
                raise RuntimeError_(f"{self.name} delete: {runtime_message(text.strip())}")

    def has_task(self, cid: str) -> bool:
        """Whether the runtime keeps state for cid (runc and crun: a directory in --root)."""
        return (self.root / cid).exists()

    def delete_stopped(self, cid: str) -> None:
        """Remove the task of a container whose init has exited.

        What `runc delete` does for a stopped container is remove its cgroups and its state
        directory; doing that here saves a process spawn (~5 ms) on every exit. Anything
        unexpected (a live init, a busy cgroup, another runtime's layout) goes through the
        runtime itself."""
        state_dir = self.root / cid
        try:
            state = json.loads((state_dir / "state.json").read_text())
            pid = int(state.get("init_process_pid") or 0)
            start = int(state.get("init_process_start") or 0)
            if pid and _same_process(pid, start):
                raise ValueError("init still runs")
            for path in sorted(set((state.get("cgroup_paths") or {}).values()), reverse=True):
                _remove_cgroup(path)
            shutil.rmtree(state_dir)
        except FileNotFoundError:
            if state_dir.exists():
                self.delete(cid, force=True)
        except (OSError, ValueError, TypeError):
            self.delete(cid, force=True)

    def state(self, cid: str) -> dict[str, object] | None:
        proc = self._run("state", cid, check=False)
        if proc.returncode != 0:
            return None
        result: dict[str, object] = json.loads(proc.stdout)
        return result

    def pids(self, cid: str) -> list[int]:
        proc = self._run("ps", "--format", "json", cid, check=False)
        if proc.returncode != 0:
            return []
        return [int(p) for p in json.loads(proc.stdout or b"[]") or []]

    def read_exit(self, cid: str) -> ExitRecord | None:
        path = self.exit_file(cid)
        try:
            text = path.read_text().strip()
            mtime = path.stat().st_mtime
        except OSError:
            return None
        try:
            return ExitRecord(int(text), mtime)
        except ValueError:
            return None

    def cleanup_files(self, cid: str) -> None:
        for path in (self.exit_file(cid), self.conmon_pidfile(cid), self.container_pidfile(cid)):
            path.unlink(missing_ok=True)
        shutil.rmtree(self.conmon_dir / cid, ignore_errors=True)
        # conmon makes sockets/<id> a symlink to the bundle (the attach socket's path would
        # not fit in sun_path otherwise); rmtree refuses links, so unlink it.
        _remove_entry(self.socket_dir / cid)

    def conmon_of(self, cid: str) -> int:
        """The PID of cid's conmon if it still runs (from its pidfile), else 0."""
        try:
            pid = int(self.conmon_pidfile(cid).read_text().strip())
        except (OSError, ValueError):
            return 0
        return pid if process_alive(pid, cid) else 0

    def remove_stale(self, known: set[str]) -> list[str]:
        """Remove conmon's files and socket links of containers the database does not know
        (left by a crash between create and remove); the runtime's own state is not touched.
        Returns the IDs cleaned."""
        stale: set[str] = set()
        for task in self.root.iterdir():  # a task with no container: kill it, then forget it
            if task.name not in known:
                stale.add(task.name)
                conmon = self.conmon_of(task.name)
                self.delete(task.name, force=True)
                if conmon > 0:
                    kill_and_wait(conmon)
        for d in (self.socket_dir, self.exit_dir, self.conmon_dir):
            for entry in d.iterdir():
                cid = entry.name.split(".", 1)[0]
                if cid not in known:
                    stale.add(cid)
                    _remove_entry(entry)
        return sorted(stale)


def _remove_entry(path: Path) -> None:
    """Remove a file, symlink or directory tree at path, whichever it is."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def kill_and_wait(pid: int, timeout: float = 5.0) -> None:
    """SIGKILL a process that is not our child and wait until it is gone (blocking)."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return
    try:
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(fd, signal.SIGKILL)
        select.select([fd], [], [], timeout)  # readable once the process has exited
    finally:
        os.close(fd)


def _same_process(pid: int, start_time: int) -> bool:
    """True if pid runs and started at start_time (clock ticks), i.e. was not reused."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != b"Z" and int(fields[19]) == start_time


def _remove_cgroup(path: str) -> None:
    """rmdir a cgroup, giving exiting processes a moment to leave it."""
    for _ in range(50):
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != 16:  # EBUSY: a process is still on its way out
                raise
            time.sleep(0.002)
    os.rmdir(path)


def runtime_message(text: str) -> str:
    """Pull the human part out of runc's logrus-style error lines."""
    for line in reversed(text.splitlines()):
        if 'msg="' in line:
            return line.split('msg="', 1)[1].rsplit('"', 1)[0].replace('\\"', '"')
        if line.strip():
            return line.strip().removeprefix("Error: ").removeprefix("error: ")
    return text


def process_alive(pid: int, expect_in_cmdline: str = "") -> bool:
    """True if pid runs and, when given, its command line names expect_in_cmdline."""
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return False
    if state == b"Z":
        return False
    return not expect_in_cmdline or expect_in_cmdline.encode() in cmdline
