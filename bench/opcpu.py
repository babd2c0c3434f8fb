"""Daemon CPU per operation of a running stowd: /_ping, the container list (empty, then
with 100 containers, 50 running) and a create/start/wait/delete lifecycle (the daemon's
own CPU plus the children it reaped: runc start and delete, ip). CPU time moves much less
than wall time when other work shares the machine, so before/after comparisons use it.

    opcpu.py --socket /tmp/h11/s.sock --pid <daemon pid>     (prints one line of figures)
"""

import argparse
import http.client
import json
import os
import socket
import time


class UnixConn(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost")
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(self.path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--socket", required=True)
    p.add_argument("--pid", type=int, required=True, help="the daemon's PID")
    p.add_argument("--n", type=int, default=3000, help="requests per request figure")
    p.add_argument("--lifecycles", type=int, default=40)
    a = p.parse_args()
    conn = UnixConn(a.socket)

    def req(method: str, path: str, body: object = None) -> bytes:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=json.dumps(body) if body is not None else None,
                     headers=headers)
        res = conn.getresponse()
        data = res.read()
        assert res.status < 300, (path, res.status, data)
        return data

    def cpu() -> float:  # utime + stime + reaped children's, in seconds
        with open(f"/proc/{a.pid}/stat") as stat:
            f = stat.read().rsplit(")", 1)[1].split()
        return sum(int(x) for x in f[11:15]) / os.sysconf("SC_CLK_TCK")

    def per_request(path: str) -> float:
        for _ in range(100):
            req("GET", path)
        c0 = cpu()
        for _ in range(a.n):
            req("GET", path)
        return 1e6 * (cpu() - c0) / a.n

    out = {"ping_us": per_request("/_ping"),
           "list_empty_us": per_request("/v1.41/containers/json?all=1")}
    walls = []
    c0 = 0.0
    for i in range(3 + a.lifecycles):
        if i == 3:
            c0 = cpu()
        t = time.perf_counter()
        cid = json.loads(req("POST", "/v1.41/containers/create",
                             {"Image": "busybox", "Cmd": ["true"]}))["Id"]
        req("POST", f"/v1.41/containers/{cid}/start")
        req("POST", f"/v1.41/containers/{cid}/wait")
        req("DELETE", f"/v1.41/containers/{cid}")
        if i >= 3:
            walls.append(time.perf_counter() - t)
    out["lifecycle_ms"] = 1e3 * (cpu() - c0) / a.lifecycles
    out["lifecycle_wall_ms"] = 1e3 * sorted(walls)[len(walls) // 2]
    ids = []
    for i in range(100):
        cid = json.loads(req("POST", "/v1.41/containers/create",
                             {"Image": "busybox", "Cmd": ["sleep", "3600"]}))["Id"]
        ids.append(cid)
        if i < 50:
            req("POST", f"/v1.41/containers/{cid}/start")
    out["list_100_us"] = per_request("/v1.41/containers/json?all=1")
    for cid in ids:
        req("DELETE", f"/v1.41/containers/{cid}?force=1")
    print(" ".join(f"{k}={v:.1f}" for k, v in out.items()))


if __name__ == "__main__":
    main()
