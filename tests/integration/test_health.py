"""Healthchecks through docker-py, the docker CLI and docker-compose, as dockerd runs them."""

import io
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.daemon import Daemon
from tests.integration.conftest import Cli
from tests.waits import until

S = 1_000_000_000
MS = 1_000_000
FAST = 200 * MS


def wait_health(api: docker.APIClient, cid: str, done: Any, timeout: float = 20) -> dict[str, Any]:
    """Inspect until done(State.Health) holds; the Health record then."""
    health: list[Any] = [None]

    def there() -> bool:
        health[0] = api.inspect_container(cid)["State"].get("Health")
        return health[0] is not None and bool(done(health[0]))

    until(there, timeout, "health never got there")
    return dict(health[0])


def status_is(status: str) -> Any:
    return lambda h: h["Status"] == status


def events_of(api: docker.APIClient, cid: str, since: float) -> list[dict[str, Any]]:
    until = time.time() + 0.5
    return [e for e in api.events(since=since, until=until, decode=True,
                                  filters={"container": cid})]


def ps_status(cli: Cli, name: str, *extra: str) -> str:
    return cli("ps", "-a", "--filter", f"name=^{name}$", *extra, "--format",
               "{{.Status}}").stdout.strip()


def test_probes_statuses_events_and_ps(client: docker.DockerClient, cli: Cli) -> None:
    api = client.api
    since = time.time() - 1
    c = client.containers.run(
        "busybox", ["sleep", "300"], detach=True, name="hc-web",
        healthcheck={"Test": ["CMD-SHELL", "echo out; echo err >&2; test ! -e /tmp/bad"],
                     "Interval": FAST, "Retries": 2})
    plain = client.containers.run("busybox", ["sleep", "300"], detach=True, name="hc-plain")
    info = api.inspect_container(c.id)
    assert info["Config"]["Healthcheck"] == {
        "Test": ["CMD-SHELL", "echo out; echo err >&2; test ! -e /tmp/bad"],
        "Interval": FAST, "Retries": 2}
    assert info["State"]["Health"]["Status"] in ("starting", "healthy")
    # Before its first probe (one interval after the start) a container is starting.
    waiting = client.containers.run("busybox", ["sleep", "300"], detach=True, name="hc-wait",
                                    healthcheck={"Test": ["CMD", "true"], "Interval": 300 * S})
    assert api.inspect_container(waiting.id)["State"]["Health"] == {
        "Status": "starting", "FailingStreak": 0, "Log": []}
    assert ps_status(cli, "hc-wait").endswith("(health: starting)")
    assert "Health" not in api.inspect_container(plain.id)["State"]

    h = wait_health(api, c.id, status_is("healthy"))
    assert h["FailingStreak"] == 0
    entry = h["Log"][-1]
    assert entry["ExitCode"] == 0 and sorted(entry["Output"].splitlines()) == ["err", "out"]
    assert entry["Start"] <= entry["End"]
    assert ps_status(cli, "hc-web").endswith("(healthy)")
    assert ps_status(cli, "hc-plain").startswith("Up ") and "(" not in ps_status(cli, "hc-plain")

    def names(value: str) -> set[str]:
        return set(cli("ps", "--filter", f"health={value}", "--format",
                       "{{.Names}}").stdout.split())
    assert names("healthy") == {"hc-web"}
    assert names("none") == {"hc-plain"}
    assert names("starting") == {"hc-wait"} and names("unhealthy") == set()
    bad = cli("ps", "--filter", "health=bogus", check=False)
    assert bad.returncode != 0
    assert "Unrecognised filter value for health: bogus" in bad.stderr

    # Failing probes: Retries failures in a row make it unhealthy; the log keeps five.
    c.exec_run(["touch", "/tmp/bad"])
    h = wait_health(api, c.id, status_is("unhealthy"))
    assert h["FailingStreak"] >= 2 and h["Log"][-1]["ExitCode"] == 1
    wait_health(api, c.id, lambda h: h["FailingStreak"] >= 5)
    assert len(api.inspect_container(c.id)["State"]["Health"]["Log"]) == 5
    assert ps_status(cli, "hc-web").endswith("(unhealthy)")
    assert names("unhealthy") == {"hc-web"}

    events = events_of(api, c.id, since)
    actions = [e["Action"] for e in events]
    assert "health_status: healthy" in actions and "health_status: unhealthy" in actions
    assert actions.index("health_status: healthy") < actions.index("health_status: unhealthy")
    assert actions.count("health_status: healthy") == 1  # only changes are events
    probe = "/bin/sh -c echo out; echo err >&2; test ! -e /tmp/bad"
    creates = [e for e in events if e["Action"] == f"exec_create: {probe}"]
    starts = [e for e in events if e["Action"] == f"exec_start: {probe}"]
    dies = [e for e in events if e["Action"] == "exec_die"
            and e["Actor"]["Attributes"]["execID"] in
            {x["Actor"]["Attributes"]["execID"] for x in creates}]
    assert len(creates) >= 3 and len(starts) >= len(creates) - 1
    assert {d["Actor"]["Attributes"]["exitCode"] for d in dies} == {"0", "1"}
    assert all(len(e["Actor"]["Attributes"]["execID"]) == 64 for e in creates)
    # dockerd's order per probe: create, start, die, then the status change
    first_healthy = actions.index("health_status: healthy")
    assert actions[first_healthy - 1] == "exec_die"


def test_stop_start_restart_pause_as_dockerd(client: docker.DockerClient, cli: Cli) -> None:
    api = client.api
    c = client.containers.run("busybox", ["sleep", "300"], detach=True, name="hc-life",
                              healthcheck={"Test": ["CMD", "true"], "Interval": FAST})
    wait_health(api, c.id, status_is("healthy"))
    since = time.time()
    c.stop(timeout=0)
    st = api.inspect_container(c.id)["State"]
    # dockerd: a stopped container reads unhealthy (no event), its log kept
    assert st["Health"]["Status"] == "unhealthy" and st["Health"]["Log"]
    assert ps_status(cli, "hc-life").startswith("Exited")
    kept = len(st["Health"]["Log"])
    c.start()
    h = api.inspect_container(c.id)["State"]["Health"]
    assert h["Status"] == "starting" and h["FailingStreak"] == 0 and len(h["Log"]) >= kept
    wait_health(api, c.id, status_is("healthy"))
    c.restart(timeout=0)
    assert api.inspect_container(c.id)["State"]["Health"]["Status"] == "starting"
    wait_health(api, c.id, status_is("healthy"))
    c.pause()
    assert api.inspect_container(c.id)["State"]["Health"]["Status"] == "unhealthy"
    assert ps_status(cli, "hc-life") .endswith("(Paused)")
    c.unpause()
    wait_health(api, c.id, status_is("healthy"))
    actions = [e["Action"] for e in events_of(api, c.id, since)]
    assert "health_status: unhealthy" not in actions


def test_timeout_kills_the_probe_and_caps_output(client: docker.DockerClient) -> None:
    api = client.api
    slow = client.containers.run(
        "busybox", ["sleep", "300"], detach=True, name="hc-slow",
        healthcheck={"Test": ["CMD-SHELL", "echo partial; sleep 30; echo never"],
                     "Interval": FAST, "Timeout": 300 * MS, "Retries": 1})
    loud = client.containers.run(
        "busybox", ["sleep", "300"], detach=True, name="hc-loud",
        healthcheck={"Test": ["CMD-SHELL", "head -c 5000 /dev/zero | tr '\\0' a"],
                     "Interval": FAST})
    h = wait_health(api, slow.id, status_is("unhealthy"))
    assert all(e["ExitCode"] == -1 and e["Output"].startswith(
        "Health check exceeded timeout (300ms)") for e in h["Log"])
    # The output so far is kept. (On a loaded host `runc exec` alone can outlast 300ms,
    # before the shell has written anything: wait for a probe that got that far.)
    wait_health(api, slow.id, lambda h: any(
        e["Output"] == "Health check exceeded timeout (300ms): partial\n" for e in h["Log"]))
    # Each probe and what it started are gone (dockerd leaves the shell's children behind,
    # one more each probe): after five timeouts, only the probe running now and the one
    # whose SIGKILL is still being delivered may have one (a leak would show five or more).
    wait_health(api, slow.id, lambda h: h["FailingStreak"] >= 5)
    lines = slow.exec_run(["ps", "-o", "args"]).output.decode().splitlines()
    assert lines.count("sleep 30") <= 2  # ("[sleep]": killed, unreaped by `sleep 300`)
    h = wait_health(api, loud.id, status_is("healthy"))
    assert h["Log"][-1]["Output"] == "a" * 4096 + "..."


def test_start_period_start_interval_and_failed_exec(client: docker.DockerClient) -> None:
    api = client.api
    grace = client.containers.run(
        "busybox", ["sleep", "300"], detach=True, name="hc-grace",
        healthcheck={"Test": ["CMD", "false"], "Interval": FAST, "Retries": 1,
                     "StartPeriod": 120 * S})
    # StartInterval while starting: probes every 200ms though the interval is a minute.
    # (the raw API: docker-py's Healthcheck type drops StartInterval)
    res = api.post(f"{api.base_url}/v1.44/containers/create", params={"name": "hc-quick"},
                   json={"Image": "busybox", "Cmd": ["sleep", "300"],
                         "Healthcheck": {"Test": ["CMD", "false"], "Interval": 60 * S,
                                         "StartInterval": FAST, "StartPeriod": 120 * S}})
    quick = client.containers.get(res.json()["Id"])
    quick.start()
    missing = client.containers.run(
        "busybox", ["sleep", "300"], detach=True, name="hc-missing",
        healthcheck={"Test": ["CMD", "nope", "a b"], "Interval": FAST, "Retries": 1})
    h = wait_health(api, grace.id, lambda h: len(h["Log"]) >= 3)
    assert h["Status"] == "starting" and h["FailingStreak"] == 0
    assert all(e["ExitCode"] == 1 for e in h["Log"])
    # two probes well before the default start interval (5s) could have run twice
    h = wait_health(api, quick.id, lambda h: len(h["Log"]) >= 2, timeout=4)
    assert h["Status"] == "starting"
    h = wait_health(api, missing.id, status_is("unhealthy"))
    assert h["Log"][-1]["ExitCode"] == -1
    assert h["Log"][-1]["Output"].startswith("OCI runtime exec failed: ")
    assert 'exec: "nope": executable file not found in $PATH' in h["Log"][-1]["Output"]
    assert h["Log"][-1]["Output"].endswith(": unknown")


@pytest.mark.parametrize("hc, message", [
    ({"Test": ["CMD", "true"], "Interval": 100}, "Interval in Healthcheck cannot be less than 1ms"),
    ({"Test": ["CMD", "true"], "Timeout": -1}, "Timeout in Healthcheck cannot be less than 1ms"),
    ({"Test": ["CMD", "true"], "Retries": -1}, "Retries in Healthcheck cannot be negative"),
    ({"StartPeriod": 5}, "StartPeriod in Healthcheck cannot be less than 1ms"),
    ({"StartInterval": 5}, "StartInterval in Healthcheck cannot be less than 1ms"),
    ({"Test": "CMD true"}, "cannot unmarshal string"),
])
def test_bad_healthchecks_are_400(client: docker.DockerClient, hc: dict[str, Any],
                                  message: str) -> None:
    # The raw API: docker-py's Healthcheck type drops StartInterval and rewrites a string Test.
    api = client.api
    res = api.post(f"{api.base_url}/v1.44/containers/create", params={"name": "hc-bad"},
                   json={"Image": "busybox", "Cmd": ["true"], "Healthcheck": hc})
    assert res.status_code == 400, res.text
    assert message in res.json()["message"]
    assert not client.containers.list(all=True, filters={"name": "hc-bad"})


def test_start_interval_needs_api_1_44(client: docker.DockerClient) -> None:
    api = client.api
    body = {"Image": "busybox", "Cmd": ["true"],
            "Healthcheck": {"Test": ["CMD", "true"], "StartInterval": 5}}
    res = api.post(f"{api.base_url}/v1.41/containers/create", json=body)
    assert res.status_code == 201, res.text  # ignored below 1.44, so not refused
    assert api.inspect_container(res.json()["Id"])["Config"]["Healthcheck"] == {
        "Test": ["CMD", "true"]}
    body["Healthcheck"]["StartInterval"] = 2 * S
    res = api.post(f"{api.base_url}/v1.44/containers/create", json=body)
    assert api.inspect_container(res.json()["Id"])["Config"]["Healthcheck"] == {
        "Test": ["CMD", "true"], "StartInterval": 2 * S}


def test_image_healthcheck_merge_commit_save_load(client: docker.DockerClient, cli: Cli,
                                                  tmp_path: Path) -> None:
    api = client.api
    base = client.containers.create("busybox", ["true"], name="hc-base")
    cli("commit", "--change", "HEALTHCHECK --interval=2s --timeout=3s --start-period=4s "
        "--start-interval=1s --retries=5 CMD echo img", "hc-base", "hc-img:1")
    image_hc = {"Test": ["CMD-SHELL", "echo img"], "Interval": 2 * S, "Timeout": 3 * S,
                "StartPeriod": 4 * S, "StartInterval": S, "Retries": 5}
    assert api.inspect_image("hc-img:1")["Config"]["Healthcheck"] == image_hc
    try:
        def run_hc(*flags: str) -> dict[str, Any]:
            cid = cli("create", *flags, "hc-img:1", "sleep", "300").stdout.strip()
            return dict(api.inspect_container(cid)["Config"].get("Healthcheck") or {})
        assert run_hc() == image_hc
        assert run_hc("--health-interval", "7s") == {**image_hc, "Interval": 7 * S}
        assert run_hc("--health-cmd", "exit 0", "--health-retries", "1") == {
            **image_hc, "Test": ["CMD-SHELL", "exit 0"], "Retries": 1}
        # --no-healthcheck: NONE with the image's other fields (as dockerd), and no probe
        assert run_hc("--no-healthcheck") == {**image_hc, "Test": ["NONE"]}
        none = client.containers.run("hc-img:1", ["sleep", "300"], detach=True,
                                     healthcheck={"Test": ["NONE"]}, name="hc-none")
        assert "Health" not in api.inspect_container(none.id)["State"]
        assert "(" not in ps_status(cli, "hc-none")

        # commit keeps a container's healthcheck; save/load keeps the image's
        probed = client.containers.create("busybox", ["true"], name="hc-probed",
                                          healthcheck={"Test": ["CMD", "true"],
                                                       "Interval": 3 * S})
        client.images.get(probed.commit("hc-img", "2").id)
        assert api.inspect_image("hc-img:2")["Config"]["Healthcheck"] == {
            "Test": ["CMD", "true"], "Interval": 3 * S}
        archive = tmp_path / "img.tar"
        cli("save", "-o", str(archive), "hc-img:1")
        for c in client.containers.list(all=True):
            c.remove(force=True)
        cli("rmi", "hc-img:1")
        cli("load", "-i", str(archive))
        assert api.inspect_image("hc-img:1")["Config"]["Healthcheck"] == image_hc
    finally:
        for c in client.containers.list(all=True):
            c.remove(force=True)
        for tag in ("hc-img:1", "hc-img:2"):
            cli("rmi", "-f", tag, check=False)
    del base


def test_probing_goes_on_after_sigkill_of_stowd(own_daemon: Daemon) -> None:
    client = own_daemon.client()
    c = client.containers.run("busybox", ["sleep", "300"], detach=True, name="hc-survivor",
                              healthcheck={"Test": ["CMD-SHELL", "test ! -e /tmp/bad"],
                                           "Interval": FAST, "Retries": 1})
    wait_health(client.api, c.id, status_is("healthy"))
    client.close()
    own_daemon.kill9()
    own_daemon.start()
    client = own_daemon.client()
    h = client.api.inspect_container(c.id)["State"]["Health"]
    assert h["Status"] == "healthy"  # kept across the restart, not reset to starting
    c.exec_run(["touch", "/tmp/bad"])
    h = wait_health(client.api, c.id, status_is("unhealthy"))
    assert h["Log"][-1]["ExitCode"] == 1
    client.close()


COMPOSE = """\
version: "2.4"
services:
  web:
    image: busybox
    command: ["sh", "-c", "sleep 2; touch /tmp/ready; exec sleep 300"]
    healthcheck:
      test: ["CMD", "test", "-e", "/tmp/ready"]
      interval: 200ms
      retries: 50
  client:
    image: busybox
    command: ["sleep", "300"]
    depends_on:
      web:
        condition: service_healthy
"""


@pytest.fixture
def compose_project(tmp_path: Path, cli: Cli) -> Iterator[tuple[Path, dict[str, str]]]:
    (tmp_path / "docker-compose.yml").write_text(COMPOSE)
    env = dict(cli.env, COMPOSE_PROJECT_NAME="hcproj")
    yield tmp_path, env
    subprocess.run(["docker-compose", "down", "-t", "0"], cwd=tmp_path, env=env,
                   capture_output=True, timeout=120, check=False)


def test_compose_service_healthy_dependency(client: docker.DockerClient,
                                            compose_project: tuple[Path, dict[str, str]]
                                            ) -> None:
    project, env = compose_project
    since = time.time() - 1
    up = subprocess.run(["docker-compose", "up", "-d"], cwd=project, env=env,
                        capture_output=True, text=True, timeout=120, check=False)
    assert up.returncode == 0, up.stderr
    web = client.containers.get("hcproj_web_1")
    other = client.containers.get("hcproj_client_1")
    assert other.status == "running"
    assert client.api.inspect_container(web.id)["State"]["Health"]["Status"] == "healthy"
    events = [e for e in client.api.events(since=since, until=time.time() + 0.5, decode=True)
              if e.get("Type") == "container"]
    healthy = [e["timeNano"] for e in events
               if e["Action"] == "health_status: healthy" and e["id"] == web.id]
    started = [e["timeNano"] for e in events if e["Action"] == "start" and e["id"] == other.id]
    assert healthy and started and started[0] > healthy[0]
    print(json.dumps({"healthy": healthy[0], "client_started": started[0]}))


def test_built_image_healthcheck_probes(client: docker.DockerClient) -> None:
    """The builder keeps HEALTHCHECK in the image config; containers of it are probed."""
    dockerfile = b"FROM busybox\nHEALTHCHECK --interval=200ms --retries=2 CMD test -e /bin/sh\n"
    image, _ = client.images.build(fileobj=io.BytesIO(dockerfile), tag="hc-built:1", rm=True)
    try:
        assert image.attrs["Config"]["Healthcheck"] == {
            "Test": ["CMD-SHELL", "test -e /bin/sh"], "Interval": FAST, "Retries": 2}
        c = client.containers.run("hc-built:1", ["sleep", "300"], detach=True)
        h = wait_health(client.api, c.id, status_is("healthy"))
        assert h["Log"][-1]["ExitCode"] == 0
        c.remove(force=True)
    finally:
        client.images.remove("hc-built:1", force=True)


def test_a_success_ends_the_start_period(client: docker.DockerClient) -> None:
    """Failures inside the start period do not count until a probe succeeds; after that
    they do, though the period has not run out (dockerd's rule)."""
    api = client.api
    c = client.containers.run(
        "busybox", ["sleep", "300"], detach=True, name="hc-period",
        healthcheck={"Test": ["CMD-SHELL", "test -e /tmp/ok"], "Interval": FAST,
                     "Retries": 1, "StartPeriod": 300 * S})
    h = wait_health(api, c.id, lambda h: len(h["Log"]) >= 2)
    assert h["Status"] == "starting" and h["FailingStreak"] == 0
    c.exec_run(["touch", "/tmp/ok"])
    wait_health(api, c.id, status_is("healthy"))
    c.exec_run(["rm", "/tmp/ok"])
    h = wait_health(api, c.id, status_is("unhealthy"))
    assert h["FailingStreak"] == 1


def test_cmd_shell_probes_run_through_the_images_shell(client: docker.DockerClient) -> None:
    """CMD-SHELL goes through the container's Shell (from the image's SHELL), as dockerd."""
    dockerfile = (b'FROM busybox\nSHELL ["/bin/echo", "via-shell"]\n'
                  b"HEALTHCHECK --interval=200ms CMD probe words\n")
    image, _ = client.images.build(fileobj=io.BytesIO(dockerfile), tag="hc-shell:1", rm=True)
    try:
        assert image.attrs["Config"]["Shell"] == ["/bin/echo", "via-shell"]
        c = client.containers.run("hc-shell:1", ["sleep", "300"], detach=True,
                                  name="hc-shell")
        h = wait_health(client.api, c.id, status_is("healthy"))
        assert h["Log"][-1]["Output"] == "via-shell probe words\n"
        c.remove(force=True)
    finally:
        client.images.remove("hc-shell:1", force=True)
        client.api.prune_builds()  # the SHELL step's cache record (system df counts it)
