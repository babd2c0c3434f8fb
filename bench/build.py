"""docker build (the classic builder, `POST /build`) in stowd and, in the same run, dockerd.

A 6-step Dockerfile (FROM, two COPYs, three RUNs) and one of FROM and 21 config steps
(ENV, LABEL, WORKDIR, EXPOSE, CMD: each a container created and removed, as dockerd), built
cold (`nocache=1`) and then fully cached, N times each, through raw HTTP on the unix socket
(the context tars are made once).
stowd is started by tests/daemon.py as in lifecycle.py; dockerd is measured after it when
it answers on /var/run/docker.sock, on a busybox it is given for the run and loses after.

    .venv/bin/python bench/build.py [--n 5] [--no-dockerd]
"""

import argparse
import io
import json
import os
import sys
import tarfile
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

from lifecycle import Api, APIError, log, summarize  # noqa: E402

IMAGE = "benchbuild-busybox:latest"
DOCKERFILE = f"""FROM {IMAGE}
COPY app.txt /app/app.txt
RUN echo one > /one && cat /app/app.txt > /copied
COPY data /app/data
RUN ls -R /app > /listing
RUN echo three > /three
"""
CONFIG_STEPS = f"FROM {IMAGE}\n" + "".join(
    f"ENV V{i}={i}\nLABEL l{i}={i}\nWORKDIR /w{i % 2}\nEXPOSE {8000 + i}\n"
    for i in range(5)) + 'CMD ["sh"]\n'


def context_tar(dockerfile: str = DOCKERFILE) -> bytes:
    buf = io.BytesIO()
    files = {"Dockerfile": dockerfile.encode(), "app.txt": b"app\n" * 1000}
    for i in range(20):
        files[f"data/file{i}.txt"] = os.urandom(4096)
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def build_once(api: Api, body: bytes, tag: str, nocache: bool) -> tuple[float, str]:
    params = {"t": tag, "rm": "1"}
    if nocache:
        params["nocache"] = "1"
    start = time.perf_counter()
    payload = api.call("POST", "/build", raw=body, params=params,
                       content_type="application/x-tar")
    elapsed = time.perf_counter() - start
    image = ""
    for line in payload.splitlines():
        if not line.strip():
            continue
        msg = json.loads(line)
        if "error" in msg:
            raise RuntimeError(msg["error"])
        if "aux" in msg:
            image = msg["aux"]["ID"]
    return elapsed, image


def measure(api: Api, body: bytes, n: int, name: str) -> dict[str, Any]:
    tag = f"benchbuild:{uuid.uuid4().hex[:8]}"
    cold: list[float] = []
    cached: list[float] = []
    build_once(api, body, tag, nocache=True)  # warm-up (page cache, first container)
    for _ in range(n):
        seconds, _ = build_once(api, body, tag, nocache=True)
        cold.append(seconds * 1000)
    _, first = build_once(api, body, tag, nocache=False)
    for _ in range(n):
        seconds, image = build_once(api, body, tag, nocache=False)
        assert image == first, "a cached rebuild made a new image"
        cached.append(seconds * 1000)
    log(f"{name}: cold {sorted(cold)} ms, cached {sorted(cached)} ms")
    try:
        api.call("DELETE", f"/images/{tag}", params={"force": "1"})
    except APIError as exc:
        log(f"{name}: removing {tag}: {exc}")
    return {"cold": summarize(cold, "ms"), "cached": summarize(cached, "ms")}


def busybox_tar() -> bytes:
    """The busybox-static rootfs, re-tarred by GNU tar: dockerd applies a hard link
    entry's mode to the file it links to, and the seed tar's links are 0644."""
    import subprocess

    from stowd.engine.seed import busybox_binary, busybox_rootfs_tar

    binary = busybox_binary()
    assert binary, "busybox-static must be installed"
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.tar"
        with open(raw, "wb") as f:
            busybox_rootfs_tar(binary, f)
        root = Path(tmp) / "root"
        root.mkdir()
        subprocess.run(["tar", "-xf", str(raw), "-C", str(root)], check=True)
        return subprocess.run(["tar", "-cf", "-", "-C", str(root), "."], check=True,
                              capture_output=True).stdout


def measure_all(api: Api, bodies: dict[str, bytes], n: int, name: str) -> dict[str, Any]:
    return {kind: measure(api, body, n, f"{name} {kind}") for kind, body in bodies.items()}


def run_stowd(bodies: dict[str, bytes], n: int) -> dict[str, Any]:
    from tests.daemon import Daemon

    class BenchDaemon(Daemon):
        watch_blocking = False

    d = BenchDaemon()
    try:
        d.start()
        d.import_busybox(IMAGE)
        api = Api(d.url, "1.41")
        try:
            return measure_all(api, bodies, n, "stowd")
        finally:
            api.close()
    finally:
        d.cleanup()


def run_dockerd(bodies: dict[str, bytes], n: int, host: str) -> dict[str, Any] | None:
    api = Api(host, "1.41")
    if not api.ping():
        log(f"no dockerd on {host}: skipped")
        return None
    repo, _, tag = IMAGE.partition(":")
    api.call("POST", "/images/create", raw=busybox_tar(), content_type="application/x-tar",
             params={"fromSrc": "-", "repo": repo, "tag": tag})
    base = api.json("GET", f"/images/{IMAGE}/json")["Id"]
    try:
        return measure_all(api, bodies, n, "dockerd")
    finally:
        remove_descendants(api, base)
        api.close()


def remove_descendants(api: Api, base: str) -> None:
    """Every image built on base in this run (the cold builds' steps stay in dockerd as
    dangling chains), deepest first (steps made in the same second have the same Created),
    then base's tag: nobody else's images."""
    images = api.json("GET", "/images/json", params={"all": "1"})
    parent = {i["Id"]: i.get("ParentId") or "" for i in images}

    def depth_on_base(image_id: str) -> int:
        """How many steps image_id is above base; 0 when it is not built on it."""
        seen: set[str] = set()
        depth = 0
        while image_id and image_id not in seen:
            if image_id == base:
                return depth
            seen.add(image_id)
            image_id = parent.get(image_id, "")
            depth += 1
        return 0

    depths = {i: depth_on_base(i) for i in parent if i != base}
    mine = sorted((i for i, d in depths.items() if d), key=lambda i: depths[i], reverse=True)
    # The base by its tag, not its ID: an identical busybox someone else tagged stays.
    for name, force in [*((i, "1") for i in mine), (IMAGE, "0")]:
        try:
            api.call("DELETE", f"/images/{name}", params={"force": force})
        except APIError as exc:
            if exc.status != 404:
                log(f"dockerd: removing {name[:19]}: {exc}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=5)
    p.add_argument("--no-dockerd", action="store_true")
    p.add_argument("--dockerd-host", default="unix:///var/run/docker.sock")
    p.add_argument("--out", type=Path)
    a = p.parse_args()
    bodies = {"6 steps": context_tar(), "21 config steps": context_tar(CONFIG_STEPS)}
    doc: dict[str, Any] = {"stowd": run_stowd(bodies, a.n)}
    if not a.no_dockerd:
        doc["dockerd"] = run_dockerd(bodies, a.n, a.dockerd_host)
    print(f"{'build (median ms)':<28}{'stowd':>10}{'dockerd':>10}{'ratio':>8}")
    for dockerfile in bodies:
        for kind in ("cold", "cached"):
            s = doc["stowd"][dockerfile][kind]["median"]
            d = (doc.get("dockerd") or {}).get(dockerfile, {}).get(kind, {}).get("median")
            ratio = f"{s / d:.2f}" if d else "-"
            label = f"{dockerfile}, {kind}"
            print(f"{label:<28}{s:>10.0f}{(f'{d:.0f}' if d else '-'):>10}{ratio:>8}")
    if a.out:
        a.out.write_text(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
