#!/usr/bin/env python3
"""Healthcheck cost: N containers probed every second, CPU of the engine while it probes.

    .venv/bin/python bench/health.py [--n 50] [--seconds 30] [--no-dockerd] [--out x.json]

Starts its own stowd (tests/daemon.py, without the blocking-call checks), runs N busybox
containers with `HEALTHCHECK --interval=1s CMD true`, waits until all are healthy, then
reads /proc for `--seconds`: the CPU time of the engine's own process, of the children it
reaped (the runtime's `exec` per probe), and how many probes ended. The same is then done
against dockerd on /var/run/docker.sock (dockerd's process; containerd; the containers'
shims, which run the runtime for each exec). CPU is in % of one core. Containers are
labelled `bench.harness=1` and removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import docker

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.daemon import Daemon  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
DOCKERD_HOST = "unix:///var/run/docker.sock"
SECOND = 1_000_000_000


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cpu_ticks(pid: int) -> tuple[int, int]:
    """(own utime+stime, reaped children's cutime+cstime) in clock ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])


def pids_named(name: str) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == name:
                    out.append(int(entry.name))
    return out


def shim_pids(container_ids: set[str]) -> list[int]:
    """containerd-shim-runc-v2 processes serving these containers (their -id argument)."""
    out = []
    for pid in pids_named("containerd-shim"):
        with contextlib.suppress(OSError):
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if any(a.decode() in container_ids for a in args):
                out.append(pid)
    return out


def symlinked_busybox_tar() -> bytes:
    """busybox with its applets as symlinks: dockerd's import gives hard-linked entries
    the mode of the link entry, which leaves the binary non-executable."""
    import io
    import shutil
    import subprocess
    import tarfile

    binary = shutil.which("busybox")
    assert binary, "busybox-static must be installed"
    applets = subprocess.run([binary, "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("bin", "etc", "tmp", "root", "usr", "usr/bin", "var"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        tar.add(binary, "bin/busybox")
        for name in applets:
            if name != "busybox":
                link = tarfile.TarInfo(f"bin/{name}")
                link.type, link.linkname, link.mode = tarfile.SYMTYPE, "busybox", 0o777
                tar.addfile(link)
    return buf.getvalue()


def run_containers(client: docker.DockerClient, image: str, n: int, run_id: str) -> list[Any]:
    hc = {"Test": ["CMD", "true"], "Interval": SECOND, "Timeout": 5 * SECOND}
    out = []
    for i in range(n):
        out.append(client.containers.run(
            image, ["sleep", "100000"], detach=True, healthcheck=hc, name=f"hb-{run_id}-{i}",
            labels={"bench.harness": "1", "bench.run": run_id}))
    return out


def wait_healthy(client: docker.DockerClient, run_id: str, n: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        healthy = client.containers.list(filters={"label": f"bench.run={run_id}",
                                                  "health": "healthy"})
        if len(healthy) == n:
            return
        time.sleep(0.5)
    raise RuntimeError("containers did not all become healthy")


class ProbeCounter:
    """Counts exec_die events live (the engines replay only a bounded event history)."""

    def __init__(self, client: docker.DockerClient, run_id: str) -> None:
        self.count = 0
        self.counting = False
        self._stream = client.events(decode=True, filters={"label": f"bench.run={run_id}",
                                                           "event": "exec_die"})
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with contextlib.suppress(Exception):
            for _ in self._stream:
                if self.counting:
                    self.count += 1

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._stream.close()


def measure(client: docker.DockerClient, groups: dict[str, list[int]], run_id: str,
            seconds: float) -> dict[str, Any]:
    counter = ProbeCounter(client, run_id)
    time.sleep(1)  # the event stream is open
    before = {k: [cpu_ticks(p) for p in pids] for k, pids in groups.items()}
    t0 = time.monotonic()
    counter.counting = True
    time.sleep(seconds)
    counter.counting = False
    after = {k: [cpu_ticks(p) for p in pids] for k, pids in groups.items()}
    elapsed = time.monotonic() - t0
    counter.close()
    probes = counter.count
    out: dict[str, Any] = {"seconds": round(elapsed, 2), "probes": probes,
                           "probes_per_s": round(probes / elapsed, 1)}
    for key in groups:
        own = sum(a[0] - b[0] for a, b in zip(after[key], before[key], strict=True))
        kids = sum(a[1] - b[1] for a, b in zip(after[key], before[key], strict=True))
        out[key] = {"own_pct": round(100 * own / CLK_TCK / elapsed, 1),
                    "children_pct": round(100 * kids / CLK_TCK / elapsed, 1),
                    "own_ms_per_probe": round(1000 * own / CLK_TCK / max(probes, 1), 2)}
    out["loadavg"] = Path("/proc/loadavg").read_text().split()[:3]
    return out


def bench_stowd(n: int, seconds: float) -> dict[str, Any]:
    Daemon.watch_blocking = False
    d = Daemon().start()
    try:
        d.import_busybox()
        client = d.client()
        run_id = uuid.uuid4().hex[:8]
        log(f"stowd: starting {n} containers")
        run_containers(client, "busybox", n, run_id)
        wait_healthy(client, run_id, n)
        assert d.proc is not None
        conmons = [p for p in pids_named("conmon")
                   if str(d.data_root) in Path(f"/proc/{p}/cmdline").read_text(errors="ignore")]
        log(f"stowd: measuring {seconds}s")
        result = measure(client, {"stowd": [d.proc.pid], "conmon": conmons}, run_id, seconds)
        client.close()
        return result
    finally:
        d.cleanup()


def bench_dockerd(n: int, seconds: float) -> dict[str, Any] | None:
    client = docker.DockerClient(base_url=DOCKERD_HOST)
    try:
        client.ping()
    except Exception:
        log("dockerd: not answering, skipped")
        return None
    image = "stowd-health-bench-busybox:latest"
    if not client.images.list(name=image):
        client.api.import_image_from_data(
            symlinked_busybox_tar(), repository=image.split(":")[0], tag="latest",
            changes=["ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin"])
    run_id = uuid.uuid4().hex[:8]
    try:
        log(f"dockerd: starting {n} containers")
        ctrs = run_containers(client, image, n, run_id)
        wait_healthy(client, run_id, n)
        groups = {"dockerd": pids_named("dockerd"), "containerd": pids_named("containerd"),
                  "shims": shim_pids({c.id for c in ctrs})}
        log(f"dockerd: measuring {seconds}s")
        return measure(client, groups, run_id, seconds)
    finally:
        for c in client.containers.list(all=True, filters={"label": f"bench.run={run_id}"}):
            with contextlib.suppress(Exception):
                c.remove(force=True)
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--no-dockerd", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results: dict[str, Any] = {"n": args.n, "stowd": bench_stowd(args.n, args.seconds)}
    log(json.dumps(results["stowd"]))
    if not args.no_dockerd:
        results["dockerd"] = bench_dockerd(args.n, args.seconds)
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
