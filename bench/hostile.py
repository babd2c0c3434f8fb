#!/usr/bin/env python3
"""Hostile input and bursts (issue 12): what each costs stowd, and dockerd beside it.

    .venv/bin/python bench/hostile.py [--out results/hostile.json]

Starts its own stowd (tests/daemon.py), and when /var/run/docker.sock answers, runs the same
against dockerd (a busybox image is imported there under a unique tag and removed after).
Per engine: 300 `docker version` started at once (failures), a 254 KB gzip bomb (256 MiB of
zeros) to `POST /images/load` and through `docker cp` (seconds, peak RSS growth of the
daemon, sampled every 20 ms), a 10 KB tar of a 10 GiB sparse file through `docker cp`
(KiB allocated), a 400 MB chunked JSON body, JSON nested 1,000 deep and `Memory: 1e26` to
create (status). Markdown table on stdout, samples in --out.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.daemon import Daemon  # noqa: E402
from tests.integration.test_hostile_archives import gzip_bomb  # noqa: E402

DOCKERD = "unix:///var/run/docker.sock"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def peak_growth(pid: int, fn: Callable[[], Any]) -> tuple[float, int, Any]:
    """(seconds, MiB of peak RSS growth, result) of fn, RSS sampled every 20 ms."""
    base = rss_kib(pid)
    peak = base
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_kib(pid))
            time.sleep(0.02)

    t = threading.Thread(target=sample)
    t.start()
    t0 = time.monotonic()
    try:
        result = fn()
    finally:
        elapsed = time.monotonic() - t0
        done.set()
        t.join()
    return elapsed, (peak - base) // 1024, result


def dockerd_pid() -> int:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "dockerd":
                    return int(entry.name)
            except OSError:
                pass
    return 0


def burst(url: str, n: int = 300) -> int:
    env = dict(os.environ, DOCKER_HOST=url, DOCKER_CONFIG="/tmp/stowd-docker-cfg")
    procs = [subprocess.Popen(["docker", "version", "--format", "{{.Server.Version}}"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for _ in range(n)]
    return sum(p.wait() != 0 for p in procs)


def measure(url: str, pid: int, image: str, upper_of: Callable[[str], Path]) -> dict[str, Any]:
    api = docker.APIClient(base_url=url, version="1.41", timeout=600)
    out: dict[str, Any] = {"burst_300_failed": burst(url)}
    bomb = gzip_bomb()
    s, mib, res = peak_growth(pid, lambda: api.post(
        api.base_url + "/v1.41/images/load", data=bomb,
        headers={"Content-Type": "application/x-tar"}))
    out["bomb_load"] = {"s": round(s, 1), "mib": mib, "status": res.status_code}
    ctr = api.create_container(image, ["true"])["Id"]
    try:
        s, mib, _ = peak_growth(pid, lambda: api.put_archive(ctr, "/tmp", bomb))
        out["bomb_cp"] = {"s": round(s, 1), "mib": mib}
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "sparse"
            with open(src, "wb") as f:
                f.truncate(10 << 30)
            tar = subprocess.run(["tar", "--sparse", "-cf", "-", "-C", tmp, "sparse"],
                                 capture_output=True, check=True).stdout
        try:
            api.put_archive(ctr, "/", tar)
            st = os.stat(upper_of(ctr) / "sparse")
            out["sparse_cp_kib"] = st.st_blocks * 512 // 1024
        except docker.errors.APIError as exc:  # dockerd 20.10 refuses GNU sparse members
            out["sparse_cp_kib"] = f"{exc.status_code}: {exc.explanation}"
    finally:
        api.remove_container(ctr, force=True)
    filler = b"x" * (1 << 20)

    def chunks() -> Iterator[bytes]:
        yield b'{"Image":"' + image.encode() + b'","Cmd":["true"],"Env":["A='
        for _ in range(400):
            yield filler
        yield b'"]}'

    def post(body: Any) -> int:
        r = api.post(api.base_url + "/v1.41/containers/create", data=body,
                     headers={"Content-Type": "application/json"})
        if r.status_code == 201:
            api.remove_container(r.json()["Id"], force=True)
        return int(r.status_code)

    s, mib, status = peak_growth(pid, lambda: post(chunks()))
    out["json_400mb"] = {"s": round(s, 1), "mib": mib, "status": status}
    out["json_nested_1000"] = post(b'{"Image":"' + image.encode() + b'","Labels":'
                                   + b"[" * 1000 + b"]" * 1000 + b"}")
    out["memory_1e26"] = post(json.dumps({"Image": image, "Cmd": ["true"], "HostConfig": {
        "Memory": 99999999999999999999999999}}).encode())
    api.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results: dict[str, Any] = {}
    d = Daemon()
    d.watch_blocking = False
    try:
        d.start()
        d.import_busybox()
        assert d.proc is not None
        print("stowd ...", file=sys.stderr)
        results["stowd"] = measure(d.url, d.proc.pid, "busybox",
                                   lambda c: d.data_root / "containers" / c / "upper")
    finally:
        d.cleanup()
    pid = dockerd_pid()
    if pid:
        print("dockerd ...", file=sys.stderr)
        client = docker.DockerClient(base_url=DOCKERD)
        tag = f"stowd-bench-{uuid.uuid4().hex[:8]}"
        from stowd.engine.seed import busybox_binary, busybox_rootfs_tar
        buf = io.BytesIO()
        busybox_rootfs_tar(busybox_binary(), buf)
        client.api.import_image_from_data(buf.getvalue(), repository=tag, tag="latest")
        try:
            results["dockerd"] = measure(
                DOCKERD, pid, f"{tag}:latest",
                lambda c: Path(client.api.inspect_container(c)["GraphDriver"]["Data"]
                               ["UpperDir"]))
        finally:
            client.images.remove(f"{tag}:latest", force=True)
    rows = ["burst_300_failed", "bomb_load", "bomb_cp", "sparse_cp_kib", "json_400mb",
            "json_nested_1000", "memory_1e26"]
    engines = list(results)
    print("| measure | " + " | ".join(engines) + " |")
    print("|---|" + "---|" * len(engines))
    for row in rows:
        print(f"| {row} | " + " | ".join(str(results[e][row]) for e in engines) + " |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
