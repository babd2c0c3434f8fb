"""A real stowd daemon for tests: its own socket, data-root, exec-root and cgroup parent.

Each instance lives in a fresh directory under /tmp and leaves nothing behind when
stopped with `cleanup()`: no containers, conmon processes, mounts or cgroups.
"""

import contextlib
import io
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import docker

from stowd.engine.seed import busybox_binary, busybox_rootfs_tar

REPO = Path(__file__).resolve().parent.parent
# Where test daemons reach docker.io (STOWD_HUB_HOST): a port nothing listens on.
CLOSED_HUB = "127.0.0.1:9"


class Daemon:
    # Benchmarks turn this off: the checks wrap every I/O call and would skew timings.
    watch_blocking = True

    def __init__(self, extra_args: list[str] | None = None, hosts: list[str] | None = None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="stowd-t-", dir="/tmp"))
        self.socket = self.root / "s.sock"
        self.data_root = self.root / "data"
        self.exec_root = self.root / "exec"
        self.cgroup_parent = f"stowd-test-{secrets.token_hex(4)}"
        # Networking of its own, beside other daemons and dockerd: bridge, subnet, chains.
        self.bridge, self.bridge_subnet, self.chain_prefix, self.address_pool = test_network()
        self.extra_args = extra_args or []
        self.hosts = hosts
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.root / "stowd.log"
        self.blocking_calls: list[str] = []
        # The daemon's working directory (under systemd it is /): nothing may land there.
        self.cwd = REPO
        self.env: dict[str, str] = {}  # more environment (STOWD_FAULT in crash tests)

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def command(self) -> list[str]:
        hosts = self.hosts or [self.url]
        args = [sys.executable, "-m", "stowd", "serve", "--data-root", str(self.data_root),
                "--exec-root", str(self.exec_root), "--cgroup-parent", self.cgroup_parent,
                "--log-level", "debug", "--bridge", self.bridge,
                "--bridge-subnet", self.bridge_subnet, "--chain-prefix", self.chain_prefix,
                "--default-address-pool", self.address_pool]
        for h in hosts:
            args += ["-H", h]
        return args + self.extra_args

    def start(self, wait: bool = True) -> "Daemon":
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        # STOWD_BLOCKBUSTER: any blocking call stowd makes on its event loop raises, and the
        # test that caused it fails (ARCHITECTURE.md: blocking work never runs on the loop).
        # STOWD_HUB_HOST: docker.io is a closed local port unless a test gives it a registry
        # of its own, so nothing a test does can reach Docker Hub.
        env = dict(os.environ, PYTHONPATH=str(REPO),
                   STOWD_BLOCKBUSTER="1" if self.watch_blocking else "0")
        env.setdefault("STOWD_HUB_HOST", CLOSED_HUB)
        env.update(self.env)
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                     env=env, cwd=str(self.cwd))
        log.close()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"stowd exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(OSError):
                s = socket.socket(socket.AF_UNIX)
                s.connect(str(self.socket))
                s.close()
                return
            time.sleep(0.05)
        raise RuntimeError(f"stowd did not come up:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-8000:]
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def kill9(self) -> None:
        self.stop(signal.SIGKILL)

    def client(self, version: str = "auto") -> docker.DockerClient:
        return docker.DockerClient(base_url=self.url, version=version, timeout=60)

    def import_busybox(self, name: str = "busybox:latest") -> str:
        binary = busybox_binary()
        assert binary, "busybox-static must be installed"
        buf = io.BytesIO()
        busybox_rootfs_tar(binary, buf)
        api = docker.APIClient(base_url=self.url)
        repo, _, tag = name.partition(":")
        out = api.import_image_from_data(buf.getvalue(), repository=repo, tag=tag or "latest")
        api.close()
        return str(out)

    def cleanup(self) -> None:
        """Remove every container through the API, stop the daemon, and check the host."""
        if self.proc is not None:
            with contextlib.suppress(Exception):
                c = self.client()
                for ctr in c.containers.list(all=True):
                    with contextlib.suppress(Exception):
                        ctr.remove(force=True)
                c.close()
            self.stop()
        leftovers = leftover_conmons(self.data_root)
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for line in reversed(Path("/proc/self/mounts").read_text().splitlines()):
            target = line.split()[1]
            if target.startswith(str(self.root)):
                subprocess.run(["umount", "-l", target], check=False)
        remove_cgroups(self.cgroup_parent)
        remove_network_leftovers(self)
        self.blocking_calls = blocking_calls(self.log_path)
        shutil.rmtree(self.root, ignore_errors=True)


def blocking_calls(log_path: Path) -> list[str]:
    """The BlockingErrors a daemon logged (blocking calls on its event loop), with the
    stowd frame that made each."""
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    found = []
    last_stowd_frame = ""
    for line in lines:
        if 'File "' in line and "/stowd/" in line:
            last_stowd_frame = line.strip()
        if "BlockingError:" in line:
            found.append(f"{line.strip()} at {last_stowd_frame}")
    return found


def leftover_conmons(data_root: Path) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes()
            if cmdline.startswith(b"conmon") or b"/conmon\0" in cmdline:
                if str(data_root).encode() in cmdline:
                    pids.append(int(entry.name))
    return pids


def remove_cgroups(parent: str) -> None:
    base = Path("/sys/fs/cgroup")
    for ctrl in [base] + [p for p in base.iterdir() if p.is_dir()]:
        target = ctrl / parent
        if target.is_dir():
            for child in sorted(target.rglob("*"), reverse=True):
                if child.is_dir():
                    with contextlib.suppress(OSError):
                        child.rmdir()
            with contextlib.suppress(OSError):
                target.rmdir()


def test_network() -> tuple[str, str, str, str]:
    """A bridge name, a /24 no route of the host uses, a chain prefix and an address pool."""
    tag = secrets.token_hex(4)
    routes = subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True,
                            text=True, check=False).stdout
    used = [ipaddress.ip_network(line.split()[0], strict=False) for line in routes.splitlines()
            if line[:1].isdigit()]
    while True:
        subnet = f"10.{secrets.choice(range(240, 256))}.{secrets.randbelow(256)}.0/24"
        if not any(ipaddress.ip_network(subnet).overlaps(u) for u in used):
            break
    pool = f"base=10.{secrets.choice(range(224, 240))}.0.0/16,size=24"
    return f"stt{tag}", subnet, f"STT{tag[:5].upper()}", pool


def _bridges(d: Daemon) -> list[str]:
    """The default bridge and those of the daemon's user networks (from its database)."""
    bridges = [d.bridge]
    if (d.data_root / "stowd.db").exists():
        with contextlib.suppress(sqlite3.Error):
            db = sqlite3.connect(d.data_root / "stowd.db")
            try:
                bridges += [json.loads(body).get("bridge") or "" for (body,) in
                            db.execute("SELECT body FROM networks")]
            finally:
                db.close()
    return [b for b in bridges if b]


def network_leftovers(d: Daemon) -> list[str]:
    """What a stopped daemon left of its networking: bridges, iptables and ip6tables chains,
    namespaces."""
    found = [f"bridge {b}" for b in _bridges(d) if os.path.exists(f"/sys/class/net/{b}")]
    for cmd in ("iptables", "ip6tables"):
        for table in ("filter", "nat"):
            rules = subprocess.run([cmd, "-w", "-t", table, "-S"], capture_output=True,
                                   text=True, check=False).stdout
            found += [f"{cmd} {table}: {r}" for r in rules.splitlines()
                      if d.chain_prefix + "-" in r]
    netns = d.exec_root / "netns"
    if netns.is_dir():
        found += [f"netns {p}" for p in netns.iterdir()]
    return found


def remove_network_leftovers(d: Daemon) -> None:
    """Safety net after a daemon that could not clean up (killed): same steps as stowd's."""
    for bridge in _bridges(d):
        if os.path.exists(f"/sys/class/net/{bridge}"):
            subprocess.run(["ip", "link", "del", bridge], capture_output=True, check=False)
    for cmd, table in [(c, t) for c in ("iptables", "ip6tables") for t in ("filter", "nat")]:
        rules = subprocess.run([cmd, "-w", "-t", table, "-S"], capture_output=True,
                               text=True, check=False).stdout.splitlines()
        ours = [r for r in rules if d.chain_prefix + "-" in r]
        lines = ["-D" + r[2:] for r in ours if r.startswith("-A ")
                 and not r.split()[1].startswith(d.chain_prefix)]
        chains = [r.split()[1] for r in ours if r.startswith("-N ")]
        lines += [f"-F {c}" for c in chains] + [f"-X {c}" for c in chains]
        if lines:
            subprocess.run([f"{cmd}-restore", "-w", "--noflush"], capture_output=True,
                           input=f"*{table}\n" + "\n".join(lines) + "\nCOMMIT\n", text=True,
                           check=False)
