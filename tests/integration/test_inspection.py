"""Looking inside containers through docker-py and the CLI: stats, diff, export, cp, top, df."""

import io
import os
import re
import socket
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import docker
import pytest
from docker.errors import APIError, NotFound

from tests.daemon import Daemon
from tests.integration.conftest import Cli
from tests.waits import result_of, until, url

MIB = 2**20
_UNITS = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "kB": 1e3, "MB": 1e6, "GB": 1e9}


def _size(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)\s*([A-Za-z]+)", text.strip())
    assert m, text
    return float(m.group(1)) * _UNITS[m.group(2)]


def _stats_rows(cli: Cli, *names: str) -> dict[str, dict[str, str]]:
    fmt = "{{.Name}}|{{.CPUPerc}}|{{.MemUsage}}|{{.NetIO}}|{{.BlockIO}}|{{.PIDs}}"
    out = cli("stats", "--no-stream", "--format", fmt, *names).stdout
    rows = {}
    for line in out.splitlines():
        name, cpu, mem, net, block, pids = line.split("|")
        used, limit = mem.split(" / ")
        rows[name] = {"cpu": cpu.rstrip("%"), "mem": used, "limit": limit, "net": net,
                      "block": block, "pids": pids}
    return rows


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def _wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    until(predicate, timeout, every=0.1)


# --- stats ------------------------------------------------------------------------------------


def test_stats_figures_are_true(client: docker.DockerClient, cli: Cli) -> None:
    """docker stats --no-stream: a core-burner near 100 %, 100 MB held shown as ~100 MiB,
    the -m limit or the host's memory as MEM LIMIT, the process count as PIDS."""
    burn = client.containers.run("busybox", ["sh", "-c", "while :; do :; done"],
                                 name="st-burn", detach=True)
    mem = client.containers.run("busybox", ["sh", "-c", "head -c 100m /dev/zero | tail | "
                                            "sleep 1000"], name="st-mem", detach=True)
    client.containers.run("busybox", ["sleep", "1000"], name="st-limit", detach=True,
                          mem_limit="300m")
    _wait_for(lambda: len(mem.top()["Processes"]) == 3 and _stats_rows(cli, "st-mem")["st-mem"]
              ["mem"].endswith("MiB") and _size(_stats_rows(cli, "st-mem")["st-mem"]["mem"])
              > 99 * MIB)
    # The truth beside the figure: the burner's own CPU time (/proc/<pid>/stat) over the
    # time the CLI took. On an idle host it is 100 %; other work on a small host can take
    # time from the burner, and then both are lower.
    burn.reload()
    pid = burn.attrs["State"]["Pid"]
    before, t0 = _cpu_ticks(pid), time.monotonic()
    rows = _stats_rows(cli, "st-burn", "st-mem", "st-limit")
    truth = (_cpu_ticks(pid) - before) / os.sysconf("SC_CLK_TCK") / (time.monotonic() - t0)
    assert abs(float(rows["st-burn"]["cpu"]) - truth * 100) <= 15, (rows["st-burn"], truth)
    if truth > 0.95:
        assert float(rows["st-burn"]["cpu"]) >= 85
    assert 99 * MIB <= _size(rows["st-mem"]["mem"]) <= 110 * MIB, rows["st-mem"]
    assert rows["st-mem"]["pids"] == "3"
    assert float(rows["st-mem"]["cpu"]) < 15
    assert rows["st-limit"]["limit"] == "300MiB"
    host_mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert abs(_size(rows["st-burn"]["limit"]) - host_mem) < 0.01 * host_mem


def test_stats_json_shape_and_modes(client: docker.DockerClient, api: docker.APIClient) -> None:
    c = client.containers.run("busybox", ["sleep", "1000"], detach=True)
    started = time.monotonic()
    body = api.stats(c.id, stream=False)  # no one-shot: precpu is a real earlier sample
    assert time.monotonic() - started < 2.5
    for key in ("read", "preread", "pids_stats", "blkio_stats", "num_procs", "storage_stats",
                "cpu_stats", "precpu_stats", "memory_stats", "name", "id"):
        assert key in body, key
    assert body["name"] == "/" + c.name and body["id"] == c.id
    cpu, pre = body["cpu_stats"], body["precpu_stats"]
    assert pre["system_cpu_usage"] < cpu["system_cpu_usage"]
    assert body["preread"] < body["read"]
    assert cpu["online_cpus"] == os.cpu_count()
    assert set(cpu["cpu_usage"]) >= {"total_usage", "usage_in_kernelmode", "usage_in_usermode"}
    assert set(cpu["throttling_data"]) == {"periods", "throttled_periods", "throttled_time"}
    assert body["memory_stats"]["usage"] > 0 and body["memory_stats"]["limit"] > 0
    v1 = not Path("/sys/fs/cgroup/cgroup.controllers").exists()
    assert ("total_inactive_file" if v1 else "inactive_file") in body["memory_stats"]["stats"]
    assert body["pids_stats"]["current"] == 1

    one = api.stats(c.id, stream=False, one_shot=True)
    assert one["preread"] == "0001-01-01T00:00:00Z"
    assert one["precpu_stats"]["cpu_usage"]["total_usage"] == 0

    frames = []
    started = time.monotonic()
    for frame in api.stats(c.id, stream=True, decode=True):
        frames.append((time.monotonic() - started, frame))
        if len(frames) == 3:
            break
    assert frames[0][0] < 0.5  # the first sample comes at once
    assert 1.5 <= frames[2][0] <= 3.0  # then one a second
    assert frames[2][1]["precpu_stats"] == frames[1][1]["cpu_stats"]

    c.stop(timeout=0)
    empty = api.stats(c.id, stream=False)
    assert empty["read"] == "0001-01-01T00:00:00Z" and empty["memory_stats"] == {}
    assert empty["blkio_stats"]["io_service_bytes_recursive"] is None
    with pytest.raises(APIError) as err:
        result_of(api.get(url(api, f"/containers/{c.id}/stats"),
                             params={"stream": "1", "one-shot": "1"}))
    assert err.value.status_code == 400


def _blkio_throttle(daemon: Daemon, cid: str) -> None:
    """cgroup v1 kernels of this age count block I/O only for devices with a throttle rule:
    give the data-root's device a limit nobody reaches (dockerd shows 0 B otherwise too)."""
    cg = Path("/sys/fs/cgroup/blkio") / daemon.cgroup_parent / cid
    dev = os.stat(daemon.data_root).st_dev
    (cg / "blkio.throttle.write_bps_device").write_text(
        f"{os.major(dev)}:{os.minor(dev)} 1000000000000\n")


def test_net_and_block_io_grow(client: docker.DockerClient, cli: Cli, daemon: Daemon) -> None:
    c = client.containers.run("busybox", ["sleep", "1000"], detach=True)
    before = _stats_rows(cli, c.name)[c.name]
    gateway = c.attrs["NetworkSettings"].get("Gateway") or ""
    if not Path("/sys/fs/cgroup/cgroup.controllers").exists():
        _blkio_throttle(daemon, c.id)
    if gateway:
        assert c.exec_run(["ping", "-c", "3", "-s", "1000", "-W", "1", gateway]).exit_code == 0
    assert c.exec_run(["dd", "if=/dev/zero", "of=/blk", "bs=1M", "count=8",
                       "oflag=direct"]).exit_code == 0
    after = _stats_rows(cli, c.name)[c.name]
    written = _size(after["block"].split(" / ")[1])
    assert written >= 8 * MIB, after
    if gateway:
        rx_before, tx_before = (_size(x) for x in before["net"].split(" / "))
        rx, tx = (_size(x) for x in after["net"].split(" / "))
        assert tx >= tx_before + 3000 and rx >= rx_before + 3000, (before, after)


def test_live_stats_keeps_refreshing_without_leaking(client: docker.DockerClient,
                                                     daemon: Daemon) -> None:
    c = client.containers.run("busybox", ["sleep", "1000"], detach=True)
    assert daemon.proc is not None
    fds = Path(f"/proc/{daemon.proc.pid}/fd")
    baseline = len(list(fds.iterdir()))
    for _ in range(3):
        s = socket.socket(socket.AF_UNIX)
        s.connect(str(daemon.socket))
        s.sendall(f"GET /v1.41/containers/{c.id}/stats HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        while data.count(b'"read"') < 2:
            chunk = s.recv(65536)
            assert chunk
            data += chunk
        assert data.startswith(b"HTTP/1.1 200")
        s.close()
    _wait_for(lambda: len(list(fds.iterdir())) <= baseline, timeout=5)


# --- changes ----------------------------------------------------------------------------------


def _diff(cli: Cli, name: str) -> set[str]:
    return set(cli("diff", name).stdout.splitlines())


def test_diff_matches_dockerd(client: docker.DockerClient, cli: Cli) -> None:
    """The same actions as on dockerd 20.10 (overlay2, busybox-static image), same answers."""
    def run(name: str, script: str) -> None:
        cli("run", "--name", name, "busybox", "sh", "-c", script)

    run("df-rm", "rm /bin/ls")
    assert _diff(cli, "df-rm") == {"C /bin", "D /bin/ls"}
    run("df-opaque", "rm -rf /home /usr; mkdir /usr; echo hi > /usr/f; mkdir /usr/bin")
    assert _diff(cli, "df-opaque") == {"C /usr", "A /usr/f", "D /home"}
    run("df-mix", "echo > /newfile; mkdir -p /a/b; echo > /a/b/c; ln -s /etc/passwd /lnk; "
                  "mv /bin/cat /bin/cat2; echo x >> /etc/passwd; touch /etc/group; "
                  "mkdir /tmp/x; touch /root; chmod 700 /var; echo > /tmp/x/y")
    assert _diff(cli, "df-mix") == {
        "C /tmp", "A /tmp/x", "A /tmp/x/y", "C /etc", "C /etc/group", "C /etc/passwd",
        "A /lnk", "A /newfile", "C /var", "A /a", "A /a/b", "A /a/b/c", "C /bin",
        "A /bin/cat2", "D /bin/cat"}
    run("df-none", "true")
    assert _diff(cli, "df-none") == set()
    assert client.api.diff("df-none") is None  # dockerd answers null
    run("df-mv", "mv /usr /usr2; mv /etc/group /etc/group2; rm /etc/passwd; "
                 "echo > /etc/passwd")
    assert _diff(cli, "df-mv") == {"A /usr2", "A /usr2/bin", "C /etc", "A /etc/group2",
                                   "C /etc/passwd", "D /etc/group", "D /usr"}
    run("df-special", "touch /bin/busybox; ln /bin/busybox /hl; mkfifo /fifo; "
                      "mknod /dev2 c 1 3; rm -rf /tmp; mkdir /tmp; touch /tmp/q")
    assert _diff(cli, "df-special") == {"A /dev2", "A /fifo", "C /tmp", "A /tmp/q", "C /bin",
                                        "C /bin/busybox", "A /hl"}


def test_diff_of_a_running_container(client: docker.DockerClient) -> None:
    c = client.containers.run("busybox", ["sleep", "1000"], detach=True)
    assert c.diff() is None or c.diff() == []  # the init layer hides /etc/hosts & co
    c.exec_run(["sh", "-c", "rm -rf /etc; mkdir -p /etc/new; echo > /etc/new/f"])
    found = {(ch["Path"], ch["Kind"]) for ch in c.diff()}
    assert ("/etc/passwd", 2) in found and ("/etc/new", 1) in found
    assert ("/etc/new/f", 1) in found and ("/etc", 0) in found


# --- export -----------------------------------------------------------------------------------


def test_export_import_round_trip(client: docker.DockerClient, api: docker.APIClient,
                                  cli: Cli, tmp_path: Path) -> None:
    c = client.containers.run("busybox", ["sh", "-c", "mkdir -p /data/d; echo hello > /data/f; "
                                          "ln -s /data/f /data/l; ln /data/f /data/h; "
                                          "chown 1234:5678 /data/f; chmod 640 /data/f; "
                                          "mknod /data/null c 1 3; rm /bin/ls"], detach=True)
    c.wait()
    since = time.time() - 1
    out = tmp_path / "c.tar"
    cli("export", "-o", str(out), c.name)
    events = list(client.events(decode=True, since=since, until=time.time() + 0.5,
                                filters={"event": "export", "container": c.id}))
    with tarfile.open(out) as t:
        members = {m.name: m for m in t}
    assert "data/f" in members and ".dockerenv" in members and "bin/" not in members
    assert not any(n.startswith("./") for n in members)
    f = members["data/f"]
    assert (f.uid, f.gid, f.mode) == (1234, 5678, 0o640)
    assert members["data/l"].issym() and members["data/l"].linkname == "/data/f"
    assert members["data/h"].islnk() and members["data/h"].linkname == "data/f"
    assert members["data/null"].ischr() and members["data/null"].devmajor == 1
    assert "bin/ls" not in members and "bin/busybox" in members  # a flattened view
    assert [e["Action"] for e in events] == ["export"]

    image = api.import_image(str(out), repository="exported", tag="t")
    assert image
    listing = "ls -ln /data; cat /data/f; ls /bin | wc -l"
    old = client.containers.run("busybox", ["sh", "-c", listing], volumes_from=None, remove=True)
    new = client.containers.run("exported:t", ["sh", "-c", listing], remove=True)
    # the same files, less the /bin/ls the container removed
    assert b"hello" in new and int(new.split(b"\n")[-2]) == int(old.split(b"\n")[-2]) - 1
    assert b"1234     5678" in new and b"crw" in new and b"-> /data/f" in new
    client.images.remove("exported:t")


def test_export_of_a_running_container_and_errors(client: docker.DockerClient,
                                                  api: docker.APIClient) -> None:
    c = client.containers.run("busybox", ["sh", "-c", "echo live > /live; sleep 1000"],
                              detach=True)
    _wait_for(lambda: c.exec_run(["cat", "/live"]).output == b"live\n")
    data = b"".join(c.export())
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        assert t.extractfile("live").read() == b"live\n"  # type: ignore[union-attr]
    with pytest.raises(NotFound):
        b"".join(api.export("no-such-container"))


# --- docker cp --------------------------------------------------------------------------------


def test_cp_both_ways(client: docker.DockerClient, cli: Cli, tmp_path: Path) -> None:
    c = client.containers.run("busybox", ["sh", "-c", "mkdir -p /srv/a; echo 1 > /srv/a/one; "
                                          "ln -s /srv/a /srv/link; sleep 1000"], detach=True)
    _wait_for(lambda: c.exec_run(["cat", "/srv/a/one"]).exit_code == 0)
    cli("cp", f"{c.name}:/srv/a", str(tmp_path / "out"))
    assert (tmp_path / "out" / "one").read_text() == "1\n"
    cli("cp", f"{c.name}:/etc/hostname", str(tmp_path / "hostname"))
    assert (tmp_path / "hostname").read_text().strip() == c.id[:12]  # the real file
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "x").write_text("x")
    os.chown(tmp_path / "in" / "x", 4242, 4343)
    cli("cp", str(tmp_path / "in"), f"{c.name}:/srv/link/")  # through the symlink
    assert c.exec_run(["stat", "-c", "%u:%g %s", "/srv/a/in/x"]).output == b"4242:4343 1\n"
    c.stop(timeout=0)
    cli("cp", str(tmp_path / "hostname"), f"{c.name}:/stopped-copy")
    cli("cp", f"{c.name}:/stopped-copy", str(tmp_path / "back"))
    assert (tmp_path / "back").read_text() == (tmp_path / "hostname").read_text()
    missing = cli("cp", f"{c.name}:/nope", str(tmp_path / "x"), check=False)
    assert missing.returncode != 0
    assert f"Could not find the file /nope in container {c.name}" in missing.stderr
    assert not Path(c.attrs["GraphDriver"]["Data"]["MergedDir"]).is_mount()  # unmounted


def test_archive_stat_header(client: docker.DockerClient, api: docker.APIClient) -> None:
    c = client.containers.run("busybox", ["sh", "-c", "ln -s /etc/passwd /l"], detach=True)
    c.wait()
    _, st = api.get_archive(c.id, "/l")
    assert st["name"] == "l" and st["linkTarget"] == "/etc/passwd"
    assert st["mode"] == (1 << 27) | 0o777
    assert api.get_archive(c.id, "/etc/.")[1]["name"] == "."
    with pytest.raises(NotFound):
        api.get_archive(c.id, "/missing")


def _tar(*members: tuple[str, str, str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for kind, name, data in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(data)
                t.addfile(info, io.BytesIO(data.encode()))
            else:
                info.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
                info.linkname = data
                t.addfile(info)
    return buf.getvalue()


@pytest.mark.parametrize("state", ["running", "stopped"])
def test_cp_escapes_are_confined(client: docker.DockerClient, api: docker.APIClient,
                                 state: str, tmp_path: Path) -> None:
    c = client.containers.run("busybox", ["sleep", "1000"], detach=True)
    if state == "stopped":
        c.stop(timeout=0)
    host_dir = tmp_path / "victim"
    host_dir.mkdir()
    marker = f"stowd-escape-{os.getpid()}-{state}"
    # ../../ to the container's root stays in it
    assert api.put_archive(c.id, "/", _tar(("file", f"../../../../tmp/{marker}", "x")))
    assert not Path(f"/tmp/{marker}").exists()
    # an absolute symlink, then a file through it
    assert api.put_archive(c.id, "/", _tar(("symlink", "esc", str(host_dir)),
                                           ("file", "esc/pwned", "p")))
    assert not (host_dir / "pwned").exists()
    # a relative symlink climbing out, then a file through it
    assert api.put_archive(c.id, "/", _tar(("symlink", "up", "../../../../../../.."),
                                           ("file", f"up/tmp/{marker}-2", "p")))
    assert not Path(f"/tmp/{marker}-2").exists()
    # leaving the destination directory is refused with a clear 400
    with pytest.raises(APIError) as err:
        api.put_archive(c.id, "/tmp", _tar(("file", "../../etc/x", "x")))
    assert err.value.status_code == 400 and "outside" in str(err.value.explanation)
    with pytest.raises(APIError) as err:
        api.put_archive(c.id, "/tmp", _tar(("hardlink", "h", "../etc/passwd")))
    assert err.value.status_code == 400
    # what was written is where a chroot would have put it
    with tarfile.open(fileobj=io.BytesIO(b"".join(api.get_archive(c.id, "/tmp")[0]))) as t:
        files = set(t.getnames())
    assert f"tmp/{marker}" in files and f"tmp/{marker}-2" in files
    assert api.get_archive(c.id, str(host_dir) + "/pwned")[1]["size"] == 1
    with pytest.raises(NotFound):
        api.put_archive(c.id, "/no/such/dir", _tar(("file", "f", "f")))


def test_cp_no_overwrite_dir_non_dir(client: docker.DockerClient, api: docker.APIClient) -> None:
    c = client.containers.run("busybox", ["sleep", "1000"], detach=True)
    with pytest.raises(APIError) as err:
        result_of(api.put(
            url(api, f"/containers/{c.id}/archive"), data=_tar(("file", "tmp", "x")),
            params={"path": "/", "noOverwriteDirNonDir": "true"}))
    assert "cannot overwrite directory" in str(err.value.explanation)
    assert c.exec_run(["test", "-d", "/tmp"]).exit_code == 0


# --- top, size, df ----------------------------------------------------------------------------


def test_top_titles_and_rows(client: docker.DockerClient, api: docker.APIClient) -> None:
    c = client.containers.run("busybox", ["sh", "-c", "sleep 1000 & sleep 1001; true"],
                              detach=True)
    _wait_for(lambda: len(api.top(c.id)["Processes"]) == 3)
    top = api.top(c.id)
    assert top["Titles"] == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    assert sorted(p[-1] for p in top["Processes"]) == [
        "sh -c sleep 1000 & sleep 1001; true", "sleep 1000", "sleep 1001"]
    aux = api.top(c.id, ps_args="aux")
    assert aux["Titles"] == ["USER", "PID", "%CPU", "%MEM", "VSZ", "RSS", "TTY", "STAT",
                             "START", "TIME", "COMMAND"]
    assert len(aux["Processes"]) == 3 and all(len(p) == 11 for p in aux["Processes"])
    c.kill()
    c.wait()
    with pytest.raises(APIError) as err:
        api.top(c.id)
    assert err.value.status_code == 409


def test_sizes_and_system_df(client: docker.DockerClient, api: docker.APIClient,
                             cli: Cli) -> None:
    c = client.containers.run("busybox", ["sh", "-c", "head -c 100000 /dev/zero > /f; "
                                          "ln /f /g"], detach=True)
    c.wait()
    idle = client.containers.create("busybox", ["true"])
    image = client.images.get("busybox")
    info = result_of(api.get(url(api, f"/containers/{c.id}/json"), params={"size": 1}))
    assert info["SizeRw"] == 100000  # the hard link counts once
    assert info["SizeRootFs"] == 100000 + image.attrs["Size"]
    rows = {r["Id"]: r for r in api.containers(all=True, size=True)}
    assert rows[c.id]["SizeRw"] == 100000
    assert "SizeRw" not in rows[idle.id]  # zero is left out, as dockerd does
    df = api.df()
    assert df["LayersSize"] >= image.attrs["Size"]
    assert df["Volumes"] == [] and df["BuildCache"] == []
    mine = next(i for i in df["Images"] if i["Id"] == image.id)
    assert mine["Containers"] >= 2
    assert {r["Id"]: r.get("SizeRw", 0) for r in df["Containers"]}[c.id] == 100000
    out = cli("system", "df").stdout
    assert out.splitlines()[0].split() == ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]


def test_system_df_volumes(client: docker.DockerClient, api: docker.APIClient) -> None:
    vol = client.volumes.create("df-vol")
    try:
        client.containers.run("busybox", ["sh", "-c", "head -c 1000 /dev/zero > /v/f"],
                              volumes={"df-vol": {"bind": "/v", "mode": "rw"}}, remove=True)
        holder = client.containers.create("busybox", ["true"],
                                          volumes={"df-vol": {"bind": "/v", "mode": "rw"}})
        row = next(v for v in api.df()["Volumes"] if v["Name"] == "df-vol")
        assert row["UsageData"] == {"RefCount": 1, "Size": 1000}
        assert row["Driver"] == "local" and row["Mountpoint"]
        only = result_of(api.get(url(api, "/system/df"), params={"type": "volume"}))
        assert only["Containers"] == [] and any(v["Name"] == "df-vol" for v in only["Volumes"])
        holder.remove()
    finally:
        vol.remove(force=True)


def test_cp_archive_mode_takes_the_container_user(client: docker.DockerClient, cli: Cli,
                                                  tmp_path: Path) -> None:
    c = client.containers.run("busybox", ["sleep", "1000"], user="nobody", detach=True)
    f = tmp_path / "f"
    f.write_text("f")
    os.chown(f, 4242, 4343)
    cli("cp", str(f), f"{c.name}:/tmp/kept")
    cli("cp", "-a", str(f), f"{c.name}:/tmp/as-user")  # copyUIDGID: the container's user
    out = c.exec_run(["stat", "-c", "%u:%g", "/tmp/kept", "/tmp/as-user"]).output.split()
    assert out == [b"4242:4343", b"65534:65534"]


@pytest.mark.parametrize("state", ["running", "stopped"])
def test_cp_reaches_volumes_and_binds(client: docker.DockerClient, cli: Cli, state: str,
                                      tmp_path: Path) -> None:
    """As dockerd: cp reads and writes through the container's volumes and bind mounts."""
    host = tmp_path / "bound"
    host.mkdir()
    (host / "from-host").write_text("h")
    ro = tmp_path / "ro"
    ro.mkdir()
    vol = client.volumes.create(f"cpvol-{state}")
    try:
        c = client.containers.run(
            "busybox", ["sh", "-c", "echo v > /vol/in-volume; sleep 1000"], detach=True,
            volumes={vol.name: {"bind": "/vol", "mode": "rw"},
                     str(host): {"bind": "/bound", "mode": "rw"},
                     str(ro): {"bind": "/ro", "mode": "ro"}})
        _wait_for(lambda: c.exec_run(["cat", "/vol/in-volume"]).exit_code == 0)
        if state == "stopped":
            c.stop(timeout=0)
        cli("cp", f"{c.name}:/vol/in-volume", str(tmp_path / "v"))
        assert (tmp_path / "v").read_text() == "v\n"
        cli("cp", f"{c.name}:/bound/from-host", str(tmp_path / "b"))
        assert (tmp_path / "b").read_text() == "h"
        (tmp_path / "new").write_text("n")
        cli("cp", str(tmp_path / "new"), f"{c.name}:/bound/")
        assert (host / "new").read_text() == "n"  # in the bind's source, not the layer
        cli("cp", str(tmp_path / "new"), f"{c.name}:/vol/")
        ro_try = cli("cp", str(tmp_path / "new"), f"{c.name}:/ro/", check=False)
        assert ro_try.returncode != 0 and "read-only" in ro_try.stderr
        assert not (ro / "new").exists()
        assert not any(ch["Path"].startswith(("/bound/", "/vol/")) for ch in c.diff() or [])
        if state == "stopped":
            c.start()
        assert c.exec_run(["cat", "/vol/new"]).output == b"n"
        c.remove(force=True)
    finally:
        vol.remove(force=True)


def test_stats_networks_per_mode(client: docker.DockerClient, api: docker.APIClient) -> None:
    bridged = client.containers.run("busybox", ["sleep", "1000"], detach=True)
    host = client.containers.run("busybox", ["sleep", "1000"], detach=True, network_mode="host")
    none = client.containers.run("busybox", ["sleep", "1000"], detach=True, network_mode="none")
    nets = api.stats(bridged.id, stream=False, one_shot=True).get("networks") or {}
    assert "lo" not in nets
    if bridged.attrs["NetworkSettings"].get("IPAddress"):
        assert set(nets) == {"eth0"} and set(nets["eth0"]) == {
            "rx_bytes", "rx_packets", "rx_errors", "rx_dropped", "tx_bytes", "tx_packets",
            "tx_errors", "tx_dropped"}
    for c in (host, none):  # no interfaces of its own: dockerd leaves the key out
        assert "networks" not in api.stats(c.id, stream=False, one_shot=True)
