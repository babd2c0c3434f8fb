#!/usr/bin/env python3
"""Looking-inside benchmark: stats latency, docker diff on 10,000 files, export throughput.

    .venv/bin/python bench/inspect_fs.py [--out results/x.json] [--n 20] [--no-dockerd]

Starts its own stowd (bench/lifecycle.py's harness: a fresh socket, data-root and cgroup
parent under /tmp, busybox imported, all removed at the end) and measures, through the
Engine API:

- stats.one_shot       GET /containers/{id}/stats?stream=false&one-shot=true (ms)
- stats.no_stream      GET /containers/{id}/stats?stream=false, what `docker stats
                       --no-stream` sends: it waits for a second sample (ms)
- diff.10k             GET /containers/{id}/changes of a container that made 10,000 files (ms)
- export.200mb         GET /containers/{id}/export of a container holding 200 MB, read to
                       the end as it streams (MB/s), and the engine's peak RSS growth meanwhile

Then the same against dockerd when it answers on /var/run/docker.sock (its own busybox
image, containers labelled and removed afterwards). Progress goes to stderr, the table to
stdout, every sample to --out.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import uuid
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
if str(BENCH.parent) not in sys.path:
    sys.path.insert(0, str(BENCH.parent))

from bench.lifecycle import (  # noqa: E402 - after the path fix above
    DOCKERD_HOST,
    HARNESS_LABEL,
    RUN_LABEL,
    Api,
    fmt,
    log,
    own_stowd,
    summarize,
)

MB = 1_000_000


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Run:
    def __init__(self, api: Api, image: str, run_id: str, engine_pid: int | None) -> None:
        self.api = api
        self.image = image
        self.labels = {HARNESS_LABEL: "1", RUN_LABEL: run_id}
        self.engine_pid = engine_pid
        self.created: list[str] = []

    def container(self, script: str) -> str:
        body = {"Image": self.image, "Cmd": ["sh", "-c", script], "Labels": self.labels}
        cid = str(self.api.json("POST", "/containers/create", body)["Id"])
        self.created.append(cid)
        self.api.call("POST", f"/containers/{cid}/start")
        return cid

    def wait(self, cid: str) -> None:
        self.api.json("POST", f"/containers/{cid}/wait")

    def cleanup(self) -> None:
        for cid in self.created:
            try:
                self.api.call("DELETE", f"/containers/{cid}", params={"force": "1"})
            except Exception as exc:  # keep removing the rest
                log(f"removing {cid[:12]} failed: {exc}")

    def stats(self, n: int) -> dict[str, Any]:
        cid = self.container("while :; do :; done")
        time.sleep(1.5)
        one_shot, no_stream, cpu = [], [], []
        for _ in range(n):
            t0 = time.perf_counter()
            self.api.json("GET", f"/containers/{cid}/stats",
                          params={"stream": "false", "one-shot": "true"})
            one_shot.append((time.perf_counter() - t0) * 1000)
        for _ in range(max(3, n // 4)):
            time.sleep(2.5)  # no kept sample: the full wait, as a first `docker stats`
            t0 = time.perf_counter()
            s = self.api.json("GET", f"/containers/{cid}/stats", params={"stream": "false"})
            no_stream.append((time.perf_counter() - t0) * 1000)
            c, p = s["cpu_stats"], s["precpu_stats"]
            d_sys = c.get("system_cpu_usage", 0) - p.get("system_cpu_usage", 0)
            if d_sys > 0:
                d_cpu = c["cpu_usage"]["total_usage"] - p["cpu_usage"]["total_usage"]
                cpu.append(d_cpu / d_sys * c.get("online_cpus", 1) * 100)
        self.api.call("DELETE", f"/containers/{cid}", params={"force": "1"})
        self.created.remove(cid)
        return {"stats.one_shot": summarize(one_shot, "ms"),
                "stats.no_stream": summarize(no_stream, "ms"),
                "stats.burner_cpu_percent": summarize(cpu, "%")}

    def diff(self, n: int) -> dict[str, Any]:
        cid = self.container("mkdir -p /many && cd /many && "
                             "for d in $(seq 100); do mkdir $d; (cd $d && seq 100 | "
                             "xargs touch); done")
        self.wait(cid)
        times, count = [], 0
        for _ in range(n):
            t0 = time.perf_counter()
            count = len(self.api.json("GET", f"/containers/{cid}/changes") or [])
            times.append((time.perf_counter() - t0) * 1000)
        out = {"diff.10k": summarize(times, "ms", note=f"{count} changes")}
        log(f"  diff: {count} changes, median {fmt(out['diff.10k'].get('median'))} ms")
        return out

    def export(self, n: int) -> dict[str, Any]:
        cid = self.container("mkdir /big && for i in $(seq 200); do "
                             "head -c 1000000 /dev/urandom > /big/f$i; done")
        self.wait(cid)
        rates, sizes, rss = [], [], []
        for _ in range(n):
            conn = self.api.new_conn(600)
            rss0 = _rss_kib(self.engine_pid) if self.engine_pid else 0
            peak = rss0
            t0 = time.perf_counter()
            conn.request("GET", f"{self.api.prefix}/containers/{cid}/export")
            resp = conn.getresponse()
            total = 0
            while chunk := resp.read(1 << 20):
                total += len(chunk)
                if self.engine_pid and total % (16 << 20) < (1 << 20):
                    peak = max(peak, _rss_kib(self.engine_pid))
            elapsed = time.perf_counter() - t0
            conn.close()
            rates.append(total / MB / elapsed)
            sizes.append(total / MB)
            if self.engine_pid:
                rss.append((peak - rss0) / 1024)
        out = {"export.200mb": summarize(rates, "MB/s",
                                         note=f"{sizes[-1]:.0f} MB tar" if sizes else "")}
        if rss:
            out["export.engine_rss_growth"] = summarize(rss, "MiB")
        return out


def measure(name: str, host: str, image: str, engine_pid: int | None,
            a: argparse.Namespace) -> dict[str, Any]:
    api = Api(host, a.api_version)
    run = Run(api, image, uuid.uuid4().hex[:12], engine_pid)
    results: dict[str, Any] = {}
    try:
        for section, n in (("stats", a.n), ("diff", a.n), ("export", max(2, a.n // 4))):
            log(f"{name}: {section}")
            try:
                results.update(getattr(run, section)(n))
            except Exception as exc:
                results[f"{section}.error"] = {"error": str(exc), "n": 0, "unit": ""}
                log(f"  {section} failed: {exc}")
    finally:
        run.cleanup()
        api.close()
    return results


ROWS = ["stats.one_shot", "stats.no_stream", "stats.burner_cpu_percent", "diff.10k",
        "export.200mb", "export.engine_rss_growth"]


def table(doc: dict[str, Any]) -> str:
    engines = list(doc["engines"])
    out = [f"# inspect_fs on {doc['machine']}", "",
           "| metric | unit | " + " | ".join(f"{e} median (min–max)" for e in engines) + " |",
           "|---|---|" + "---:|" * len(engines)]
    for key in ROWS + sorted({k for e in engines for k in doc["engines"][e]} - set(ROWS)):
        cells, unit = [], ""
        for e in engines:
            s = doc["engines"][e].get(key)
            if s is None:
                cells.append("–")
            elif "median" in s:
                unit = s["unit"]
                note = f" ({s['note']})" if s.get("note") else ""
                cells.append(f"{fmt(s['median'])} ({fmt(s['min'])}–{fmt(s['max'])}){note}")
            else:
                cells.append(str(s.get("error", "-"))[:60])
        if any(c != "–" for c in cells):
            out.append(f"| {key} | {unit} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=20, help="samples per figure (export: n/4)")
    p.add_argument("--out", help="write every sample here (JSON)")
    p.add_argument("--api-version", default="1.41")
    p.add_argument("--dockerd-host", default=DOCKERD_HOST)
    p.add_argument("--dockerd-image", default="busybox:latest")
    p.add_argument("--no-dockerd", action="store_true")
    p.add_argument("--tmp-dir", default="/tmp")
    p.add_argument("--daemon-log-level", default="info")
    a = p.parse_args(argv)
    # what own_stowd() reads from lifecycle's arguments
    a.no_trace, a.image = True, "busybox"
    doc: dict[str, Any] = {"machine": f"{platform.node()} {platform.release()}",
                           "engines": {}}
    with own_stowd(a) as (url, pid, _):
        doc["engines"]["stowd"] = measure("stowd", url, "busybox", pid, a)
    if not a.no_dockerd and Api(a.dockerd_host).ping():
        doc["engines"]["dockerd"] = measure("dockerd", a.dockerd_host, a.dockerd_image, None, a)
    else:
        log("dockerd: not measured")
    print(table(doc))
    if a.out:
        Path(a.out).write_text(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
