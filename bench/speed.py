#!/usr/bin/env python3
"""Where dockerd used to be ahead: request rates, reading logs, idle cost per container.

    .venv/bin/python bench/speed.py [--out bench/results/speed.json] [--repeat 3]
    .venv/bin/python bench/speed.py --sections logs,idle --idle-containers 100 --no-dockerd

Starts its own stowd (bench/lifecycle.py's harness), then measures dockerd on
/var/run/docker.sock the same way, one engine after the other, `--repeat` times in
alternation; the table gives the median of the repeats for each engine.

- rate: `/_ping` and `GET /containers/json?all=1` (with `--list-containers` of ours created)
  with one and 8 clients, through the shared harness's `rate_test` (`--shared-bench`: client
  processes of their own, keep-alive connections), and the engine's CPU per request.
- logs: a container writes `--log-mb` MB of `--line-bytes` lines (`yes … | head -c`; the
  default 65 does not divide conmon's 8 KB reads, so conmon cuts a line into two pieces
  every 8 KB as it does with real output; 64 never gets cut);
  `logs.ingest` is start → exit with nobody reading; then `GET /logs` of that log read to the
  end, plain, with timestamps, `tail` of half the lines and `since` the middle (MB of log
  per second), with the engine's CPU per read; then the same writer while a
  `GET /logs?follow=1` client reads along: `logs.follow.writer` (start → exit) against
  `logs.ingest`, and whether the follower got every byte.
- idle: `--idle-containers` containers running `sleep` with `--log-opt max-size=10m
  --log-opt max-file=3`, then the engine's CPU (% of one core) over `--idle-seconds`: the
  daemon process, and its helpers (conmon for stowd; containerd and the shims for dockerd).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import platform
import socket
import statistics
import sys
import tarfile
import threading
import time
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

BENCH = Path(__file__).resolve().parent
if str(BENCH.parent) not in sys.path:
    sys.path.insert(0, str(BENCH.parent))

from bench.lifecycle import (  # noqa: E402 - after the path fix above
    DOCKERD_HOST,
    HARNESS_LABEL,
    RUN_LABEL,
    Api,
    busy_frac,
    busy_jiffies,
    fmt,
    log,
    own_stowd,
    wait_quiet,
)

MB = 1_000_000
SECTIONS = ("rate", "logs", "idle")
DOCKERD_IMAGE = "stowd-speed-busybox:latest"
TICK = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pids: list[int]) -> int:
    """utime+stime of these processes (all threads), 0 for one that is gone."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total


def pids_named(*names: str) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() in names:
                    out.append(int(entry.name))
    return out


def children_named(parent_root: str, name: str) -> list[int]:
    """conmons of one stowd: their command line names its exec-root."""
    out = []
    for pid in pids_named(name):
        with contextlib.suppress(OSError):
            if parent_root in Path(f"/proc/{pid}/cmdline").read_text():
                out.append(pid)
    return out


def stream_get(host: str, path: str) -> int:
    """GET path over a fresh connection, reading the body to the end; the bytes received
    (raw socket: no client-side parsing to slow the read down)."""
    s = socket.socket(socket.AF_UNIX)
    s.connect(host.removeprefix("unix://"))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n".encode())
    n = 0
    buf = bytearray(1 << 20)
    while True:
        got = s.recv_into(buf)
        if not got:
            break
        n += got
    s.close()
    return n


class Engine:
    def __init__(self, label: str, host: str, a: argparse.Namespace, daemon_pids: list[int],
                 helpers: Any) -> None:
        self.label, self.host, self.a = label, host, a
        self.api = Api(host, a.api_version)
        self.image = a.image
        self.daemon_pids = daemon_pids
        self.helpers = helpers  # () -> pids of the helper processes now
        self.run_id = uuid.uuid4().hex[:12]
        self.samples: dict[str, list[float]] = {}

    def add(self, metric: str, value: float) -> None:
        self.samples.setdefault(metric, []).append(value)
        log(f"  [{self.label}] {metric:<34} {fmt(value)}")

    def create(self, cmd: list[str], host_config: dict[str, Any] | None = None) -> str:
        body = {"Image": self.image, "Cmd": cmd,
                "Labels": {HARNESS_LABEL: "1", RUN_LABEL: self.run_id},
                "HostConfig": host_config or {}}
        return str(self.api.json("POST", "/containers/create", body)["Id"])

    def remove(self, cid: str) -> None:
        self.api.call("DELETE", f"/containers/{cid}", params={"force": "1"})

    def cleanup(self) -> None:
        flt = json.dumps({"label": [f"{RUN_LABEL}={self.run_id}"]})
        for c in self.api.json("GET", "/containers/json",
                               params={"all": "1", "filters": flt}) or []:
            with contextlib.suppress(Exception):
                self.remove(c["Id"])

    # -- rate -------------------------------------------------------------------------------
    def rate(self, shared: ModuleType) -> None:
        api_args = (self.host, self.a.api_version, 30.0)
        # Something to list: --list-containers of ours (dockerd also lists others').
        for _ in range(self.a.list_containers):
            self.create(["true"])
        self.add("rate.containers_listed",
                 len(self.api.json("GET", "/containers/json", params={"all": "1"})))
        for name, path, versioned in (("ping", "/_ping", False),
                                      ("list_all", "/containers/json?all=1", True)):
            for clients in (1, 8):
                r = shared.rate_test(api_args, path, versioned, clients, self.a.rate_seconds,
                                     self.daemon_pids)
                tag = f"rate.{name}.{'seq' if clients == 1 else 'c8'}"
                self.add(tag, statistics.median(r["per_second"]))
                if r["daemon_cpu_us_per_req"]:
                    self.add(f"{tag}.engine_cpu_us", r["daemon_cpu_us_per_req"])

    # -- logs -------------------------------------------------------------------------------
    def logs(self) -> None:
        size = self.a.log_mb * MB
        width = self.a.line_bytes
        line = ("0123456789abcdef" * (width // 16 + 1))[:width - 1]  # `yes` adds the newline
        cmd = ["sh", "-c", f"yes {line} | head -c {size}"]
        messages = -(-size // width)  # the last line may be cut short by `head`
        framed = size + 8 * messages  # what a reader of both streams gets
        cid = self.create(cmd)
        t0 = time.perf_counter()
        self.api.call("POST", f"/containers/{cid}/start")
        self.api.json("POST", f"/containers/{cid}/wait")
        self.add("logs.ingest", self.a.log_mb / (time.perf_counter() - t0))
        v = self.api.prefix
        half = str(messages // 2)
        info = self.api.json("GET", f"/containers/{cid}/json")
        started = info["State"]["StartedAt"]
        middle = _unix(started) + (_unix(info["State"]["FinishedAt"]) - _unix(started)) / 2
        for tag, query, mbytes in (
                ("plain", "", self.a.log_mb), ("timestamps", "&timestamps=1", self.a.log_mb),
                ("tail_half", f"&tail={half}", self.a.log_mb / 2),
                ("since_middle", f"&since={middle:.9f}", 0)):
            before = cpu_ticks(self.daemon_pids)
            t0 = time.perf_counter()
            got = stream_get(self.host, f"{v}/containers/{cid}/logs?stdout=1&stderr=1{query}")
            dt = time.perf_counter() - t0
            cpu = (cpu_ticks(self.daemon_pids) - before) / TICK
            shown = mbytes or got / MB * width / (width + 8)  # since: the lines it answered
            self.add(f"logs.read.{tag}", shown / dt)
            self.add(f"logs.read.{tag}.engine_cpu_s", cpu)
        self.remove(cid)
        # The same writer, followed.
        cid = self.create(cmd)
        got: list[int] = []
        reader = threading.Thread(target=lambda: got.append(stream_get(
            self.host, f"{v}/containers/{cid}/logs?stdout=1&stderr=1&follow=1")))
        before = cpu_ticks(self.daemon_pids)
        t0 = time.perf_counter()
        self.api.call("POST", f"/containers/{cid}/start")
        reader.start()
        self.api.json("POST", f"/containers/{cid}/wait")
        writer = time.perf_counter() - t0
        reader.join(120)
        self.add("logs.follow.writer", self.a.log_mb / writer)
        self.add("logs.follow.complete", (got[0] if got else 0) / framed)
        self.add("logs.follow.engine_cpu_s", (cpu_ticks(self.daemon_pids) - before) / TICK)
        self.remove(cid)

    # -- idle -------------------------------------------------------------------------------
    def idle(self) -> None:
        hc = {"LogConfig": {"Type": "json-file",
                            "Config": {"max-size": "10m", "max-file": "3"}},
              "NetworkMode": "none"}
        ids = []
        t0 = time.perf_counter()
        for _ in range(self.a.idle_containers):
            cid = self.create(["sleep", "3600"], hc)
            self.api.call("POST", f"/containers/{cid}/start")
            ids.append(cid)
        log(f"  [{self.label}] {len(ids)} containers up in {time.perf_counter() - t0:.0f}s")
        time.sleep(3)  # let start-up work settle
        helpers = self.helpers()
        d0, h0, m0 = cpu_ticks(self.daemon_pids), cpu_ticks(helpers), busy_jiffies()
        time.sleep(self.a.idle_seconds)
        d1, h1, m1 = cpu_ticks(self.daemon_pids), cpu_ticks(helpers), busy_jiffies()
        span = self.a.idle_seconds * TICK
        self.add("idle.daemon_cpu_pct", 100 * (d1 - d0) / span)
        self.add("idle.helpers_cpu_pct", 100 * (h1 - h0) / span)
        self.add("idle.machine_busy_pct", 100 * (busy_frac(m0, m1) or 0))
        for cid in ids:
            with contextlib.suppress(Exception):
                self.remove(cid)


def _unix(text: str) -> float:
    from stowd.engine.core.container import parse_time

    return parse_time(text)


def _has_image(host: str, image: str) -> bool:
    try:
        Api(host).call("GET", f"/images/{image}/json")
        return True
    except Exception:
        return False


def dockerd_ready(dargs: argparse.Namespace, image: str, had_image: bool) -> str | None:
    """None when dockerd answers and has `image` (imported from the busybox-static rootfs
    stowd seeds itself with, when it had none), else why dockerd is skipped."""
    api = Api(dargs.dockerd_host)
    if not api.ping():
        return f"no dockerd answers /_ping on {dargs.dockerd_host}"
    if had_image:
        return None
    from stowd.engine.seed import busybox_binary, busybox_rootfs_tar

    binary = busybox_binary()
    if binary is None:
        return f"dockerd has no {image} and there is no busybox-static to import"
    raw = io.BytesIO()
    busybox_rootfs_tar(binary, raw)
    raw.seek(0)
    # Docker's extraction gives a hard-linked file its link's mode, and the rootfs's links
    # carry tarfile's default 0644 (stowd ignores it): busybox would not be executable.
    fixed = io.BytesIO()
    with tarfile.open(fileobj=raw) as src, tarfile.open(fileobj=fixed, mode="w") as dst:
        for member in src:
            if member.islnk():
                member.mode = 0o755
            dst.addfile(member, src.extractfile(member) if member.isfile() else None)
    repo, _, tag = image.partition(":")
    try:
        api.call("POST", "/images/create", raw=fixed.getvalue(),
                 content_type="application/x-tar",
                 params={"fromSrc": "-", "repo": repo, "tag": tag or "latest"})
    except Exception as exc:  # any failure means: measure stowd alone
        return f"importing busybox into dockerd as {image} failed: {exc}"
    return None


def _remove_image(host: str, image: str) -> None:
    with contextlib.suppress(Exception):
        Api(host).call("DELETE", f"/images/{image}")


def load_shared(path: str) -> ModuleType | None:
    if not Path(path).exists():
        return None
    spec = importlib.util.spec_from_file_location("shared_bench", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def measure(engine: Engine, sections: list[str], a: argparse.Namespace,
            shared: ModuleType | None, meta: dict[str, Any]) -> None:
    for section in sections:
        waited, busy = wait_quiet(a.quiet_threshold, a.quiet_max_wait)
        meta.setdefault(engine.label, []).append(
            {"section": section, "quiet_wait_s": waited, "busy_before": busy})
        log(f"[{engine.label}] {section} (busy before {busy})")
        try:
            if section == "rate":
                if shared is None:
                    log(f"  no shared harness at {a.shared_bench}: rate skipped")
                    continue
                engine.rate(shared)
            elif section == "logs":
                engine.logs()
            elif section == "idle":
                engine.idle()
        finally:
            engine.cleanup()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", help="write every sample here (JSON)")
    p.add_argument("--sections", default=",".join(SECTIONS))
    p.add_argument("--repeat", type=int, default=3, help="rounds, engines alternating")
    p.add_argument("--rate-seconds", type=float, default=3.0)
    p.add_argument("--list-containers", type=int, default=10,
                   help="containers created before the rate section, to list")
    p.add_argument("--log-mb", type=int, default=50)
    p.add_argument("--line-bytes", type=int, default=65)
    p.add_argument("--idle-containers", type=int, default=500)
    p.add_argument("--idle-seconds", type=float, default=20.0)
    p.add_argument("--shared-bench", default="/work/shared/bench/bench.py",
                   help="the shared harness, for its rate_test")
    p.add_argument("--image", default="busybox")
    p.add_argument("--api-version", default="1.41")
    p.add_argument("--dockerd-host", default=DOCKERD_HOST)
    p.add_argument("--no-dockerd", action="store_true")
    p.add_argument("--dockerd-image", help="an image with busybox's sh, yes and head already "
                   "in dockerd (default: stowd's busybox-static rootfs, imported into "
                   "dockerd as " + DOCKERD_IMAGE + " and removed at the end)")
    p.add_argument("--tmp-dir", default="/tmp")
    p.add_argument("--daemon-log-level", default="warning")
    p.add_argument("--quiet-threshold", type=float, default=0.2)
    p.add_argument("--quiet-max-wait", type=float, default=30.0)
    a = p.parse_args(argv)
    a.sections = [s for s in a.sections.split(",") if s]
    a.no_trace = True
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    shared = load_shared(a.shared_bench) if "rate" in a.sections else None
    meta: dict[str, Any] = {}
    engines: list[Engine] = []
    with contextlib.ExitStack() as stack:
        url, pid, _ = stack.enter_context(own_stowd(a))
        exec_root = str(Path(url.removeprefix("unix://")).parent / "exec")
        engines.append(Engine("stowd", url, a, [pid],
                              lambda: children_named(exec_root, "conmon")))
        # dockerd gets the busybox-static rootfs stowd runs, imported under a name of its
        # own (what others left as "busybox" in the shared dockerd may be anything),
        # removed at the end.
        image = a.dockerd_image or DOCKERD_IMAGE
        dargs = argparse.Namespace(**{**vars(a), "image": image})
        had_image = _has_image(a.dockerd_host, image)
        reason = None
        if not a.no_dockerd:
            reason = dockerd_ready(dargs, image, had_image)
        if not a.no_dockerd and reason is None:
            if not had_image:
                stack.callback(_remove_image, a.dockerd_host, image)
            engines.append(Engine("dockerd", a.dockerd_host, a, pids_named("dockerd"),
                                  lambda: pids_named("containerd", "containerd-shim",
                                                     "containerd-shim-runc-v2")))
            engines[-1].image = image
        if reason:
            log(f"dockerd skipped: {reason}")
        for _ in range(a.repeat):
            for engine in engines:
                measure(engine, a.sections, a, shared, meta)
    rows = sorted({m for e in engines for m in e.samples}, key=_order)
    lines = ["| metric | " + " | ".join(e.label for e in engines) + " |",
             "|---|" + "---:|" * len(engines)]
    for m in rows:
        cells = []
        for e in engines:
            xs = e.samples.get(m, [])
            cells.append(f"{fmt(statistics.median(xs))} ({fmt(min(xs))}–{fmt(max(xs))})"
                         if xs else "–")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    print("\n".join(lines))
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps({
            "machine": {"kernel": platform.release(), "cpus": os.cpu_count()},
            "samples": {e.label: e.samples for e in engines}, "meta": meta}, indent=1))
    return 0


def _order(metric: str) -> tuple[int, str]:
    return (SECTIONS.index(metric.split(".")[0]) if metric.split(".")[0] in SECTIONS
            else 9, metric)


if __name__ == "__main__":
    sys.exit(main())
