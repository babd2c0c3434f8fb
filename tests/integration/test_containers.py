"""The founding document's container operations, through docker-py and the docker CLI."""

import json
import time

import docker
import pytest
from docker.errors import APIError, ImageNotFound, NotFound

from tests.integration.conftest import Cli
from tests.waits import logs_show, result_of, status_is, until, url


def _status(api: docker.APIClient, cid: str) -> str:
    return str(api.inspect_container(cid)["State"]["Status"])


SEED_BODY = {
    "Hostname": "pg-host",
    "Domainname": "example.test",
    "User": "",
    "AttachStdin": False,
    "AttachStdout": False,
    "AttachStderr": False,
    "Tty": True,
    "OpenStdin": True,
    "StdinOnce": False,
    "Image": "busybox",
    "Env": ["POSTGRES_PASSWORD=gk"],
    "Cmd": ["sleep", "300"],
    "Entrypoint": ["/bin/sh", "-c", 'exec "$0" "$@"'],
    "MacAddress": "",
    "ExposedPorts": {"5432/tcp": {}},
    "HostConfig": {
        "PortBindings": {"5432/tcp": [{"HostIp": "", "HostPort": "5432"}]},
        "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
        "ConsoleSize": [30, 120],
    },
}


def test_founding_document_create_body(api: docker.APIClient) -> None:
    """The seed's full create body is accepted, kept, and shown by inspect."""
    res = api.post(url(api, "/containers/create"), json=SEED_BODY,
                         params={"name": "seed-pg"})
    assert res.status_code == 201, res.text
    body = res.json()
    assert body["Warnings"] == []
    cid = body["Id"]
    info = api.inspect_container("seed-pg")
    assert info["Id"] == cid
    assert info["Name"] == "/seed-pg"
    cfg = info["Config"]
    assert cfg["Hostname"] == "pg-host"
    assert cfg["Domainname"] == "example.test"
    assert cfg["Tty"] is True and cfg["OpenStdin"] is True and cfg["StdinOnce"] is False
    assert "POSTGRES_PASSWORD=gk" in cfg["Env"]
    assert cfg["Cmd"] == ["sleep", "300"]
    assert cfg["Entrypoint"] == ["/bin/sh", "-c", 'exec "$0" "$@"']
    assert cfg["ExposedPorts"] == {"5432/tcp": {}}
    assert cfg["Image"] == "busybox"
    hc = info["HostConfig"]
    assert hc["PortBindings"] == {"5432/tcp": [{"HostIp": "", "HostPort": "5432"}]}
    assert hc["RestartPolicy"] == {"Name": "no", "MaximumRetryCount": 0}
    assert hc["ConsoleSize"] == [30, 120]
    assert info["Path"] == "/bin/sh"
    assert info["Args"] == ["-c", 'exec "$0" "$@"', "sleep", "300"]
    assert info["State"]["Status"] == "created"
    assert info["Image"].startswith("sha256:")
    assert info["NetworkSettings"]["Ports"] == {}  # as dockerd: published at start
    api.start(cid)
    status_is(api, cid, "running")
    api.remove_container(cid, force=True)


def test_hostname_env_and_workdir_reach_the_process(client: docker.DockerClient) -> None:
    ctr = client.containers.run(
        "busybox", ["sh", "-c", 'hostname; cat /etc/hostname; echo "$FOO $HOSTNAME"; pwd; id -u'],
        hostname="seedhost", environment=["FOO=bar"], working_dir="/tmp", user="65534",
        detach=True)
    assert ctr.wait(timeout=10)["StatusCode"] == 0
    assert ctr.logs().decode().split("\n")[:5] == ["seedhost", "seedhost", "bar seedhost",
                                                   "/tmp", "65534"]


def test_create_start_inspect_stop_remove(client: docker.DockerClient) -> None:
    ctr = client.containers.create("busybox", ["sleep", "300"], name="life1",
                                   labels={"app": "web"}, environment={"A": "1"})
    assert ctr.status == "created"
    assert ctr.name == "life1"
    ctr.start()
    ctr.reload()
    st = ctr.attrs["State"]
    assert st["Status"] == "running" and st["Running"] is True and st["Pid"] > 0
    assert st["StartedAt"] != "0001-01-01T00:00:00Z"
    assert ctr.attrs["Config"]["Hostname"] == ctr.id[:12]
    assert ctr.attrs["Config"]["Labels"] == {"app": "web"}
    ctr.stop(timeout=1)
    ctr.reload()
    st = ctr.attrs["State"]
    # sleep as PID 1 ignores SIGTERM, so stop ends it with SIGKILL after the timeout.
    assert st["Status"] == "exited" and st["ExitCode"] == 137 and not st["Running"]
    assert st["FinishedAt"] != "0001-01-01T00:00:00Z"
    ctr.remove()
    with pytest.raises(NotFound):
        client.containers.get("life1")


def test_exit_codes_are_true(client: docker.DockerClient) -> None:
    c7 = client.containers.run("busybox", ["sh", "-c", "exit 7"], detach=True)
    assert c7.wait(timeout=30)["StatusCode"] == 7
    # PID 1 of a namespace cannot die of a signal it does not handle (except SIGKILL), so a
    # process killed by a signal shows up as 128+N only for SIGKILL: 137.
    killed = client.containers.run("busybox", ["sleep", "300"], detach=True)
    killed.kill()
    assert killed.wait(timeout=30)["StatusCode"] == 137
    killed.reload()
    assert killed.attrs["State"]["ExitCode"] == 137


def test_stop_honours_signal_and_timeout(client: docker.DockerClient, api: docker.APIClient
                                         ) -> None:
    # A shell that exits on SIGTERM: stop returns quickly with 143.
    ctr = client.containers.run("busybox", ["sh", "-c", "trap 'exit 143' TERM; echo ready; "
                                            "while true; do sleep 0.1; done"], detach=True)
    logs_show(ctr, b"ready")  # the trap is in place
    t0 = time.monotonic()
    ctr.stop(timeout=10)
    assert time.monotonic() - t0 < 5
    assert ctr.wait(timeout=5)["StatusCode"] == 143
    # StopSignal from the config is used.
    ctr2 = client.containers.run("busybox", ["sh", "-c", "trap 'exit 42' USR1; echo ready; "
                                             "while true; do sleep 0.1; done"],
                                 detach=True, stop_signal="SIGUSR1")
    logs_show(ctr2, b"ready")
    ctr2.stop(timeout=10)
    assert ctr2.wait(timeout=5)["StatusCode"] == 42
    # Stopping a stopped container is 304, which docker-py treats as success.
    res = api.post(url(api, f"/containers/{ctr2.id}/stop"))
    assert res.status_code == 304


def test_restart_with_t(client: docker.DockerClient, api: docker.APIClient) -> None:
    ctr = client.containers.run("busybox", ["sleep", "300"], detach=True)
    first = api.inspect_container(ctr.id)["State"]
    res = api.post(url(api, f"/containers/{ctr.id}/restart"), params={"t": 1})
    assert res.status_code == 204
    second = api.inspect_container(ctr.id)["State"]
    assert second["Running"] and second["Pid"] != first["Pid"]
    assert second["StartedAt"] > first["StartedAt"]
    # Restarting a stopped container simply starts it (no 304).
    ctr.kill()
    ctr.wait(timeout=10)
    assert api.post(url(api, f"/containers/{ctr.id}/restart"),
                     params={"t": 0}).status_code == 204
    assert _status(api, ctr.id) == "running"


def test_kill_signals(client: docker.DockerClient, api: docker.APIClient) -> None:
    ctr = client.containers.run("busybox", ["sh", "-c", "trap 'exit 11' HUP; echo ready; "
                                            "while true; do sleep 0.1; done"], detach=True)
    logs_show(ctr, b"ready")
    for sig in ("SIGHUP",):
        ctr.kill(signal=sig)
    assert ctr.wait(timeout=10)["StatusCode"] == 11
    for spelling in ("KILL", "sigkill", "9"):
        c = client.containers.run("busybox", ["sleep", "300"], detach=True)
        c.kill(signal=spelling)
        assert c.wait(timeout=10)["StatusCode"] == 137
    c = client.containers.run("busybox", ["sleep", "300"], detach=True)
    with pytest.raises(APIError) as err:
        c.kill(signal="SIGNOPE")
    assert err.value.status_code == 400
    assert "invalid signal" in err.value.explanation
    assert _status(api, c.id) == "running"


def test_pause_unpause(client: docker.DockerClient, api: docker.APIClient) -> None:
    ctr = client.containers.run("busybox", ["sleep", "300"], detach=True)
    ctr.pause()
    st = api.inspect_container(ctr.id)["State"]
    assert st["Status"] == "paused" and st["Paused"] and st["Running"]
    with pytest.raises(APIError) as err:
        ctr.remove()
    assert err.value.status_code == 409
    ctr.unpause()
    assert _status(api, ctr.id) == "running"
    with pytest.raises(APIError) as err:
        ctr.unpause()
    assert err.value.status_code == 409


def test_rename_and_prefix_resolution(client: docker.DockerClient, api: docker.APIClient) -> None:
    ctr = client.containers.create("busybox", ["true"], name="before-rename")
    ctr.rename("after-rename")
    assert api.inspect_container("after-rename")["Id"] == ctr.id
    assert api.inspect_container("/after-rename")["Id"] == ctr.id
    assert api.inspect_container(ctr.id[:5])["Id"] == ctr.id
    with pytest.raises(NotFound):
        api.inspect_container("before-rename")
    other = client.containers.create("busybox", ["true"], name="taken-name")
    with pytest.raises(APIError) as err:
        ctr.rename("taken-name")
    assert err.value.status_code == 409
    assert api.inspect_container("after-rename")["Id"] == ctr.id
    other.remove()


def test_top_lists_container_processes(client: docker.DockerClient) -> None:
    ctr = client.containers.run("busybox", ["sh", "-c", "sleep 300 & sleep 301"], detach=True)
    until(lambda: sum("sleep 30" in row[-1] for row in ctr.top()["Processes"]) == 2,
          what="both sleeps in top")
    top = ctr.top()
    assert "PID" in top["Titles"] and "CMD" in top["Titles"]
    cmds = [row[-1] for row in top["Processes"]]
    assert any("sleep 300" in c for c in cmds) and any("sleep 301" in c for c in cmds)
    assert len(top["Processes"]) == 2  # sh execs its last command


def test_wait_conditions(client: docker.DockerClient, api: docker.APIClient) -> None:
    created = client.containers.create("busybox", ["sh", "-c", "exit 5"])
    # not-running answers at once for a created container.
    assert created.wait(timeout=5)["StatusCode"] == 0
    created.start()
    assert created.wait(timeout=10)["StatusCode"] == 5
    # next-exit waits for the next run's exit.
    res = created.wait(timeout=10)
    assert res["StatusCode"] == 5
    running = client.containers.run("busybox", ["sleep", "300"], detach=True)
    # The answer's headers come once the waiter is registered (the CLI relies on it too):
    # with them in hand, the removal cannot be missed.
    waiting = api.post(url(api, f"/containers/{running.id}/wait"),
                       params={"condition": "removed"}, stream=True, timeout=30)
    assert waiting.status_code == 200
    running.remove(force=True)
    assert waiting.json()["StatusCode"] == 137
    with pytest.raises(APIError) as err:
        api.wait(created.id, condition="bogus")
    assert err.value.status_code == 400


def test_logs_options(client: docker.DockerClient, api: docker.APIClient) -> None:
    script = "for i in 1 2 3 4 5; do echo out$i; echo err$i >&2; done"
    ctr = client.containers.run("busybox", ["sh", "-c", script], detach=True)
    ctr.wait(timeout=10)
    out = ctr.logs(stdout=True, stderr=False)
    assert out == b"".join(b"out%d\n" % i for i in range(1, 6))
    both = ctr.logs()
    assert sorted(both.split()) == sorted([b"out%d" % i for i in range(1, 6)] +
                                          [b"err%d" % i for i in range(1, 6)])
    assert ctr.logs(stdout=True, stderr=False, tail=2) == b"out4\nout5\n"
    assert ctr.logs(stdout=True, stderr=False, tail=0) == b""
    stamped = ctr.logs(stdout=True, stderr=False, timestamps=True).decode().splitlines()
    assert len(stamped) == 5
    ts, _, text = stamped[0].partition(" ")
    assert text == "out1" and ts.endswith("Z") and len(ts.split(".")[1]) == 10
    future = int(time.time()) + 3600
    assert ctr.logs(since=future) == b""
    assert ctr.logs(until=1) == b""
    with pytest.raises(APIError) as err:
        result_of(api.get(url(api, f"/containers/{ctr.id}/logs")))
    assert err.value.status_code == 400


def test_logs_tty_are_raw(client: docker.DockerClient, api: docker.APIClient) -> None:
    ctr = client.containers.run("busybox", ["sh", "-c", "echo tty-line"], tty=True, detach=True)
    ctr.wait(timeout=10)
    res = api.get(url(api, f"/containers/{ctr.id}/logs"), params={"stdout": 1, "stderr": 1})
    assert res.status_code == 200
    assert res.content == b"tty-line\r\n"
    assert res.headers["Content-Type"] == "application/vnd.docker.raw-stream"


def test_logs_are_framed_without_tty(api: docker.APIClient, client: docker.DockerClient) -> None:
    ctr = client.containers.run("busybox", ["sh", "-c", "echo a; echo b >&2"], detach=True)
    ctr.wait(timeout=10)
    res = api.get(url(api, f"/containers/{ctr.id}/logs"), params={"stdout": 1, "stderr": 1})
    assert res.headers["Content-Type"] == "application/vnd.docker.multiplexed-stream"
    frames = res.content
    assert b"\x01\x00\x00\x00\x00\x00\x00\x02a\n" in frames
    assert b"\x02\x00\x00\x00\x00\x00\x00\x02b\n" in frames


def test_list_filters_and_shape(client: docker.DockerClient, api: docker.APIClient) -> None:
    a = client.containers.run("busybox", ["sleep", "300"], detach=True, name="flt-a",
                              labels={"team": "x", "tier": "web"})
    b = client.containers.create("busybox", ["true"], name="flt-b", labels={"team": "y"})
    c = client.containers.run("busybox", ["sh", "-c", "exit 3"], detach=True, name="flt-c")
    c.wait(timeout=10)
    running = api.containers()
    assert [r["Id"] for r in running] == [a.id]
    row = running[0]
    assert row["Names"] == ["/flt-a"] and row["Image"] == "busybox"
    assert row["ImageID"].startswith("sha256:") and isinstance(row["Created"], int)
    assert row["Command"] == "sleep 300" and row["State"] == "running"
    assert row["Status"].startswith("Up ")
    # dockerd quotes the arguments that hold a space (docker ps: sh -c 'exit 3')
    assert {r["Id"]: r["Command"] for r in api.containers(all=True)}[c.id] == "sh -c 'exit 3'"
    assert row["Labels"] == {"team": "x", "tier": "web"}
    assert row["HostConfig"] == {"NetworkMode": "bridge"} or row["HostConfig"]["NetworkMode"]
    every = api.containers(all=True)
    assert [r["Id"] for r in every] == [c.id, b.id, a.id]  # newest first
    assert {r["State"] for r in every} == {"running", "created", "exited"}
    exited_row = next(r for r in every if r["Id"] == c.id)
    assert exited_row["Status"].startswith("Exited (3) ")
    assert [r["Id"] for r in api.containers(all=True, limit=2)] == [c.id, b.id]
    assert [r["Id"] for r in api.containers(filters={"label": "team=x"})] == [a.id]
    assert {r["Id"] for r in api.containers(all=True, filters={"label": "team"})} == {a.id, b.id}
    assert [r["Id"] for r in api.containers(filters={"status": "exited"})] == [c.id]
    assert [r["Id"] for r in api.containers(filters={"exited": "3"})] == [c.id]
    assert [r["Id"] for r in api.containers(all=True, filters={"name": "flt-b"})] == [b.id]
    assert [r["Id"] for r in api.containers(all=True, filters={"id": b.id[:8]})] == [b.id]
    assert {r["Id"] for r in api.containers(all=True, filters={"ancestor": "busybox"})} == {
        a.id, b.id, c.id}
    assert [r["Id"] for r in api.containers(all=True, filters={"before": "flt-b"})] == [a.id]
    assert [r["Id"] for r in api.containers(all=True, filters={"since": "flt-b"})] == [c.id]
    sized = api.containers(all=True, size=True, filters={"name": "flt-a"})[0]
    assert sized["SizeRootFs"] > sized.get("SizeRw", 0) >= 0  # SizeRw omitted when 0
    with pytest.raises(APIError) as err:
        api.containers(filters={"bogus": "1"})
    assert err.value.status_code == 400
    # The CLI's map form of filters works too.
    res = api.get(url(api, "/containers/json"),
                   params={"all": 1, "filters": json.dumps({"label": {"team=y": True}})})
    assert [r["Id"] for r in res.json()] == [b.id]


# --- bad input: a clear 4xx and nothing changes ------------------------------------------


def _count(api: docker.APIClient) -> int:
    return len(api.containers(all=True))


def test_malformed_json_is_400(api: docker.APIClient) -> None:
    before = _count(api)
    res = api.post(url(api, "/containers/create"), data=b"{not json",
                    headers={"Content-Type": "application/json"})
    assert res.status_code == 400
    assert "message" in res.json()
    res = api.post(url(api, "/containers/create"), data=b'{"Image": 5}',
                    headers={"Content-Type": "application/json"})
    assert res.status_code == 400
    res = api.post(url(api, "/containers/create"), data=b'{"Image": "busybox", "Cmd": 5}',
                    headers={"Content-Type": "application/json"})
    assert res.status_code == 400
    assert _count(api) == before


def test_unknown_image_is_404_no_such_image(client: docker.DockerClient,
                                            api: docker.APIClient) -> None:
    before = _count(api)
    with pytest.raises(ImageNotFound) as err:
        client.containers.create("no-such-image:nope", ["true"])
    assert err.value.status_code == 404
    assert "No such image: no-such-image:nope" in err.value.explanation
    assert _count(api) == before


def test_missing_container_is_404(api: docker.APIClient) -> None:
    for call in (lambda: api.inspect_container("nope-nope"), lambda: api.start("nope-nope"),
                 lambda: api.stop("nope-nope"), lambda: api.kill("nope-nope"),
                 lambda: api.remove_container("nope-nope"), lambda: api.logs("nope-nope")):
        with pytest.raises(NotFound) as err:
            call()
        assert "No such container: nope-nope" in err.value.explanation


def test_invalid_and_taken_names(client: docker.DockerClient, api: docker.APIClient) -> None:
    before = _count(api)
    for bad in ("a", "-lead", "sp ace", "bad/slash", "ünï"):
        with pytest.raises(APIError) as err:
            client.containers.create("busybox", ["true"], name=bad)
        assert err.value.status_code == 400, bad
        assert "Invalid container name" in err.value.explanation
    assert _count(api) == before
    first = client.containers.create("busybox", ["true"], name="dup-name")
    with pytest.raises(APIError) as err:
        client.containers.create("busybox", ["true"], name="dup-name")
    assert err.value.status_code == 409
    assert f'is already in use by container "{first.id}"' in err.value.explanation
    assert _count(api) == before + 1


def test_remove_running_and_kill_stopped_are_409(client: docker.DockerClient,
                                                 api: docker.APIClient) -> None:
    ctr = client.containers.run("busybox", ["sleep", "300"], detach=True)
    with pytest.raises(APIError) as err:
        ctr.remove()
    assert err.value.status_code == 409
    assert "container is running" in err.value.explanation
    assert _status(api, ctr.id) == "running"
    stopped = client.containers.create("busybox", ["true"])
    with pytest.raises(APIError) as err:
        stopped.kill()
    assert err.value.status_code == 409
    assert "is not running" in err.value.explanation
    assert _status(api, stopped.id) == "created"
    ctr.remove(force=True)
    with pytest.raises(NotFound):
        api.inspect_container(ctr.id)


def test_bad_restart_policy_and_autoremove(api: docker.APIClient) -> None:
    before = _count(api)
    for hc in ({"RestartPolicy": {"Name": "sometimes"}},
               {"RestartPolicy": {"Name": "always", "MaximumRetryCount": 3}},
               {"RestartPolicy": {"Name": "always"}, "AutoRemove": True}):
        res = api.post(url(api, "/containers/create"),
                             json={"Image": "busybox", "Cmd": ["true"], "HostConfig": hc})
        assert res.status_code == 400, (hc, res.text)
    assert _count(api) == before


def test_missing_command_is_400(api: docker.APIClient) -> None:
    # busybox's image has CMD ["sh"]; an empty Entrypoint and Cmd of a bare image would be
    # rejected, so check the executable-not-found path instead: start fails with 400/127.
    cid = api.create_container("busybox", ["/no/such/binary"])["Id"]
    with pytest.raises(APIError) as err:
        api.start(cid)
    assert err.value.status_code == 400
    st = api.inspect_container(cid)["State"]
    assert st["ExitCode"] == 127 and st["Error"] and st["Status"] == "created"


def test_version_paths(api: docker.APIClient) -> None:
    for prefix in ("", "/v1.24", "/v1.32", "/v1.40", "/v1.44"):
        res = api.get(f"{api.base_url}{prefix}/containers/json")
        assert res.status_code == 200, prefix


# --- the docker CLI ----------------------------------------------------------------------


def test_cli_lifecycle(cli: Cli) -> None:
    cid = cli("create", "--name", "cli-one", "-e", "K=V", "busybox", "sleep", "300").stdout.strip()
    assert len(cid) == 64
    cli("start", "cli-one")
    ps = cli("ps", "--format", "{{.Names}} {{.Status}}").stdout
    assert "cli-one Up" in ps
    inspect = json.loads(cli("inspect", "cli-one").stdout)[0]
    assert inspect["State"]["Running"] is True and "K=V" in inspect["Config"]["Env"]
    cli("restart", "-t", "1", "cli-one")
    cli("kill", "cli-one")
    ps_a = cli("ps", "-a", "--format", "{{.Names}} {{.Status}}").stdout
    assert "cli-one Exited (137)" in ps_a
    assert cli("rm", "cli-one").stdout.strip() == "cli-one"
    assert "cli-one" not in cli("ps", "-a").stdout


def test_cli_run_detached_logs_stop(cli: Cli) -> None:
    cli("run", "-d", "--name", "cli-two", "busybox", "sh", "-c",
        "trap 'exit 0' TERM; echo started; while true; do sleep 0.1; done")
    until(lambda: cli("logs", "cli-two").stdout == "started\n", what="cli-two's log")
    cli("stop", "-t", "5", "cli-two")
    assert cli("wait", "cli-two").stdout.strip() == "0"
    res = cli("rm", "nonexistent-ctr", check=False)
    assert res.returncode != 0 and "No such container" in res.stderr
    res = cli("kill", "cli-two", check=False)
    assert res.returncode != 0 and "is not running" in res.stderr


def test_mac_address_and_log_driver_none(client: docker.DockerClient,
                                         api: docker.APIClient) -> None:
    ctr = client.containers.run("busybox", ["sh", "-c", "cat /sys/class/net/eth0/address; "
                                            "sleep 30"],
                                detach=True, mac_address="02:42:ac:11:00:0a")
    logs_show(ctr, b"02:42:ac:11:00:0a")
    info = api.inspect_container(ctr.id)
    assert info["NetworkSettings"]["MacAddress"] == "02:42:ac:11:00:0a"
    assert ctr.logs().strip() == b"02:42:ac:11:00:0a"
    with pytest.raises(APIError) as err:
        client.containers.create("busybox", ["true"], mac_address="nonsense")
    assert err.value.status_code == 400
    # The "none" log driver keeps no log: run returns nothing, logs says it cannot read.
    assert client.containers.run("busybox", ["echo", "hello"],
                                 log_config={"Type": "none"}) is None
    quiet = client.containers.run("busybox", ["echo", "hello"], detach=True,
                                  log_config={"Type": "none"})
    quiet.wait(timeout=10)
    with pytest.raises(APIError) as err:
        quiet.logs()
    assert err.value.status_code == 501
    assert "does not support reading" in err.value.explanation
