#!/usr/bin/env python3
"""What networking adds to a container's start: stowd beside dockerd, and CNI beside stowd.

    .venv/bin/python bench/network.py [--n 30] [--out bench/results/network.json]
    .venv/bin/python bench/network.py --no-dockerd --no-cni --n 10      # quick

engines (stowd: its own daemon from tests/daemon.py, as bench/lifecycle.py starts it;
dockerd: /var/run/docker.sock when it answers). Per iteration, in rotating order, one
container of each kind is created (untimed), started (timed: POST /start until it answers)
and removed with force (timed):

  host      NetworkMode host: no namespace work at all, the baseline
  none      a namespace with loopback only
  bridge    the default bridge: namespace, veth, address
  port      the default bridge with one published port (HostPort "": ephemeral)
  usernet   a user-defined network (adds the embedded DNS server)

"added by a published port" is median(port) − median(bridge); "added by the bridge" is
median(bridge) − median(host).

setup (--no-cni skips it): the same endpoint made outside any daemon, on a bridge and
subnet of the bench's own, (a) by the CNI plugins Debian ships (bridge + host-local +
portmap + firewall + loopback, each an exec) and (b) by stowd's own adapters (netns.py,
links.py, iptables.py): what each approach costs per container, with and without a port.
CNI creates its CNI-* chains, which the bench removes at the end; nothing else of the host
is touched.

Progress goes to stderr, the table to stdout, every sample to --out (JSON).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
for p in (str(REPO), str(BENCH)):
    if p not in sys.path:
        sys.path.insert(0, p)

from lifecycle import (  # noqa: E402
    DOCKERD_HOST,
    HARNESS_LABEL,
    RUN_LABEL,
    Api,
    APIError,
    dockerd_ready,
    fmt,
    log,
    machine_info,
    own_stowd,
    source_info,
    summarize,
    wait_quiet,
)

KINDS = ("host", "none", "bridge", "port", "usernet")
CNI_PATH = "/usr/lib/cni"


# engines ---------------------------------------------------------------------------------------


def _body(kind: str, image: str, labels: dict[str, str], usernet: str) -> dict[str, Any]:
    hc: dict[str, Any] = {}
    body: dict[str, Any] = {"Image": image, "Cmd": ["sleep", "600"], "Labels": labels,
                            "HostConfig": hc}
    if kind == "host":
        hc["NetworkMode"] = "host"
    elif kind == "none":
        hc["NetworkMode"] = "none"
    elif kind == "port":
        body["ExposedPorts"] = {"80/tcp": {}}
        hc["PortBindings"] = {"80/tcp": [{"HostIp": "", "HostPort": ""}]}
    elif kind == "usernet":
        hc["NetworkMode"] = usernet
    return body


def measure_engine(name: str, host: str, a: argparse.Namespace, run_id: str) -> dict[str, Any]:
    api = Api(host, a.api_version)
    labels = {HARNESS_LABEL: "1", RUN_LABEL: run_id}
    usernet = f"bench-net-{run_id}"
    starts: dict[str, list[float]] = {k: [] for k in KINDS}
    removes: dict[str, list[float]] = {k: [] for k in KINDS}
    errors: list[str] = []
    created: list[str] = []
    try:
        api.json("POST", "/networks/create", {"Name": usernet, "CheckDuplicate": True,
                                              "Labels": labels})
        waited, busy = wait_quiet(a.quiet_threshold, a.quiet_max_wait)
        log(f"[{name}] {a.warmup} warm-ups, then {a.n} iterations of {', '.join(KINDS)}")
        for i in range(a.warmup + a.n):
            order = KINDS[i % len(KINDS):] + KINDS[:i % len(KINDS)]
            for kind in order:
                cid = api.json("POST", "/containers/create",
                               _body(kind, a.image, labels, usernet))["Id"]
                created.append(cid)
                t0 = time.perf_counter()
                api.call("POST", f"/containers/{cid}/start")
                t1 = time.perf_counter()
                api.call("DELETE", f"/containers/{cid}", params={"force": "1"})
                t2 = time.perf_counter()
                created.remove(cid)
                if i >= a.warmup:
                    starts[kind].append((t1 - t0) * 1000)
                    removes[kind].append((t2 - t1) * 1000)
    except (APIError, OSError) as exc:
        errors.append(str(exc))
        log(f"[{name}] error: {exc}")
    finally:
        for cid in created:
            with contextlib.suppress(APIError, OSError):
                api.call("DELETE", f"/containers/{cid}", params={"force": "1"})
        with contextlib.suppress(APIError, OSError):
            api.call("DELETE", f"/networks/{usernet}")
        api.close()
    results = {f"start.{k}": summarize(v, "ms") for k, v in starts.items()}
    results.update({f"remove.{k}": summarize(v, "ms") for k, v in removes.items()})
    return {"host": host, "results": results, "errors": errors,
            "meta": {"quiet_wait_s": waited if not errors else None, "busy_before": busy}
            if not errors else {}}


# setup work outside any daemon: CNI plugins and stowd's adapters ---------------------------------


def _cni_conf(bridge: str, subnet: str, data_dir: str, admin_chain: str) -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": f"bench-{bridge}", "plugins": [
        {"type": "bridge", "bridge": bridge, "isGateway": True, "ipMasq": True,
         "hairpinMode": True,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]],
                  "routes": [{"dst": "0.0.0.0/0"}], "dataDir": data_dir}},
        {"type": "portmap", "capabilities": {"portMappings": True}},
        {"type": "firewall", "backend": "iptables", "iptablesAdminChainName": admin_chain},
    ]}


def _cni(conf: dict[str, Any], plugin: dict[str, Any], command: str, netns: str, cid: str,
         ifname: str, prev: Any, port_maps: list[dict[str, Any]]) -> Any:
    cfg = dict(plugin, cniVersion=conf["cniVersion"], name=conf["name"])
    if prev is not None:
        cfg["prevResult"] = prev
    if plugin["type"] == "portmap":
        cfg["runtimeConfig"] = {"portMappings": port_maps}
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": cid, "CNI_NETNS": netns,
           "CNI_IFNAME": ifname, "CNI_PATH": CNI_PATH, "PATH": os.environ.get("PATH", "")}
    proc = subprocess.run([f"{CNI_PATH}/{plugin['type']}"], input=json.dumps(cfg).encode(),
                          env=env, capture_output=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"CNI {plugin['type']} {command}: {proc.stdout!r} {proc.stderr!r}")
    return json.loads(proc.stdout) if proc.stdout.strip() else prev


def _cni_cycle(conf: dict[str, Any], netns: str, cid: str, port: int | None
               ) -> tuple[float, float]:
    maps = [{"hostPort": port, "containerPort": 80, "protocol": "tcp"}] if port else []
    loop = {"cniVersion": conf["cniVersion"], "name": "lo", "type": "loopback"}
    t0 = time.perf_counter()
    prev = None
    for plugin in conf["plugins"]:
        prev = _cni(conf, plugin, "ADD", netns, cid, "eth0", prev, maps)
    _cni({"cniVersion": conf["cniVersion"], "name": "lo"}, loop, "ADD", netns, cid, "lo", None,
         [])
    t1 = time.perf_counter()
    for plugin in reversed(conf["plugins"]):
        _cni(conf, plugin, "DEL", netns, cid, "eth0", prev, maps)
    t2 = time.perf_counter()
    return (t1 - t0) * 1000, (t2 - t1) * 1000


def _remove_cni_chains() -> None:
    """The chains the CNI plugins create (shared names, CNI-*), and the jumps to them."""
    for table in ("filter", "nat"):
        rules = subprocess.run(["iptables", "-w", "-t", table, "-S"], capture_output=True,
                               text=True, check=False).stdout.splitlines()
        chains = [r.split()[1] for r in rules if r.startswith("-N CNI-")]
        lines = ["-D" + r[2:] for r in rules if r.startswith("-A ")
                 and not r.split()[1].startswith("CNI-") and r.split()[-1] in chains]
        lines += [f"-F {c}" for c in chains] + [f"-X {c}" for c in chains]
        if lines:
            subprocess.run(["iptables-restore", "-w", "--noflush"], capture_output=True,
                           text=True, input=f"*{table}\n" + "\n".join(lines) + "\nCOMMIT\n",
                           check=False)


@contextlib.contextmanager
def _scratch(prefix: str) -> Iterator[tuple[str, str, Path]]:
    from tests.daemon import test_network

    bridge, subnet, _, _ = test_network()
    root = Path(f"/tmp/stowd-netbench-{secrets.token_hex(4)}")
    root.mkdir()
    try:
        yield bridge, subnet, root
    finally:
        subprocess.run(["ip", "link", "del", bridge], capture_output=True, check=False)
        subprocess.run(["rm", "-rf", str(root)], check=False)


def measure_setup(a: argparse.Namespace) -> dict[str, Any]:
    """Per-endpoint setup/teardown: the CNI plugin chain against stowd's own adapters."""
    from stowd.engine.network import ipam, links, netns, ports
    from stowd.engine.network.iptables import Firewall

    results: dict[str, Any] = {}

    def cycles(label: str, fn: Callable[[int, bool], tuple[float, float]]) -> None:
        for with_port in (False, True):
            adds, dels = [], []
            for i in range(a.warmup + a.n_setup):
                add, rem = fn(i, with_port)
                if i >= a.warmup:
                    adds.append(add)
                    dels.append(rem)
            key = f"{label}.{'port' if with_port else 'noport'}"
            results[f"{key}.setup"] = summarize(adds, "ms")
            results[f"{key}.teardown"] = summarize(dels, "ms")
            log(f"[setup] {key}: setup {fmt(results[f'{key}.setup'].get('median'))} ms")

    # stowd's adapters
    with _scratch("stb") as (bridge, subnet, root):
        prefix = "STB" + secrets.token_hex(3).upper()
        fw = Firewall(prefix)
        pool = ipam.Pool.of(subnet)
        try:
            fw.ensure_base()
            links.ensure_forwarding()
            links.ensure_bridge(bridge, str(pool.gateway), pool.subnet.prefixlen)
            fw.ensure_network(bridge, subnet, internal=False)

            def stowd_cycle(i: int, with_port: bool) -> tuple[float, float]:
                cid = f"bench{i:06d}"
                path = str(root / cid)
                t0 = time.perf_counter()
                ip = pool.allocate()
                netns.create(path)
                links.add_endpoint(path, bridge, f"vb{secrets.token_hex(6)}", "eth0", str(ip),
                                   pool.subnet.prefixlen, ipam.mac_for(ip), str(pool.gateway))
                held: list[ports.Binding] = []
                rules: list[str] = []
                if with_port:
                    held = ports.reserve([ports.PortRequest("tcp", 80, "", 0, 0)],
                                         lambda *_: False, cid)
                    rules = fw.port_rules(cid, str(ip), held)
                    fw.add_ports(cid, str(ip), held)
                t1 = time.perf_counter()
                if rules:
                    fw.remove_ports(cid, rules)
                ports.close_all(held)
                for port in links.bridge_ports(bridge):
                    links.delete_link(port)
                netns.delete(path)
                pool.release(str(ip))
                t2 = time.perf_counter()
                return (t1 - t0) * 1000, (t2 - t1) * 1000

            cycles("stowd", stowd_cycle)
        finally:
            fw.remove_all()

    # CNI plugins
    if not all(os.path.exists(f"{CNI_PATH}/{p}") for p in ("bridge", "portmap", "firewall")):
        results["cni_skipped"] = f"no CNI plugins in {CNI_PATH}"
        return results
    with _scratch("cnb") as (bridge, subnet, root):
        conf = _cni_conf(bridge, subnet, str(root / "ipam"), "CNI-BENCH-ADMIN")
        try:
            def cni_cycle(i: int, with_port: bool) -> tuple[float, float]:
                path = str(root / f"ns{i}")
                netns.create(path)
                try:
                    port = None
                    if with_port:
                        [b] = ports.reserve([ports.PortRequest("tcp", 80, "", 0, 0)],
                                            lambda *_: False, "cni")
                        port = b.host_port
                        b.close()
                    return _cni_cycle(conf, path, f"bench{i}", port)
                finally:
                    netns.delete(path)

            cycles("cni", cni_cycle)
        finally:
            _remove_cni_chains()
    return results


# output ----------------------------------------------------------------------------------------


def _median(doc: dict[str, Any], engine: str, key: str) -> float | None:
    r = doc["engines"].get(engine, {}).get("results", {}).get(key) or {}
    return r.get("median")


def table(doc: dict[str, Any]) -> str:
    engines = list(doc["engines"])
    lines = ["| start (ms, median [min–max]) | " + " | ".join(engines) + " |",
             "|---|" + "---|" * len(engines)]
    for metric in ("start", "remove"):
        for kind in KINDS:
            cells = []
            for e in engines:
                r = doc["engines"][e]["results"].get(f"{metric}.{kind}") or {}
                cells.append(f"{fmt(r.get('median'))} [{fmt(r.get('min'))}–{fmt(r.get('max'))}]"
                             if r.get("n") else "–")
            lines.append(f"| {metric} {kind} | " + " | ".join(cells) + " |")
    for label, a, b in (("added by a published port (start port − bridge)", "port", "bridge"),
                        ("added by the bridge (start bridge − host)", "bridge", "host"),
                        ("added by a user network (start usernet − bridge)", "usernet",
                         "bridge")):
        cells = []
        for e in engines:
            x, y = _median(doc, e, f"start.{a}"), _median(doc, e, f"start.{b}")
            cells.append(fmt(x - y) if x is not None and y is not None else "–")
        lines.append(f"| **{label}** | " + " | ".join(cells) + " |")
    setup = doc.get("setup")
    if setup:
        lines += ["", "| per-endpoint work outside a daemon (ms, median) | setup | teardown |",
                  "|---|---|---|"]
        for key in ("stowd.noport", "stowd.port", "cni.noport", "cni.port"):
            s, t = setup.get(f"{key}.setup"), setup.get(f"{key}.teardown")
            if s:
                lines.append(f"| {key} | {fmt(s.get('median'))} | {fmt(t.get('median'))} |")
        if setup.get("cni_skipped"):
            lines.append(f"| cni | skipped: {setup['cni_skipped']} | |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=30, help="iterations per kind (default 30)")
    p.add_argument("--warmup", type=int, default=3, help="unmeasured warm-ups (default 3)")
    p.add_argument("--n-setup", type=int, default=30,
                   help="endpoint setups per approach in the setup section (default 30)")
    p.add_argument("--out", help="write all samples and metadata here (JSON)")
    p.add_argument("--image", default="busybox")
    p.add_argument("--api-version", default="1.41")
    p.add_argument("--dockerd-host", default=DOCKERD_HOST)
    p.add_argument("--no-dockerd", action="store_true", help="do not measure dockerd")
    p.add_argument("--no-cni", action="store_true", help="skip the setup section")
    p.add_argument("--tmp-dir", default="/tmp")
    p.add_argument("--daemon-log-level", default="info")
    p.add_argument("--quiet-threshold", type=float, default=0.2)
    p.add_argument("--quiet-max-wait", type=float, default=30.0)
    p.add_argument("--docker", default="docker")
    a = p.parse_args(argv)
    a.no_trace = True
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    run_id = secrets.token_hex(6)
    doc: dict[str, Any] = {"run_id": run_id, "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                           "machine": machine_info(a.docker), "stowd_source": source_info(),
                           "engines": {}}
    status = 0
    try:
        with own_stowd(a) as (url, _pid, _trace):
            doc["engines"]["stowd"] = measure_engine("stowd", url, a, run_id)
        if not a.no_dockerd:
            reason = dockerd_ready(a)
            if reason:
                log(f"dockerd skipped: {reason}")
                doc["dockerd_skipped"] = reason
            else:
                doc["engines"]["dockerd"] = measure_engine("dockerd", a.dockerd_host, a, run_id)
        if not a.no_cni:
            doc["setup"] = measure_setup(a)
    except KeyboardInterrupt:
        log("interrupted; partial results follow")
        status = 130
    print(table(doc))
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(doc, indent=1))
        log(f"wrote {a.out}")
    if any(e["errors"] for e in doc["engines"].values()):
        status = status or 1
    return status


if __name__ == "__main__":
    sys.exit(main())
