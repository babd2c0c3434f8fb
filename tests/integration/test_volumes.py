"""Volumes end to end, through docker-py and the docker CLI.

Expected shapes and messages are what dockerd 20.10 answered to the same calls (see
docs/api.md); prune scopes are API 1.42+'s (anonymous volumes only unless all=true).
"""

import io
import json
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from docker.errors import APIError, NotFound

from stowd.engine.seed import busybox_binary, busybox_rootfs_tar
from tests.daemon import Daemon
from tests.integration.conftest import Cli
from tests.waits import until, url

ANON = "com.docker.volume.anonymous"
IMAGE = "stowd-voltest:latest"


def _mounted(path: str | Path) -> bool:
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        return any(line.split()[4] == str(path) for line in f)


@pytest.fixture
def volumes(client: docker.DockerClient) -> Iterator[list[str]]:
    """Names to remove after the test (containers go first, through the client fixture)."""
    names: list[str] = []
    yield names
    for ctr in client.containers.list(all=True):
        ctr.remove(force=True)
    for name in names:
        try:
            client.volumes.get(name).remove(force=True)
        except NotFound:
            pass


@pytest.fixture(scope="module")
def volume_image(daemon: Daemon) -> Iterator[str]:
    """busybox plus /srv/app (owned 1000:1000, mode 0750, a 0600 file) declared a VOLUME."""
    binary = busybox_binary()
    assert binary
    buf = io.BytesIO()
    busybox_rootfs_tar(binary, buf)
    buf.seek(0)
    with tarfile.open(fileobj=buf, mode="a") as tar:
        for name, mode in (("srv", 0o755), ("srv/app", 0o750)):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, mode
            info.uid = info.gid = 1000 if name == "srv/app" else 0
            tar.addfile(info)
        data = b"from the image\n"
        info = tarfile.TarInfo("srv/app/config")
        info.size, info.mode, info.uid, info.gid = len(data), 0o600, 1000, 1000
        tar.addfile(info, io.BytesIO(data))
    api = docker.APIClient(base_url=daemon.url)
    repo, _, tag = IMAGE.partition(":")
    api.import_image_from_data(buf.getvalue(), repository=repo, tag=tag,
                               changes=["VOLUME /srv/app", 'CMD ["sh"]'])
    yield IMAGE
    for ctr in api.containers(all=True, filters={"ancestor": IMAGE}):
        api.remove_container(ctr["Id"], force=True, v=True)
    api.remove_image(IMAGE)
    api.close()


# --- the volume API -------------------------------------------------------------------------


def test_docker_py_volume_calls(client: docker.DockerClient, volumes: list[str],
                                daemon: Daemon) -> None:
    vol = client.volumes.create("vt-pycalls", driver="local", labels={"k": "v"})
    volumes.append(vol.name)
    assert vol.id == vol.name == "vt-pycalls"
    assert vol.attrs["Labels"] == {"k": "v"} and vol.attrs["Driver"] == "local"
    assert vol.attrs["Scope"] == "local" and vol.attrs["Options"] is None
    assert vol.attrs["Mountpoint"] == str(daemon.data_root / "volumes/vt-pycalls/_data")
    assert Path(vol.attrs["Mountpoint"]).is_dir()
    assert time.time() - time.mktime(time.strptime(vol.attrs["CreatedAt"],
                                                   "%Y-%m-%dT%H:%M:%SZ")) < 3600 * 24
    # Creating an existing name answers with the volume as it is.
    again = client.volumes.create("vt-pycalls", labels={"other": "x"})
    assert again.attrs == vol.attrs
    assert client.volumes.get("vt-pycalls").attrs == vol.attrs
    assert vol in client.volumes.list()
    assert vol in client.volumes.list(filters={"name": "pycall"})
    assert vol not in client.volumes.list(filters={"name": "nomatch"})
    assert vol in client.volumes.list(filters={"label": "k=v"})
    assert vol not in client.volumes.list(filters={"label": "k=w"})
    assert vol in client.volumes.list(filters={"dangling": True})
    raw = client.api.volumes()
    assert raw["Warnings"] == []
    vol.remove()
    with pytest.raises(NotFound) as exc:
        client.volumes.get("vt-pycalls")
    assert exc.value.explanation == "get vt-pycalls: no such volume"
    with pytest.raises(NotFound):
        client.api.remove_volume("vt-pycalls")
    # force: a missing volume is no error (docker-py drops its own force parameter)
    res = client.api.delete(url(client.api, "/volumes/vt-pycalls"), params={"force": 1})
    assert res.status_code == 204


def test_unnamed_volume_is_anonymous(client: docker.DockerClient, volumes: list[str]) -> None:
    vol = client.volumes.create()
    volumes.append(vol.name)
    assert len(vol.name) == 64 and int(vol.name, 16) >= 0
    assert vol.attrs["Labels"] == {ANON: ""}


@pytest.mark.parametrize("name,message", [
    ("a", "create a: volume name is too short, names should be at least two alphanumeric "
          "characters"),
    ("-bad", 'create -bad: "-bad" includes invalid characters for a local volume name, only '
             '"[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a host '
             "directory, use absolute path"),
    ("a/b", 'create a/b: "a/b" includes invalid characters'),
])
def test_bad_volume_names_are_400(client: docker.DockerClient, name: str, message: str) -> None:
    with pytest.raises(APIError) as exc:
        client.volumes.create(name)
    assert exc.value.status_code == 400
    assert message in exc.value.explanation


def test_driver_and_options_are_checked(client: docker.DockerClient) -> None:
    with pytest.raises(APIError) as exc:
        client.volumes.create("vt-drv", driver="this-plugin-does-not-exist")
    assert exc.value.status_code == 404
    assert 'plugin "this-plugin-does-not-exist" not found' in exc.value.explanation
    with pytest.raises(APIError) as exc:
        client.volumes.create("vt-drv", driver_opts={"bogus": "1"})
    assert exc.value.status_code == 400 and 'invalid option: "bogus"' in exc.value.explanation
    with pytest.raises(APIError) as exc:
        client.volumes.create("vt-drv", driver_opts={"o": "bind"})
    assert 'missing required option: "device"' in exc.value.explanation
    with pytest.raises(NotFound):
        client.volumes.get("vt-drv")


def test_cli_volume_commands(cli: Cli, volumes: list[str]) -> None:
    volumes.append("vt-cli")
    assert cli("volume", "create", "--label", "a=b", "vt-cli").stdout.strip() == "vt-cli"
    ls = cli("volume", "ls", "--format", "{{.Driver}} {{.Name}}", "-f", "name=vt-cli").stdout
    assert ls.splitlines() == ["local vt-cli"]
    info = json.loads(cli("volume", "inspect", "vt-cli").stdout)[0]
    assert info["Labels"] == {"a": "b"} and info["Name"] == "vt-cli"
    assert cli("volume", "rm", "vt-cli").stdout.strip() == "vt-cli"
    res = cli("volume", "inspect", "vt-cli", check=False)
    assert res.returncode != 0 and "no such volume" in res.stderr


# --- containers -----------------------------------------------------------------------------


def test_named_volume_carries_data_between_containers(client: docker.DockerClient,
                                                      volumes: list[str]) -> None:
    volumes.append("vt-share")
    client.containers.run("busybox", ["sh", "-c", "echo written-by-one > /data/note"],
                          volumes={"vt-share": {"bind": "/data", "mode": "rw"}}, remove=True)
    assert client.volumes.get("vt-share").attrs["Labels"] is None  # created on demand, named
    out = client.containers.run("busybox", ["cat", "/data/note"], remove=True,
                                volumes=["vt-share:/data:ro"])
    assert out == b"written-by-one\n"
    # The container is gone; the named volume stays, even after rm -v.
    ctr = client.containers.create("busybox", ["true"], volumes=["vt-share:/data"])
    ctr.remove(v=True)
    assert client.volumes.get("vt-share")


def test_bind_mount_read_only(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("from the host\n")
    res = cli("run", "--rm", "-v", f"{tmp_path}:/h:ro", "busybox", "sh", "-c",
              "cat /h/f; touch /h/new 2>&1; echo rc=$?")
    assert "from the host" in res.stdout
    assert "Read-only file system" in res.stdout and "rc=1" in res.stdout
    assert not (tmp_path / "new").exists()
    res = cli("run", "--rm", "-v", f"{tmp_path}:/h", "busybox", "touch", "/h/new")
    assert (tmp_path / "new").exists()


def test_missing_host_directory(client: docker.DockerClient, api: docker.APIClient,
                                tmp_path: Path) -> None:
    # --mount type=bind refuses a missing source, as dockerd does ...
    missing = tmp_path / "missing"
    with pytest.raises(APIError) as exc:
        client.containers.create("busybox", ["true"], mounts=[
            docker.types.Mount("/x", str(missing), type="bind")])
    assert exc.value.status_code == 400
    assert exc.value.explanation == ('invalid mount config for type "bind": bind source path '
                                     f"does not exist: {missing}")
    # ... while -v creates the directory at start (dockerd's long-standing -v behaviour).
    out = client.containers.run("busybox", ["sh", "-c", "echo hi > /x/f"], remove=True,
                                volumes=[f"{missing}:/x"])
    assert out == b"" and (missing / "f").read_text() == "hi\n"


def test_tmpfs_mounts(cli: Cli) -> None:
    res = cli("run", "--rm", "--mount", "type=tmpfs,target=/t,tmpfs-size=1m,tmpfs-mode=1770",
              "--tmpfs", "/t2:size=2m,exec", "busybox", "sh", "-c",
              "grep -E ' /t2? ' /proc/self/mountinfo; stat -c '%a' /t; echo x > /t/f; cat /t/f")
    lines = res.stdout.splitlines()
    t = next(line for line in lines if " /t " in line)
    assert " - tmpfs " in t and "size=1024k" in t and "mode=1770" in t
    assert "nosuid" in t and "nodev" in t and "noexec" in t
    t2 = next(line for line in lines if " /t2 " in line)
    assert "size=2048k" in t2 and "noexec" not in t2.split(" - ")[0]
    assert "1770" in lines and lines[-1] == "x"


def test_inspect_mounts_match_dockerd(client: docker.DockerClient, api: docker.APIClient,
                                      volumes: list[str], tmp_path: Path, daemon: Daemon) -> None:
    volumes += ["vt-insp", "vt-insp2"]
    ctr = api.create_container(
        "busybox", ["true"], volumes=["/anon"],
        host_config=api.create_host_config(
            binds=["vt-insp:/data", f"{tmp_path}:/h:ro"],
            mounts=[docker.types.Mount("/t", None, type="tmpfs", tmpfs_size=1 << 20),
                    docker.types.Mount("/n2", "vt-insp2", type="volume", no_copy=True),
                    docker.types.Mount("/b2", str(tmp_path), type="bind",
                                       propagation="rslave")]))
    info = api.inspect_container(ctr["Id"])
    mounts = {m["Destination"]: m for m in info["Mounts"]}
    anon = mounts["/anon"]["Name"]
    volumes.append(anon)
    vroot = daemon.data_root / "volumes"
    assert mounts == {
        "/anon": {"Type": "volume", "Name": anon, "Source": f"{vroot}/{anon}/_data",
                  "Destination": "/anon", "Driver": "local", "Mode": "", "RW": True,
                  "Propagation": ""},
        "/data": {"Type": "volume", "Name": "vt-insp", "Source": f"{vroot}/vt-insp/_data",
                  "Destination": "/data", "Driver": "local", "Mode": "z", "RW": True,
                  "Propagation": ""},
        "/h": {"Type": "bind", "Source": str(tmp_path), "Destination": "/h", "Mode": "ro",
               "RW": False, "Propagation": "rprivate"},
        "/t": {"Type": "tmpfs", "Source": "", "Destination": "/t", "Mode": "", "RW": True,
               "Propagation": ""},
        "/n2": {"Type": "volume", "Name": "vt-insp2", "Source": f"{vroot}/vt-insp2/_data",
                "Destination": "/n2", "Driver": "local", "Mode": "z", "RW": True,
                "Propagation": ""},
        "/b2": {"Type": "bind", "Source": str(tmp_path), "Destination": "/b2", "Mode": "",
                "RW": True, "Propagation": "rslave"},
    }
    assert info["HostConfig"]["Binds"] == ["vt-insp:/data", f"{tmp_path}:/h:ro"]
    assert client.volumes.get(anon).attrs["Labels"] == {ANON: ""}
    row = api.containers(all=True, filters={"id": ctr["Id"]})[0]
    assert sorted(row["Mounts"], key=lambda m: m["Destination"]) == \
        sorted(info["Mounts"], key=lambda m: m["Destination"])
    for key in ("vt-insp", "/anon", "/h"):
        assert [c["Id"] for c in api.containers(all=True, filters={"volume": key})] == \
            [ctr["Id"]]
    assert api.containers(all=True, filters={"volume": "vt-nothing"}) == []


@pytest.mark.parametrize("host_config,message", [
    ({"Binds": ["v1:/x", "v2:/x"]}, "Duplicate mount point: /x"),
    ({"Binds": ["v1:/x:foo"]}, "invalid mode: foo"),
    ({"Binds": ["-v1:/x"]}, 'create -v1: "-v1" includes invalid characters'),
    ({"Binds": ["/tmp:/"]}, "destination can't be '/'"),
    ({"Mounts": [{"Type": "volume", "Target": "/x", "ReadOnly": True}]},
     "must not set ReadOnly mode when using anonymous volumes"),
    ({"Mounts": [{"Type": "foo", "Target": "/x"}]}, "mount type unknown"),
    ({"Mounts": [{"Type": "volume", "Source": "vt-x", "Target": "/x",
                  "VolumeOptions": {"DriverConfig": {"Name": "nope"}}}]},
     'plugin "nope" not found'),
    ({"Binds": ["vt-vd:/x"], "VolumeDriver": "nope"}, 'plugin "nope" not found'),
])
def test_bad_mount_requests(api: docker.APIClient, host_config: dict[str, object],
                            message: str) -> None:
    res = api.post(url(api, "/containers/create"),
                         json={"Image": "busybox", "Cmd": ["true"], "HostConfig": host_config})
    assert res.status_code in (400, 404), res.text
    assert message in res.json()["message"]
    assert not [v for v in (api.volumes()["Volumes"] or []) if v["Name"] in ("v1", "v2")]


def test_copy_up_of_image_content(client: docker.DockerClient, cli: Cli,
                                  volumes: list[str]) -> None:
    volumes += ["vt-newetc", "vt-nocopy"]
    res = cli("run", "--rm", "-v", "vt-newetc:/etc", "busybox", "ls", "/etc")
    assert {"passwd", "group"} <= set(res.stdout.split())
    mountpoint = Path(client.volumes.get("vt-newetc").attrs["Mountpoint"])
    assert (mountpoint / "passwd").read_text().startswith("root:x:0:0")
    # A volume with content is never overwritten by a later copy.
    (mountpoint / "passwd").write_text("mine\n")
    res = cli("run", "--rm", "-v", "vt-newetc:/etc", "busybox", "cat", "/etc/passwd")
    assert res.stdout == "mine\n"
    # NoCopy: the volume stays as it was (only the runtime's mount points appear in it).
    res = cli("run", "--rm", "--mount", "type=volume,src=vt-nocopy,dst=/etc,volume-nocopy",
              "busybox", "ls", "/etc")
    assert "passwd" not in res.stdout.split()


def test_image_volume_is_anonymous_and_rm_v_removes_it(client: docker.DockerClient,
                                                       api: docker.APIClient,
                                                       volume_image: str,
                                                       volumes: list[str]) -> None:
    volumes.append("vt-kept")
    ctr = client.containers.create(volume_image, ["sh", "-c",
                                                  "stat -c '%u:%g %a %n' /srv/app "
                                                  "/srv/app/config; cat /srv/app/config"],
                                   volumes=["vt-kept:/kept"])
    mounts = {m["Destination"]: m for m in api.inspect_container(ctr.id)["Mounts"]}
    anon = mounts["/srv/app"]["Name"]
    assert len(anon) == 64 and mounts["/srv/app"]["Mode"] == ""
    assert client.volumes.get(anon).attrs["Labels"] == {ANON: ""}
    ctr.start()
    assert ctr.wait(timeout=20)["StatusCode"] == 0
    # Copied up at the first start with the image's owners and modes.
    assert ctr.logs().decode().splitlines() == [
        "1000:1000 750 /srv/app", "1000:1000 600 /srv/app/config", "from the image"]
    with pytest.raises(APIError) as exc:
        client.volumes.get(anon).remove()
    assert exc.value.status_code == 409
    ctr.remove(v=True)
    with pytest.raises(NotFound):
        client.volumes.get(anon)
    assert client.volumes.get("vt-kept")  # named volumes survive rm -v

    # A bind on the image's VOLUME path replaces the anonymous volume.
    before = {v.name for v in client.volumes.list()}
    ctr = client.containers.create(volume_image, ["true"], volumes=["vt-kept:/srv/app"])
    assert [m["Name"] for m in api.inspect_container(ctr.id)["Mounts"]] == ["vt-kept"]
    assert {v.name for v in client.volumes.list()} == before
    ctr.remove(v=True)

    # Without -v the anonymous volume outlives its container; --rm removes it.
    ctr = client.containers.create(volume_image, ["true"])
    anon = api.inspect_container(ctr.id)["Mounts"][0]["Name"]
    volumes.append(anon)
    ctr.remove()
    assert client.volumes.get(anon)
    auto = client.containers.run(volume_image, ["true"], auto_remove=True, detach=True)
    auto.wait(condition="removed", timeout=20)
    names = {v.name for v in client.volumes.list()}
    assert names - before == {anon}


def test_volume_in_use_is_409(client: docker.DockerClient, volumes: list[str]) -> None:
    volumes.append("vt-busy")
    ctr = client.containers.create("busybox", ["true"], volumes=["vt-busy:/data"])
    vol = client.volumes.get("vt-busy")
    for force in (False, True):
        with pytest.raises(APIError) as exc:
            vol.remove(force=force)
        assert exc.value.status_code == 409
        assert exc.value.explanation == f"remove vt-busy: volume is in use - [{ctr.id}]"
    assert vol not in client.volumes.list(filters={"dangling": True})
    assert vol in client.volumes.list(filters={"dangling": False})
    ctr.remove()
    vol.remove()


def test_prune(client: docker.DockerClient, daemon: Daemon, volumes: list[str]) -> None:
    label = {"vt-prune": "1"}
    anon = client.volumes.create(labels=label)
    named = client.volumes.create("vt-prune-named", labels=label)
    busy = client.volumes.create(labels=label)
    volumes += [anon.name, named.name, busy.name]
    ctr = client.containers.create("busybox", ["true"], volumes=[f"{busy.name}:/b"])
    result = client.volumes.prune(filters={"label": "vt-prune=1"})
    assert result == {"VolumesDeleted": [anon.name], "SpaceReclaimed": 0}
    result = client.volumes.prune(filters={"label": "vt-prune=1", "all": "true"})
    assert result["VolumesDeleted"] == [named.name]
    ctr.remove()
    # Before API 1.42 prune took every unused volume, and knew no `all`.
    old = docker.APIClient(base_url=daemon.url, version="1.41")
    try:
        named = client.volumes.create("vt-prune-old", labels=label)
        volumes.append(named.name)
        (Path(named.attrs["Mountpoint"]) / "f").write_bytes(b"x" * 1000)
        result = old.prune_volumes(filters={"label": "vt-prune=1"})
        assert sorted(result["VolumesDeleted"]) == sorted([busy.name, named.name])
        assert result["SpaceReclaimed"] == 1000
        with pytest.raises(APIError) as exc:
            old.prune_volumes(filters={"all": "true"})
        assert exc.value.status_code == 400
    finally:
        old.close()


def test_prune_and_system_df_agree_on_hard_links(client: docker.DockerClient,
                                                 volumes: list[str]) -> None:
    """One directory size: a file and a hard link to it count once, in `docker system df`
    as in what prune says it reclaimed (as dockerd's pkg/directory)."""
    vol = client.volumes.create("vt-hardlinks", labels={"vt-hardlinks": "1"})
    volumes.append(vol.name)
    client.containers.run("busybox", ["sh", "-c", "head -c 3000 /dev/zero > /v/f && ln /v/f "
                                      "/v/g && mkdir /v/d && ln /v/f /v/d/h && "
                                      "head -c 500 /dev/zero > /v/d/other"],
                          volumes=["vt-hardlinks:/v"], remove=True)
    row = next(v for v in client.df()["Volumes"] if v["Name"] == vol.name)
    assert row["UsageData"]["Size"] == 3500
    result = client.volumes.prune(filters={"label": "vt-hardlinks=1", "all": "true"})
    assert result == {"VolumesDeleted": [vol.name], "SpaceReclaimed": 3500}


def test_driver_options_mount_while_in_use(client: docker.DockerClient, volumes: list[str],
                                           tmp_path: Path) -> None:
    volumes += ["vt-tmpfs", "vt-hostdir"]
    tmpfs = client.volumes.create("vt-tmpfs", driver_opts={"type": "tmpfs", "device": "tmpfs",
                                                           "o": "size=1m"})
    assert tmpfs.attrs["Options"] == {"type": "tmpfs", "device": "tmpfs", "o": "size=1m"}
    out = client.containers.run("busybox", ["sh", "-c", "grep ' /v ' /proc/self/mountinfo"],
                                volumes=["vt-tmpfs:/v"], remove=True).decode()
    assert " - tmpfs tmpfs " in out and "size=1024k" in out
    assert not _mounted(tmpfs.attrs["Mountpoint"])  # unmounted once no container uses it

    (tmp_path / "hello").write_text("from a bind volume\n")
    host = client.volumes.create("vt-hostdir", driver_opts={"type": "none", "o": "bind",
                                                            "device": str(tmp_path)})
    runner = client.containers.run("busybox", ["sh", "-c", "cat /v/hello; sleep 30"],
                                   volumes=["vt-hostdir:/v"], detach=True)
    other = client.containers.run("busybox", ["cat", "/v/hello"], volumes=["vt-hostdir:/v"],
                                  remove=True)
    assert other == b"from a bind volume\n"
    assert _mounted(host.attrs["Mountpoint"])  # still held by the first container
    runner.remove(force=True)
    assert not _mounted(host.attrs["Mountpoint"])
    host.remove()
    assert (tmp_path / "hello").exists()  # removing the volume never touches the device


def test_volumes_from(client: docker.DockerClient, api: docker.APIClient,
                      volumes: list[str]) -> None:
    volumes.append("vt-from")
    src = client.containers.run("busybox", ["sh", "-c", "echo shared > /d/f"], detach=True,
                                volumes=["vt-from:/d"], name="vt-from-src")
    src.wait(timeout=20)
    out = client.containers.run("busybox", ["sh", "-c", "cat /d/f; touch /d/g 2>&1; true"],
                                volumes_from=["vt-from-src:ro"], remove=True)
    assert out.decode().splitlines()[0] == "shared"
    assert "Read-only file system" in out.decode()
    with pytest.raises(NotFound):
        client.containers.create("busybox", ["true"], volumes_from=["vt-no-such-container"])


def test_cp_sees_volumes_and_binds(client: docker.DockerClient, cli: Cli, tmp_path: Path,
                                   volumes: list[str], daemon: Daemon) -> None:
    volumes.append("vt-cp")
    (tmp_path / "in.txt").write_text("copied in\n")
    ctr = client.containers.create("busybox", ["cat", "/data/in.txt"], volumes=["vt-cp:/data"])
    cli("cp", str(tmp_path / "in.txt"), f"{ctr.id}:/data/in.txt")  # stopped: into the volume
    ctr.start()
    assert ctr.wait(timeout=20)["StatusCode"] == 0
    assert ctr.logs() == b"copied in\n"
    runner = client.containers.run("busybox", ["sleep", "30"], volumes=[f"{tmp_path}:/h:ro"],
                                   detach=True)
    cli("cp", f"{runner.id}:/h/in.txt", str(tmp_path / "out.txt"))  # running: out of a bind
    assert (tmp_path / "out.txt").read_text() == "copied in\n"

    def left_on_rootfs() -> list[str]:  # the copy's mounts go once its stream has ended
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            return [line for line in f if str(daemon.data_root / "containers") in line
                    and "/rootfs/" in line.split()[4]]

    until(lambda: not left_on_rootfs(), 5, "the copy's mounts stayed")
    runner.remove(force=True)


def test_volume_events(client: docker.DockerClient, api: docker.APIClient,
                       volumes: list[str]) -> None:
    since = time.time()
    volumes.append("vt-events")
    ctr = client.containers.run("busybox", ["true"], volumes=["vt-events:/e"], detach=True)
    ctr.wait(timeout=20)
    ctr.remove()  # after the exit's teardown (it holds the container's lock): unmount first
    client.volumes.get("vt-events").remove()
    seen = [(e["Action"], e["Actor"]["ID"], e["Actor"]["Attributes"])
            for e in api.events(since=since, until=time.time() + 0.5, decode=True,
                                filters={"type": "volume"})]
    ours = [(a, attrs) for a, vid, attrs in seen if vid == "vt-events"]
    assert [a for a, _ in ours] == ["create", "mount", "unmount", "destroy"]
    assert ours[0][1] == {"driver": "local"}
    assert ours[1][1] == {"container": ctr.id, "destination": "/e", "driver": "local",
                          "propagation": "", "read/write": "true"}
    assert ours[2][1] == {"container": ctr.id, "driver": "local"}
    only = [(e["Type"], e["Actor"]["ID"])
            for e in api.events(since=since, until=time.time() + 0.5, decode=True,
                                filters={"volume": "vt-events"})]
    assert only == [("volume", "vt-events")] * 4


# --- surviving the daemon -------------------------------------------------------------------


def test_volumes_survive_removal_and_restart(own_daemon: Daemon) -> None:
    client = own_daemon.client()
    client.containers.run("busybox", ["sh", "-c", "echo kept > /d/f"], volumes=["keep:/d"],
                          remove=True)
    client.volumes.create("tmpvol", driver_opts={"type": "tmpfs", "device": "tmpfs"})
    runner = client.containers.run("busybox", ["sleep", "300"], volumes=["tmpvol:/t"],
                                   detach=True, name="runner")
    tmp_mount = own_daemon.data_root / "volumes/tmpvol/_data"
    assert _mounted(tmp_mount)
    client.close()

    own_daemon.kill9()
    own_daemon.start()
    client = own_daemon.client()
    assert {v.name for v in client.volumes.list()} == {"keep", "tmpvol"}
    out = client.containers.run("busybox", ["cat", "/d/f"], volumes=["keep:/d"], remove=True)
    assert out == b"kept\n"
    assert _mounted(tmp_mount)  # the running container still holds it
    with pytest.raises(APIError) as exc:
        client.volumes.get("tmpvol").remove()
    assert exc.value.status_code == 409
    client.containers.get("runner").stop(timeout=1)
    until(lambda: not _mounted(tmp_mount), 10, f"{tmp_mount} stayed mounted")
    runner.remove()
    client.volumes.get("tmpvol").remove()
    client.close()
