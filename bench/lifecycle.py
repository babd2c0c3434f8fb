#!/usr/bin/env python3
"""Container lifecycle benchmark: stowd, and dockerd beside it when one answers.

    .venv/bin/python bench/lifecycle.py [--out results/x.json] [--n 30] ...
    .venv/bin/python bench/lifecycle.py --host unix:///run/stowd.sock   # a running engine

Without --host it starts its own stowd (tests/daemon.py: fresh socket, data-root,
exec-root and cgroup parent under /tmp), imports busybox, measures, and removes it all.
When /var/run/docker.sock answers /_ping, the same measures run against dockerd after
stowd (one engine at a time). See bench/README.md for what each figure means.

Progress goes to stderr; the table (markdown) to stdout; every sample to --out (JSON).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

HARNESS_LABEL = "bench.harness"
RUN_LABEL = "bench.run"
DOCKERD_HOST = "unix:///var/run/docker.sock"
CLK_TCK = os.sysconf("SC_CLK_TCK")
SECTIONS = ("lifecycle", "list", "cli")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def fmt(x: float | None) -> str:
    if x is None:
        return "-"
    ax = abs(x)
    if ax >= 1000:
        return f"{x:,.0f}"
    if ax >= 100:
        return f"{x:.1f}"
    if ax >= 10:
        return f"{x:.2f}"
    return f"{x:.3f}"


def summarize(samples: list[float], unit: str, note: str = "") -> dict[str, Any]:
    """median, min, max, p90 (nearest rank), mean and the raw samples."""
    out: dict[str, Any] = {"unit": unit, "n": len(samples)}
    if samples:
        s = sorted(samples)
        out.update(median=statistics.median(s), min=s[0], max=s[-1],
                   p90=s[min(len(s) - 1, round(0.9 * (len(s) - 1)))],
                   mean=statistics.fmean(s))
    out["samples"] = [round(x, 4) for x in samples]
    if note:
        out["note"] = note
    return out


# --------------------------------------------------------------------------------------------
# a small Docker API client: HTTP/1.1 on one keep-alive AF_UNIX (or TCP) connection
# --------------------------------------------------------------------------------------------

class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


class APIError(Exception):
    def __init__(self, method: str, url: str, status: int, body: bytes) -> None:
        super().__init__(f"{method} {url} -> {status}: {body[:300]!r}")
        self.status = status


class Api:
    def __init__(self, host: str, api_version: str = "1.41", timeout: float = 300.0) -> None:
        u = urllib.parse.urlparse(host)
        if u.scheme == "unix":
            self.unix_path: str | None = u.path
            self.tcp: tuple[str, int] | None = None
        elif u.scheme in ("tcp", "http"):
            self.unix_path = None
            self.tcp = (u.hostname or "127.0.0.1", u.port or 2375)
        else:
            raise SystemExit(f"unsupported host {host!r}: use unix:///path or tcp://host:port")
        self.host = host
        self.prefix = f"/v{api_version}" if api_version else ""
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def new_conn(self, timeout: float) -> http.client.HTTPConnection:
        if self.unix_path:
            return UnixHTTPConnection(self.unix_path, timeout)
        assert self.tcp is not None
        return http.client.HTTPConnection(*self.tcp, timeout=timeout)

    def call(self, method: str, path: str, body: Any = None,
             params: dict[str, str] | None = None, raw: bytes | None = None,
             content_type: str = "application/json", versioned: bool = True) -> bytes:
        url = (self.prefix if versioned else "") + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        headers: dict[str, str] = {}
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
        if data is not None:
            headers["Content-Type"] = content_type
        for attempt in (0, 1):
            if self._conn is None:
                self._conn = self.new_conn(self.timeout)
            conn = self._conn
            try:
                conn.request(method, url, body=data, headers=headers)
                resp = conn.getresponse()
                payload = resp.read()
                break
            except (http.client.RemoteDisconnected, http.client.CannotSendRequest,
                    ConnectionResetError, BrokenPipeError):
                # a keep-alive connection the server closed: one fresh try
                conn.close()
                self._conn = None
                if attempt:
                    raise
        if resp.will_close:
            conn.close()
            self._conn = None
        if resp.status not in (200, 201, 204, 304):
            raise APIError(method, url, resp.status, payload)
        return payload

    def json(self, method: str, path: str, body: Any = None,
             params: dict[str, str] | None = None) -> Any:
        payload = self.call(method, path, body=body, params=params)
        return json.loads(payload) if payload else None

    def ping(self, timeout: float = 3.0) -> bool:
        try:
            conn = self.new_conn(timeout)
            conn.request("GET", "/_ping")
            ok = conn.getresponse().read().strip() == b"OK"
            conn.close()
            return ok
        except OSError:
            return False

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


# --------------------------------------------------------------------------------------------
# machine facts and CPU accounting (/proc)
# --------------------------------------------------------------------------------------------

def _first_line(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return ""


def machine_info(docker_cli: str) -> dict[str, Any]:
    info: dict[str, Any] = {"kernel": platform.release(), "cpus": os.cpu_count(),
                            "python": platform.python_version()}
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        info["mem_total_gib"] = round(int(f.readline().split()[1]) / 2**20, 1)
    with contextlib.suppress(OSError), open("/etc/os-release") as f:
        for line in f:
            if line.startswith("PRETTY_NAME="):
                info["os"] = line.split("=", 1)[1].strip().strip('"')
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        info["cgroup"] = "v2"
    else:
        info["cgroup"] = "v1 hybrid" if os.path.isdir("/sys/fs/cgroup/unified") else "v1"
    info["runc"] = _first_line(["runc", "--version"])
    info["conmon"] = _first_line(["conmon", "--version"])
    info["docker_cli"] = _first_line([docker_cli, "--version"])
    return info


def source_info() -> dict[str, Any]:
    """Which stowd code an own daemon runs: this checkout's commit and uncommitted files."""
    info: dict[str, Any] = {"repo": str(REPO)}
    try:
        git = ["git", "-C", str(REPO)]
        info["commit"] = subprocess.run(git + ["rev-parse", "--short=12", "HEAD"],
                                        capture_output=True, text=True, check=True,
                                        timeout=10).stdout.strip()
        dirty = subprocess.run(git + ["status", "--porcelain", "--", "stowd"],
                               capture_output=True, text=True, check=True, timeout=10).stdout
        info["uncommitted"] = [line[3:] for line in dirty.splitlines()]
    except (OSError, subprocess.SubprocessError):
        info["commit"] = "not a git checkout"
    return info


def busy_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return sum(v) - idle, sum(v)


def busy_frac(a: tuple[int, int], b: tuple[int, int]) -> float | None:
    return round((b[0] - a[0]) / (b[1] - a[1]), 3) if b[1] > a[1] else None


def wait_quiet(threshold: float, max_wait: float) -> tuple[float, float | None]:
    """Wait until the machine's CPU busy fraction stays under threshold for 2 s in a row."""
    if threshold <= 0 or max_wait <= 0:
        return 0.0, None
    t0 = time.perf_counter()
    ok, last = 0, None
    while True:
        a = busy_jiffies()
        time.sleep(1.0)
        last = busy_frac(a, busy_jiffies())
        ok = ok + 1 if last is not None and last < threshold else 0
        waited = time.perf_counter() - t0
        if ok >= 2 or waited >= max_wait:
            return round(waited, 1), last


def process_cpu_ticks(pid: int) -> int:
    """utime+stime of pid's threads plus the children it reaped (runc start/delete...)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15])


# --------------------------------------------------------------------------------------------
# one engine's measures
# --------------------------------------------------------------------------------------------

@dataclass
class Iteration:
    """Client-side timestamps (time.perf_counter, the monotonic clock) of one lifecycle."""
    cid: str
    t_create: float
    t_created: float
    t_started: float
    t_waited: float
    t_deleted: float


@dataclass
class EngineRun:
    name: str
    host: str
    a: argparse.Namespace
    run_id: str
    daemon_pid: int | None = None
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    iterations: list[Iteration] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.api = Api(self.host, self.a.api_version)
        self.labels = {HARNESS_LABEL: "1", RUN_LABEL: self.run_id}

    # -- helpers -----------------------------------------------------------------------------

    def add(self, metric: str, summary: dict[str, Any]) -> None:
        self.results[metric] = summary
        if "median" in summary:
            log(f"  {self.name:<8} {metric:<28} {fmt(summary['median']):>9} {summary['unit']:<7}"
                f" (n={summary['n']}, min {fmt(summary['min'])}, max {fmt(summary['max'])}, "
                f"p90 {fmt(summary['p90'])})")
        else:
            log(f"  {self.name:<8} {metric:<28} {summary.get('error', 'no samples')}")

    def create(self, cmd: list[str]) -> str:
        body = {"Image": self.a.image, "Cmd": cmd, "Labels": self.labels}
        return str(self.api.json("POST", "/containers/create", body)["Id"])

    def section(self, name: str) -> dict[str, Any]:
        waited, busy = wait_quiet(self.a.quiet_threshold, self.a.quiet_max_wait)
        meta = {"quiet_wait_s": waited, "busy_before": busy}
        self.meta[name] = meta
        log(f"[{self.name}] {name} (machine busy {busy}, waited {waited} s for quiet)")
        return meta

    def my_containers(self, api: Api | None = None) -> list[str]:
        f = json.dumps({"label": [f"{RUN_LABEL}={self.run_id}"]})
        rows = (api or self.api).json("GET", "/containers/json", params={"all": "1", "filters": f})
        return [str(r["Id"]) for r in rows or []]

    def cleanup(self) -> int:
        """Force-remove every container this run created (found by its run label)."""
        api = Api(self.host, self.a.api_version, timeout=60)  # a fresh connection: the old
        try:                                                # one may be mid-request (Ctrl-C)
            ids = self.my_containers(api)
            for cid in ids:
                try:
                    api.call("DELETE", f"/containers/{cid}", params={"force": "1"})
                except Exception as exc:
                    log(f"cleanup {self.name}: rm -f {cid[:12]}: {exc}")
            return len(ids)
        finally:
            api.close()

    # -- 1. create, start, wait, delete over raw HTTP ----------------------------------------

    def lifecycle(self) -> None:
        a = self.a
        meta = self.section("lifecycle")

        def one() -> Iteration:
            t0 = time.perf_counter()
            cid = self.create(["true"])
            t1 = time.perf_counter()
            self.api.call("POST", f"/containers/{cid}/start")
            t2 = time.perf_counter()
            status = self.api.json("POST", f"/containers/{cid}/wait")
            t3 = time.perf_counter()
            self.api.call("DELETE", f"/containers/{cid}")
            t4 = time.perf_counter()
            code = (status or {}).get("StatusCode")
            if code != 0:
                raise RuntimeError(f"lifecycle container {cid[:12]} exited {code}: {status}")
            return Iteration(cid, t0, t1, t2, t3, t4)

        for _ in range(a.warmup):
            one()
        cpu0 = process_cpu_ticks(self.daemon_pid) if self.daemon_pid else None
        sys0 = busy_jiffies()
        w0 = time.perf_counter()
        self.iterations = [one() for _ in range(a.n)]
        wall = time.perf_counter() - w0
        sys1 = busy_jiffies()
        its = self.iterations
        ms = 1000.0
        self.add("api.lifecycle.create", summarize(
            [(i.t_created - i.t_create) * ms for i in its], "ms"))
        self.add("api.lifecycle.start", summarize(
            [(i.t_started - i.t_created) * ms for i in its], "ms"))
        self.add("api.lifecycle.wait", summarize(
            [(i.t_waited - i.t_started) * ms for i in its], "ms",
            "from start returning until wait returns"))
        self.add("api.lifecycle.delete", summarize(
            [(i.t_deleted - i.t_waited) * ms for i in its], "ms"))
        self.add("api.lifecycle.total", summarize(
            [(i.t_deleted - i.t_create) * ms for i in its], "ms"))
        self.add("api.lifecycle.rate", summarize([a.n / wall], "ctr/s", "sequential, one client"))
        self.add("api.lifecycle.system_cpu", summarize(
            [(sys1[0] - sys0[0]) / CLK_TCK * ms / a.n], "ms/ctr",
            "busy CPU of the whole machine per lifecycle (client, daemon, runtime, all else)"))
        if cpu0 is not None and self.daemon_pid:
            cpu = process_cpu_ticks(self.daemon_pid) - cpu0
            self.add("api.lifecycle.daemon_cpu", summarize(
                [cpu / CLK_TCK * ms / a.n], "ms/ctr",
                "daemon process + children it reaped (runc start/delete, conmon's first fork);"
                " not runc create, which runs under conmon"))
        meta["cpu_busy_frac"] = busy_frac(sys0, sys1)

    # -- 2. GET /containers/json?all=1 with many containers ---------------------------------

    def list_all(self) -> None:
        a = self.a
        meta = self.section("list")
        ids: list[str] = []
        creates: list[float] = []
        starts: list[float] = []
        running: list[str] = []
        try:
            for i in range(a.list_containers):
                t0 = time.perf_counter()
                ids.append(self.create(["sleep", "3600"]))
                creates.append((time.perf_counter() - t0) * 1000)
                if i < a.list_running:
                    t0 = time.perf_counter()
                    self.api.call("POST", f"/containers/{ids[-1]}/start")
                    starts.append((time.perf_counter() - t0) * 1000)
                    running.append(ids[-1])
            self.add("list.fill.create", summarize(creates, "ms", "create sleep 3600"))
            if starts:
                self.add("list.fill.start", summarize(starts, "ms", "start sleep 3600"))
            time.sleep(1)
            listed = len(self.api.json("GET", "/containers/json", params={"all": "1"}) or [])
            meta.update(containers_listed=listed, ours=len(ids), ours_running=len(running))
            for _ in range(a.warmup):
                self.api.call("GET", "/containers/json", params={"all": "1"})
            samples = []
            for _ in range(a.n_list):
                t0 = time.perf_counter()
                self.api.call("GET", "/containers/json", params={"all": "1"})
                samples.append((time.perf_counter() - t0) * 1000)
            self.add("list.api_list_all", summarize(
                samples, "ms", f"GET /containers/json?all=1 with {listed} containers listed "
                               f"({len(running)} of ours running, {len(ids) - len(running)} "
                               "created)"))
        finally:
            rm_running, rm_created = [], []
            for cid in ids:
                t0 = time.perf_counter()
                self.api.call("DELETE", f"/containers/{cid}", params={"force": "1"})
                dt = (time.perf_counter() - t0) * 1000
                (rm_running if cid in running else rm_created).append(dt)
        if rm_running:
            self.add("list.rm_force.running", summarize(rm_running, "ms"))
        if rm_created:
            self.add("list.rm_force.created", summarize(rm_created, "ms"))

    # -- 3. docker run --rm busybox true through the docker CLI -----------------------------

    def cli_run(self) -> None:
        a = self.a
        self.section("cli")
        env = {k: v for k, v in os.environ.items() if k != "DOCKER_CONTEXT"}
        env["DOCKER_HOST"] = self.host
        cmd = [a.docker, "-H", self.host, "run", "--rm", "--label", f"{HARNESS_LABEL}=1",
               "--label", f"{RUN_LABEL}={self.run_id}", a.image, "true"]
        if not self.time_cli("cli.run_rm_true", cmd, env, " ".join(cmd[3:])):
            left = self.cleanup()
            if left:
                log(f"  {self.name}: removed {left} container(s) the failed CLI runs left")
        self.cli_exec(env)

    def time_cli(self, metric: str, cmd: list[str], env: dict[str, str], note: str) -> bool:
        """Warm up, then time cmd N times into metric; an unsupported row if it fails."""

        def once() -> float:
            t0 = time.perf_counter()
            p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, env=env, timeout=60, check=False)
            dt = (time.perf_counter() - t0) * 1000
            if p.returncode != 0:
                raise RuntimeError(f"rc={p.returncode}: "
                                   f"{p.stderr.decode(errors='replace').strip()[-300:]}")
            return dt

        try:
            for _ in range(max(1, self.a.warmup)):
                once()
            self.add(metric, summarize([once() for _ in range(self.a.n_cli)], "ms", note))
            return True
        except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:
            self.add(metric, {"unit": "ms", "n": 0, "unsupported": True,
                              "error": f"unsupported: {exc}"})
            return False

    def cli_exec(self, env: dict[str, str]) -> None:
        """`docker exec <c> true` against one running container."""
        try:
            cid = self.create(["sleep", "3600"])
            self.api.call("POST", f"/containers/{cid}/start")
        except Exception as exc:  # report the row as unsupported, keep the other rows
            self.add("cli.exec_true", {"unit": "ms", "n": 0, "unsupported": True,
                                       "error": f"unsupported: {exc}"})
            return
        self.time_cli("cli.exec_true", [self.a.docker, "-H", self.host, "exec", cid, "true"],
                      env, "docker exec <c> true")
        self.cleanup()

    def run(self, sections: list[str]) -> None:
        for name, fn in (("lifecycle", self.lifecycle), ("list", self.list_all),
                         ("cli", self.cli_run)):
            if name not in sections:
                continue
            try:
                fn()
            except (APIError, RuntimeError, OSError, http.client.HTTPException, ValueError,
                    KeyError) as exc:
                msg = f"{name}: {type(exc).__name__}: {exc}"
                self.errors.append(msg)
                log(f"  ERROR {self.name} {msg}")
                self.api.close()

    def version(self) -> str:
        try:
            v = self.api.json("GET", "/version")
        except (APIError, OSError, ValueError):
            return "?"
        comps = ", ".join(f"{c.get('Name')} {c.get('Version')}"
                          for c in v.get("Components") or [] if c.get("Name") != "Engine")
        return f"{v.get('Version')} ({comps})" if comps else str(v.get("Version"))


# --------------------------------------------------------------------------------------------
# where stowd's time goes: the trace written by bench/stowd_trace.py
# --------------------------------------------------------------------------------------------

LABELS = {
    "OciRuntime.create": "OciRuntime.create: spawn conmon, which runs `runc create`",
    "OciRuntime.start": "OciRuntime.start: `runc start`",
    "OciRuntime.delete": "OciRuntime.delete: `runc delete --force`",
    "OciRuntime.read_exit": "OciRuntime.read_exit: read conmon's exit file",
    "OciRuntime.cleanup_files": "OciRuntime.cleanup_files: conmon pid/exit/socket files",
    "mounts.mount_overlay": "mounts.mount_overlay: overlay rootfs",
    "mounts.unmount": "mounts.unmount: umount2(MNT_DETACH)",
    "mounts.is_mounted": "mounts.is_mounted: scan /proc/self/mountinfo",
    "Database.persist": "Database.persist: queue the record's UPDATE on the database thread",
    "Store.update_container": "Store.update_container",
    "Store.insert_container": "Store.insert_container: SQLite INSERT",
    "Store.delete_container": "Store.delete_container: SQLite DELETE (on the event loop)",
    "delete.remove_files": "delete.remove_files (rename; rmtree after the answer)",
    "build_spec": "build_spec: OCI config",
}


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else 0.0


def load_trace(path: Path) -> list[dict[str, Any]]:
    events = []
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                events.append(json.loads(line))
    return events


def analyse_trace(events: list[dict[str, Any]], its: list[Iteration]) -> dict[str, Any]:
    """Per phase, the median time of each traced step over the measured lifecycles."""
    top: dict[tuple[str, str], dict[str, Any]] = {}
    by_op: dict[str, list[dict[str, Any]]] = {}
    exit_seen: dict[str, float] = {}
    for e in events:
        if e.get("top"):
            top[(e["path"], e["cid"])] = e
        elif e["path"] == "conmon_exit_seen":
            exit_seen[e["cid"]] = e["t0"]
        else:
            by_op.setdefault(e["op"], []).append(e)

    def tree(phase: str) -> list[dict[str, Any]]:
        """Rows (path, depth, median ms, mean ms), depth-first in call order; a `(rest)` row
        under each node with children holds its time outside the traced children."""
        per_op: list[dict[str, float]] = []
        order: list[str] = []
        for it in its:
            t = top.get((phase, it.cid))
            if t is None:
                continue
            evs = sorted(by_op.get(t["op"], []), key=lambda e: e["t0"])
            durs: dict[str, float] = {phase: (t["t1"] - t["t0"]) * 1000}
            for e in evs:
                durs[e["path"]] = durs.get(e["path"], 0.0) + (e["t1"] - e["t0"]) * 1000
                if e["path"] not in order:
                    order.append(e["path"])
            per_op.append(durs)
        if not per_op:
            return []
        paths = [phase, *order]
        rows = []
        for p in paths:
            vals = [d.get(p, 0.0) for d in per_op]
            rows.append({"step": p, "depth": p.count("/"), "median_ms": _median(vals),
                         "mean_ms": statistics.fmean(vals)})
            kids = [q for q in paths if q.startswith(p + "/") and q.count("/") == p.count("/") + 1]
            if kids:
                rest = [d.get(p, 0.0) - sum(d.get(k, 0.0) for k in kids) for d in per_op]
                rows.append({"step": p + "/(rest)", "depth": p.count("/") + 1,
                             "median_ms": _median(rest), "mean_ms": statistics.fmean(rest),
                             "rest_of": p})
        # put each (rest) row after the node's last descendant
        ordered: list[dict[str, Any]] = []
        pending: list[dict[str, Any]] = []
        for r in rows:
            while pending and not r["step"].startswith(pending[-1]["rest_of"] + "/"):
                ordered.append(pending.pop())
            (pending if "rest_of" in r else ordered).append(r)
        ordered.extend(reversed(pending))
        return ordered

    out: dict[str, Any] = {"n": len(its), "phases": {}}
    client = {
        "create": [(i.t_created - i.t_create) * 1000 for i in its],
        "start": [(i.t_started - i.t_created) * 1000 for i in its],
        "wait": [(i.t_waited - i.t_started) * 1000 for i in its],
        "delete": [(i.t_deleted - i.t_waited) * 1000 for i in its],
    }
    for phase, engine_phase in (("create", "create"), ("start", "start"),
                                ("delete", "remove")):
        rows = tree(engine_phase)
        gaps = []
        for it, c in zip(its, client[phase], strict=True):
            t = top.get((engine_phase, it.cid))
            if t is not None:
                gaps.append(c - (t["t1"] - t["t0"]) * 1000)
        out["phases"][phase] = {"client_median_ms": _median(client[phase]), "rows": rows,
                                "outside_engine_median_ms": _median(gaps)}
    # wait: a timeline on the shared monotonic clock
    w1, w2, w3, w4, overlap = [], [], [], [], []
    for it in its:
        t_ex = top.get(("exit", it.cid))
        seen = exit_seen.get(it.cid)
        t_st = top.get(("start", it.cid))
        runc_start = [e for e in by_op.get(t_st["op"], []) if e["path"].endswith(
            "OciRuntime.start")] if t_st else []
        if t_ex is None or seen is None or not runc_start:
            continue
        r_end = runc_start[0]["t1"]
        w1.append((seen - r_end) * 1000)
        w2.append((t_ex["t0"] - seen) * 1000)
        w3.append((t_ex["t1"] - t_ex["t0"]) * 1000)
        w4.append((it.t_waited - t_ex["t1"]) * 1000)
        overlap.append((it.t_started - r_end) * 1000)
    out["phases"]["wait"] = {
        "client_median_ms": _median(client["wait"]),
        "timeline": {
            "runc start returned -> conmon exit seen (pidfd)": _median(w1),
            "conmon exit seen -> exit handler starts": _median(w2),
            "exit handler (monitor.handle_exit)": _median(w3),
            "exit handler done -> client has the wait reply": _median(w4),
            "minus: runc start returned -> start reply at client (in START)": _median(overlap),
        },
        "rows": tree("exit"),
    }
    return out


def format_breakdown(b: dict[str, Any]) -> str:
    lines = [f"Where stowd's time goes (median over the {b['n']} measured lifecycles; "
             "nested steps are included in their parent):", ""]
    w = 72
    lines.append(f"{'step':<{w}} {'median ms':>10} {'mean ms':>9}")
    lines.append("-" * (w + 21))

    def rows(rs: list[dict[str, Any]]) -> None:
        for r in rs:
            name = r["step"].rsplit("/", 1)[-1] if "/" in r["step"] else "engine: " + r["step"]
            if name == "(rest)":
                name = "(rest: untraced code, thread hand-offs)"
            label = "  " * (r["depth"] + 1) + LABELS.get(name, name)
            lines.append(f"{label:<{w}} {r['median_ms']:>10.2f} {r['mean_ms']:>9.2f}")

    for phase in ("create", "start", "wait", "delete"):
        p = b["phases"].get(phase)
        if not p:
            continue
        lines.append(f"{phase.upper() + ' (client-observed)':<{w}} {p['client_median_ms']:>10.2f}")
        if phase == "wait":
            for k, v in p["timeline"].items():
                lines.append(f"{'  ' + k:<{w}} {v:>10.2f}")
            lines.append("  exit handler, inside:")
            rows(p["rows"][1:])
        else:
            rows(p["rows"])
            lines.append(f"{'  outside the engine (HTTP, aiohttp, JSON, client)':<{w}} "
                         f"{p['outside_engine_median_ms']:>10.2f}")
        lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# engines: our own stowd, dockerd
# --------------------------------------------------------------------------------------------

@contextlib.contextmanager
def own_stowd(a: argparse.Namespace) -> Iterator[tuple[str, int, Path | None]]:
    """Start stowd via tests/daemon.py (optionally under the tracer), import busybox."""
    from tests.daemon import Daemon

    class BenchDaemon(Daemon):
        watch_blocking = False  # measure stowd as users run it

        def __init__(self, trace: bool) -> None:
            super().__init__(extra_args=["--log-level", a.daemon_log_level])
            # a prefix of its own, apart from the test suites' /tmp/stowd-t-* daemons
            self.root.rmdir()
            self.root = Path(tempfile.mkdtemp(prefix="stowd-lcbench-", dir=a.tmp_dir))
            self.socket = self.root / "s.sock"
            self.data_root = self.root / "data"
            self.exec_root = self.root / "exec"
            self.log_path = self.root / "stowd.log"
            self.cgroup_parent = self.cgroup_parent.replace("stowd-test-", "stowd-lcbench-")
            self.trace_path: Path | None = self.root / "trace.jsonl" if trace else None

        def command(self) -> list[str]:
            cmd = super().command()  # [python, -m, stowd, serve, ...]
            if self.trace_path is None:
                return cmd
            return [cmd[0], str(BENCH / "stowd_trace.py"), str(self.trace_path), *cmd[3:]]

    d = BenchDaemon(trace=not a.no_trace)
    try:
        log(f"starting stowd in {d.root}" + (" (traced)" if d.trace_path else ""))
        d.start()
        d.import_busybox(a.image if ":" in a.image else a.image + ":latest")
        assert d.proc is not None
        yield d.url, d.proc.pid, d.trace_path
    except Exception:
        log("stowd log tail:\n" + d.log()[-2000:])
        raise
    finally:
        log("stopping stowd and removing its directory")
        d.cleanup()


def dockerd_ready(a: argparse.Namespace) -> str | None:
    """None when dockerd can be measured, else the reason it is skipped."""
    api = Api(a.dockerd_host, a.api_version, timeout=120)
    try:
        if not api.ping():
            return f"no dockerd answers /_ping on {a.dockerd_host}"
        try:
            api.call("GET", f"/images/{a.image}/json")
            return None
        except APIError as exc:
            if exc.status != 404:
                return f"dockerd image check failed: {exc}"
        log(f"dockerd has no {a.image}; importing the busybox-static rootfs stowd uses")
        from stowd.engine.seed import busybox_binary, busybox_rootfs_tar

        binary = busybox_binary()
        if binary is None:
            return f"dockerd has no {a.image} and there is no busybox-static to import"
        buf = io.BytesIO()
        busybox_rootfs_tar(binary, buf)
        repo, _, tag = a.image.partition(":")
        try:
            api.call("POST", "/images/create", raw=buf.getvalue(),
                     content_type="application/x-tar",
                     params={"fromSrc": "-", "repo": repo, "tag": tag or "latest"})
        except (APIError, OSError) as exc:
            return f"dockerd has no {a.image} and importing one failed: {exc}"
        return None
    finally:
        api.close()


# --------------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------------

ROW_ORDER = [
    "api.lifecycle.create", "api.lifecycle.start", "api.lifecycle.wait", "api.lifecycle.delete",
    "api.lifecycle.total", "api.lifecycle.rate", "api.lifecycle.system_cpu",
    "api.lifecycle.daemon_cpu", "list.fill.create", "list.fill.start", "list.api_list_all",
    "list.rm_force.running", "list.rm_force.created", "cli.run_rm_true", "cli.exec_true",
]


def cell(s: dict[str, Any] | None) -> tuple[str, str]:
    if s is None:
        return "–", ""
    if "median" not in s:
        err = str(s.get("error", "no samples"))
        return (err[:60] + "…" if len(err) > 60 else err), ""
    if s["n"] == 1:
        return fmt(s["median"]), ""
    return f"{fmt(s['median'])} ({fmt(s['min'])}–{fmt(s['max'])})", fmt(s["p90"])


def table(doc: dict[str, Any]) -> str:
    engines = list(doc["engines"])
    m = doc["machine"]
    out = [f"Machine: {m.get('os', '?')}, kernel {m['kernel']}, {m['cpus']} CPUs "
           f"({m.get('cpu_model', '?')}), {m.get('mem_total_gib', '?')} GiB, "
           f"cgroup {m['cgroup']}; {m.get('runc', '')}; {m.get('conmon', '')}; "
           f"{m.get('docker_cli', '')}"]
    for name in engines:
        e = doc["engines"][name]
        out.append(f"{name}: {e['host']} — {e['version']}")
    src = doc.get("stowd_source")
    if src:
        dirty = src.get("uncommitted") or []
        out.append(f"stowd code: {src['repo']} at {src['commit']}"
                   + (f" + {len(dirty)} uncommitted file(s) under stowd/" if dirty else ""))
    out.append("")
    head = ["metric", "unit", "n"]
    for name in engines:
        head += [f"{name} median (min–max)", f"{name} p90"]
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "|".join(["---", "---", "---:"] + ["---:"] * (2 * len(engines))) + "|")
    metrics = [k for k in ROW_ORDER if any(k in doc["engines"][n]["results"] for n in engines)]
    for k in metrics:
        ns = {str(doc["engines"][n]["results"][k]["n"]) for n in engines
              if k in doc["engines"][n]["results"]}
        unit = next(doc["engines"][n]["results"][k]["unit"] for n in engines
                    if k in doc["engines"][n]["results"])
        row = [k, unit, "/".join(sorted(ns))]
        for n in engines:
            row += list(cell(doc["engines"][n]["results"].get(k)))
        out.append("| " + " | ".join(row) + " |")
    for n in engines:
        for k, s in doc["engines"][n]["results"].items():
            if "error" in s:
                out.append(f"\n{n} {k}: {s['error']}")
        for err in doc["engines"][n]["errors"]:
            out.append(f"\n{n} ERROR {err}")
    return "\n".join(out)


# --------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", help="measure this running engine (unix:///path) instead of "
                                  "starting our own stowd")
    p.add_argument("--label", default="stowd", help="name of that engine in the table")
    p.add_argument("--out", help="write all samples and metadata here (JSON)")
    p.add_argument("--n", type=int, default=30, help="measured lifecycles (default 30)")
    p.add_argument("--warmup", type=int, default=3, help="unmeasured warm-ups (default 3)")
    p.add_argument("--list-containers", type=int, default=100,
                   help="containers that exist while listing (default 100)")
    p.add_argument("--list-running", type=int, default=50,
                   help="how many of them are started (default 50)")
    p.add_argument("--n-list", type=int, default=20, help="list requests (default 20)")
    p.add_argument("--n-cli", type=int, default=10, help="docker run --rm (default 10)")
    p.add_argument("--sections", default=",".join(SECTIONS),
                   help="comma list of: " + ", ".join(SECTIONS))
    p.add_argument("--image", default="busybox", help="image name (default busybox)")
    p.add_argument("--docker", default="docker", help="docker CLI binary")
    p.add_argument("--api-version", default="1.41", help="API path prefix (default 1.41)")
    p.add_argument("--dockerd-host", default=DOCKERD_HOST,
                   help=f"dockerd to compare with (default {DOCKERD_HOST})")
    p.add_argument("--no-dockerd", action="store_true", help="do not measure dockerd")
    p.add_argument("--no-trace", action="store_true",
                   help="run our stowd without bench/stowd_trace.py (no time breakdown)")
    p.add_argument("--tmp-dir", default="/tmp",
                   help="where our stowd's fresh directory goes (default /tmp, as in tests)")
    p.add_argument("--daemon-log-level", default="info",
                   help="log level of our stowd (default info)")
    p.add_argument("--quiet-threshold", type=float, default=0.2,
                   help="before each section wait until machine CPU busy < this (0: never)")
    p.add_argument("--quiet-max-wait", type=float, default=30.0,
                   help="but no longer than this many seconds (default 30)")
    a = p.parse_args(argv)
    a.sections = [s.strip() for s in a.sections.split(",") if s.strip()]
    unknown = set(a.sections) - set(SECTIONS)
    if unknown:
        p.error(f"unknown sections: {', '.join(sorted(unknown))}")
    if a.list_running > a.list_containers:
        p.error("--list-running cannot exceed --list-containers")
    return a


def measure(run: EngineRun, doc: dict[str, Any], sections: list[str]) -> None:
    doc["engines"][run.name] = {"host": run.host, "version": run.version(),
                                "results": run.results, "meta": run.meta, "errors": run.errors}
    try:
        run.run(sections)
    finally:
        removed = run.cleanup()
        run.api.close()
        if removed:
            log(f"[{run.name}] removed {removed} leftover container(s) of this run")


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    run_id = uuid.uuid4().hex[:12]
    doc: dict[str, Any] = {
        "run_id": run_id, "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "argv": sys.argv, "machine": machine_info(a.docker), "engines": {}, "errors": [],
    }
    t0 = time.perf_counter()
    status = 0
    try:
        if a.host:
            run = EngineRun(a.label, a.host, a, run_id)
            if not run.api.ping():
                raise SystemExit(f"{a.host} does not answer /_ping")
            measure(run, doc, a.sections)
        else:
            doc["stowd_source"] = source_info()
            with own_stowd(a) as (url, pid, trace_path):
                run = EngineRun(a.label, url, a, run_id, daemon_pid=pid)
                measure(run, doc, a.sections)
                if trace_path is not None and run.iterations:
                    doc["breakdown"] = analyse_trace(load_trace(trace_path), run.iterations)
        if not a.no_dockerd and a.dockerd_host != a.host:
            reason = dockerd_ready(a)
            if reason:
                log(f"dockerd skipped: {reason}")
                doc["dockerd_skipped"] = reason
            else:
                measure(EngineRun("dockerd", a.dockerd_host, a, run_id), doc, a.sections)
    except KeyboardInterrupt:
        doc["errors"].append("interrupted")
        log("interrupted; partial results follow")
        status = 130
    doc["wall_seconds"] = round(time.perf_counter() - t0, 1)
    if doc["engines"]:
        print(table(doc))
    if "breakdown" in doc:
        print()
        print(format_breakdown(doc["breakdown"]))
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        with open(a.out, "w") as f:
            json.dump(doc, f, indent=1)
        log(f"wrote {a.out}")
    if any(e["errors"] for e in doc["engines"].values()):
        status = status or 1
    return status


if __name__ == "__main__":
    sys.exit(main())
