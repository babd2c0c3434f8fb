#!/usr/bin/env python3
"""Registry pull benchmark: stowd, and dockerd in the same run, from one local registry.

    .venv/bin/python bench/pull.py [--runs 3] [--big-mb 500] [--port 5850] [--no-dockerd]

Starts Debian's docker-registry on 127.0.0.1:--port (dockerd trusts 127.0.0.0/8 as
insecure), writes three images into it over its HTTP API, starts its own stowd
(tests/daemon.py, without the blocking-call checks), then times cold pulls (the image and
its layers removed before each one) through the Docker API:

- `many`: 4 layers of 25 MB of random bytes (gzip, ~100 MB, incompressible);
- `small`: 20 layers of 250 small files each (gzip);
- `big`: one layer of --big-mb MB (gzip, random bytes): stowd's peak RSS growth during it.

Then the floor on this machine for the `many` image: the bytes fetched from the registry
with aiohttp alone, sha256 of the compressed blobs, gunzip, sha256 of the tars, and GNU tar
extracting the plain tars. Progress on stderr, the table (markdown) on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import hashlib
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import zlib
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import docker  # noqa: E402

from tests.daemon import Daemon  # noqa: E402
from tests.registry import DOCKER_CONFIG, DOCKER_LAYER, DOCKER_MANIFEST, Registry  # noqa: E402

DOCKERD_HOST = "unix:///var/run/docker.sock"
# When the last pull reached each phase (s from its start): manifest and config resolved,
# last layer downloaded, last layer extracted.
MARKS: dict[str, float] = {}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def random_tar(path: Path, size: int, name: str) -> None:
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo(name)
        info.size = size

        class Random(io.RawIOBase):
            left = size

            def readable(self) -> bool:
                return True

            def readinto(self, b: Any) -> int:
                n = min(len(b), self.left, 1 << 20)
                b[:n] = os.urandom(n)
                self.left -= n
                return n

        tar.addfile(info, io.BufferedReader(Random(), 1 << 20))


def small_files_tar(path: Path, layer: int, files: int) -> None:
    with tarfile.open(path, "w") as tar:
        d = tarfile.TarInfo(f"l{layer}")
        d.type = tarfile.DIRTYPE
        d.mode = 0o755
        tar.addfile(d)
        for i in range(files):
            data = (f"layer {layer} file {i}\n" * (20 + i % 200)).encode()
            info = tarfile.TarInfo(f"l{layer}/f{i}.txt")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def gzip_file(src: Path, dst: Path, level: int = 6) -> None:
    with open(src, "rb") as i, open(dst, "wb") as raw, \
            gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=level, mtime=0) as o:
        while chunk := i.read(1 << 20):
            o.write(chunk)


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def put_blob_file(reg: Registry, repo: str, path: Path) -> tuple[str, int]:
    digest = file_digest(path)
    if reg.request("HEAD", f"/v2/{repo}/blobs/{digest}").status_code != 200:
        r = reg.request("POST", f"/v2/{repo}/blobs/uploads/")
        location = r.headers["Location"]
        sep = "&" if "?" in location else "?"
        with open(path, "rb") as f:
            r = reg.request("PUT", f"{location}{sep}digest={digest}", data=f,
                         headers={"Content-Type": "application/octet-stream",
                                  "Content-Length": str(path.stat().st_size)})
        assert r.status_code == 201, r.text
    return digest, path.stat().st_size


def push(reg: Registry, repo: str, tars: list[Path], work: Path) -> None:
    layers, diff_ids = [], []
    for t in tars:
        gz = t.with_suffix(".tar.gz")
        gzip_file(t, gz, level=1)
        diff_ids.append(file_digest(t))
        digest, size = put_blob_file(reg, repo, gz)
        layers.append({"mediaType": DOCKER_LAYER, "size": size, "digest": digest})
        gz.unlink()
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "config": {"Cmd": ["sh"]},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    cfg_digest = reg.put_blob(repo, config)
    reg.put_manifest(repo, "v1", {"schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
                                  "config": {"mediaType": DOCKER_CONFIG, "size": len(config),
                                             "digest": cfg_digest},
                                  "layers": layers})


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cold_pull(api: docker.APIClient, name: str, pid: int | None = None
              ) -> tuple[float, int]:
    with contextlib.suppress(docker.errors.ImageNotFound):
        api.remove_image(name, force=True)
    # The last removal's deletes (thousands of files for `small`) are still being written
    # out, and would slow whichever engine pulls next: flushed first, outside the timing.
    os.sync()
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss_kib(pid or 0))
            time.sleep(0.02)

    base = rss_kib(pid) if pid else 0
    sampler = threading.Thread(target=sample) if pid else None
    if sampler:
        sampler.start()
    start = time.monotonic()
    for line in api.pull(name.rsplit(":", 1)[0], tag="v1", stream=True, decode=True):
        if "error" in line:
            raise RuntimeError(line["error"])
        status = str(line.get("status", ""))
        if status.startswith("Pulling from"):
            MARKS["resolved"] = time.monotonic() - start
        elif status in ("Download complete", "Pull complete"):
            MARKS[status] = time.monotonic() - start
    took = time.monotonic() - start
    stop.set()
    if sampler:
        sampler.join()
    growth = (peak[0] - base) if pid else 0
    api.remove_image(name, force=True)
    return took, growth


async def floor(reg: Registry, repo: str, tars: list[Path], work: Path) -> dict[str, float]:
    """What the work of pulling `many` costs on this machine, step by step."""
    import aiohttp
    manifest = reg.session.get(f"{reg.url}/v2/{repo}/manifests/v1",
                               headers={"Accept": DOCKER_MANIFEST}).json()
    out: dict[str, float] = {}
    blobs: list[Path] = []
    start = time.monotonic()
    async with aiohttp.ClientSession(read_bufsize=1 << 20) as s:
        async def fetch(desc: dict[str, Any]) -> None:
            async with s.get(f"{reg.url}/v2/{repo}/blobs/{desc['digest']}") as r:
                path = work / desc["digest"][7:]
                with open(path, "wb") as f:
                    while chunk := await r.content.read(1 << 20):
                        f.write(chunk)
                blobs.append(path)
        await asyncio.gather(*(fetch(d) for d in manifest["layers"]))
    out["network (aiohttp, 4 at once, to page cache)"] = time.monotonic() - start
    start = time.monotonic()
    for b in blobs:
        file_digest(b)
    out["sha256 of the compressed blobs"] = time.monotonic() - start
    from isal import isal_zlib
    for label, module in (("gunzip (zlib)", zlib), ("gunzip (ISA-L, what stowd uses)", isal_zlib)):
        start = time.monotonic()
        for b in blobs:
            d = module.decompressobj(wbits=31)
            with open(b, "rb") as f:
                while chunk := f.read(1 << 20):
                    d.decompress(chunk)
        out[label] = time.monotonic() - start
    start = time.monotonic()
    for t in tars:
        file_digest(t)
    out["sha256 of the tars (diff IDs)"] = time.monotonic() - start
    start = time.monotonic()
    for i, t in enumerate(tars):
        dest = work / f"x{i}"
        dest.mkdir()
        subprocess.run(["tar", "-x", "-f", str(t), "-C", str(dest)], check=True)
    out["GNU tar -x of the plain tars"] = time.monotonic() - start
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--big-mb", type=int, default=500)
    ap.add_argument("--port", type=int, default=5850)
    ap.add_argument("--no-dockerd", action="store_true")
    ap.add_argument("--images", default="many,small,big",
                    help="which images to time (comma-separated)")
    ap.add_argument("--profile", metavar="PREFIX",
                    help="record stowd's pulls of each image with py-spy into "
                         "PREFIX-<image>.txt (collapsed stacks, all threads)")
    ap.add_argument("--no-floor", action="store_true")
    args = ap.parse_args()
    wanted = args.images.split(",")
    work = Path(tempfile.mkdtemp(prefix="stowd-pullbench-", dir="/var/tmp"))
    reg = Registry.start(port=args.port)
    Daemon.watch_blocking = False
    daemon = Daemon().start()
    try:
        log("building images")
        many = [work / f"many{i}.tar" for i in range(4)]
        if "many" in wanted or not args.no_floor:
            for i, t in enumerate(many):
                random_tar(t, 25_000_000, f"blob{i}")
            push(reg, "bench/many", many, work)
        if "small" in wanted:
            small = [work / f"small{i}.tar" for i in range(20)]
            for i, t in enumerate(small):
                small_files_tar(t, i, 250)
            push(reg, "bench/small", small, work)
            for t in small:
                t.unlink()
        if "big" in wanted:
            big = work / "big.tar"
            random_tar(big, args.big_mb * 1_000_000, "big")
            push(reg, "bench/big", [big], work)
            big.unlink()
        engines = {"stowd": docker.APIClient(base_url=daemon.url, timeout=600)}
        if not args.no_dockerd:
            try:
                d = docker.APIClient(base_url=DOCKERD_HOST, timeout=600)
                d.ping()
                engines["dockerd"] = d
            except Exception as exc:
                log(f"dockerd skipped: {exc}")
        assert daemon.proc is not None
        results: dict[str, dict[str, list[float]]] = {}
        phases: dict[str, list[dict[str, float]]] = {}
        growths: list[int] = []
        for image in [i for i in ("many", "small", "big") if i in wanted]:
            name = f"{reg.host}/bench/{image}:v1"
            spy = None
            if args.profile:
                spy = subprocess.Popen(
                    [str(Path(sys.executable).parent / "py-spy"), "record", "--threads",
                     "--nonblocking", "-r", "200", "-f", "raw", "-o",
                     f"{args.profile}-{image}.txt", "--pid", str(daemon.proc.pid)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for run in range(args.runs):
                for engine, api in engines.items():  # alternate, so neither gets a warm host
                    took, growth = cold_pull(
                        api, name, daemon.proc.pid if engine == "stowd" else None)
                    results.setdefault(image, {}).setdefault(engine, []).append(took)
                    log(f"{image} {engine} run {run}: {took:.2f} s "
                        + " ".join(f"{k} {v:.2f}" for k, v in MARKS.items())
                        + (f" RSS +{growth / 1024:.1f} MiB" if engine == "stowd" else ""))
                    if engine == "stowd":
                        phases.setdefault(image, []).append(dict(MARKS))
                        if image == "big":
                            growths.append(growth)
            if spy:
                spy.send_signal(2)
                spy.wait()
        steps = {} if args.no_floor else asyncio.run(floor(reg, "bench/many", many, work))
        print(f"{args.runs} runs each, alternating; median (min–max)\n")
        print("| image | stowd (s) | dockerd (s) | stowd/dockerd |\n|---|---|---|---|")

        def fig(xs: list[float]) -> str:
            return f"{statistics.median(xs):.2f} ({min(xs):.2f}–{max(xs):.2f})"

        for image, per in results.items():
            label = f"big ({args.big_mb} MB)" if image == "big" else image
            s = per["stowd"]
            dd = per.get("dockerd")
            ratios = [a / b for a, b in zip(s, dd, strict=True)] if dd else []
            print(f"| {label} | {fig(s)} | {fig(dd)} | {fig(ratios)} |" if dd else
                  f"| {label} | {fig(s)} | - | - |")
        if growths:
            print(f"\nstowd peak RSS growth during the big pull: "
                  f"{max(growths) / 1024:.1f} MiB (largest of {len(growths)})\n")
        print("| stowd, median s from the request | manifest+config | last download "
              "complete | last layer extracted |\n|---|---|---|---|")
        for image, marks in phases.items():
            med = {k: statistics.median(m.get(k, 0) for m in marks)
                   for k in ("resolved", "Download complete", "Pull complete")}
            print(f"| {image} | {med['resolved']:.2f} | {med['Download complete']:.2f} | "
                  f"{med['Pull complete']:.2f} |")
        if steps:
            print()
            print("| floor step (`many`, ~100 MB) | s |\n|---|---|")
            for step, t in steps.items():
                print(f"| {step} | {t:.2f} |")
    finally:
        daemon.cleanup()
        reg.stop()
        subprocess.run(["rm", "-rf", str(work)], check=False)


if __name__ == "__main__":
    main()
