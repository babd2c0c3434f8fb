"""Restart policies and AutoRemove, as Docker applies them."""

import itertools
import os
import signal
import time

import docker

from tests.daemon import Daemon
from tests.integration.conftest import Cli
from tests.waits import until


def _until(pred, timeout: float = 15.0) -> bool:  # type: ignore[no-untyped-def]
    until(pred, timeout)
    return True


# The engine decides at the exit whether a container restarts (its status is `restarting`
# from then on, before any waiter hears of the exit): once a wait has returned or a stop
# has answered, `exited` is final, so the tests below look at once instead of sleeping.


def test_on_failure_retries_then_gives_up(client: docker.DockerClient,
                                          api: docker.APIClient) -> None:
    ctr = client.containers.run("busybox", ["sh", "-c", "exit 3"], detach=True,
                                restart_policy={"Name": "on-failure", "MaximumRetryCount": 2})
    assert _until(lambda: api.inspect_container(ctr.id)["RestartCount"] == 2
                  and api.inspect_container(ctr.id)["State"]["Status"] == "exited")
    info = api.inspect_container(ctr.id)
    assert info["RestartCount"] == 2
    assert info["State"]["Status"] == "exited" and info["State"]["ExitCode"] == 3


def test_on_failure_does_not_restart_success(client: docker.DockerClient,
                                             api: docker.APIClient) -> None:
    ctr = client.containers.run("busybox", ["true"], detach=True,
                                restart_policy={"Name": "on-failure"})
    ctr.wait(timeout=10)
    info = api.inspect_container(ctr.id)
    assert info["State"]["Status"] == "exited" and info["RestartCount"] == 0


def test_always_restarts_until_stopped(client: docker.DockerClient,
                                       api: docker.APIClient) -> None:
    ctr = client.containers.run("busybox", ["sh", "-c", "sleep 0.2"], detach=True,
                                restart_policy={"Name": "always"})
    assert _until(lambda: api.inspect_container(ctr.id)["RestartCount"] >= 2)
    ctr.stop(timeout=1)
    info = api.inspect_container(ctr.id)
    assert info["State"]["Status"] == "exited"  # not `restarting`: it stays stopped


def test_unless_stopped_is_not_revived_by_kill(client: docker.DockerClient,
                                               api: docker.APIClient) -> None:
    ctr = client.containers.run("busybox", ["sleep", "300"], detach=True,
                                restart_policy={"Name": "unless-stopped"})
    ctr.kill()
    ctr.wait(timeout=10)
    info = api.inspect_container(ctr.id)
    assert info["State"]["Status"] == "exited" and info["RestartCount"] == 0


def test_auto_remove(client: docker.DockerClient, api: docker.APIClient) -> None:
    ctr = client.containers.run("busybox", ["true"], detach=True, auto_remove=True)
    assert _until(lambda: ctr.id not in {c["Id"] for c in api.containers(all=True)})


POLICIES = {"p-no": {"Name": "no"}, "p-always": {"Name": "always"},
            "p-unless": {"Name": "unless-stopped"},
            "p-onfail": {"Name": "on-failure", "MaximumRetryCount": 3}}


def _statuses(api: docker.APIClient) -> dict[str, str]:
    return {n: api.inspect_container(n)["State"]["Status"] for n in POLICIES}


def test_each_policy_through_user_stop_daemon_restart_and_sigkill(own_daemon: Daemon) -> None:
    client = own_daemon.client()
    api = client.api
    for name, policy in POLICIES.items():
        client.containers.run("busybox", ["sleep", "600"], detach=True, name=name,
                              restart_policy=policy)
    # A daemon SIGKILL while they run: containers outlive stowd and are found running.
    client.close()
    own_daemon.kill9()
    own_daemon.start()
    client = own_daemon.client()
    api = client.api
    assert set(_statuses(api).values()) == {"running"}

    # A user's stop: none comes back while the daemon runs.
    for name in POLICIES:
        api.stop(name, timeout=0)
    assert set(_statuses(api).values()) == {"exited"}

    # Daemon stop and start: `always` comes back even after the user's stop; the others
    # stay stopped (dockerd's restore).
    client.close()
    own_daemon.stop()
    own_daemon.start()
    client = own_daemon.client()
    api = client.api
    assert _until(lambda: _statuses(api)["p-always"] == "running")
    info = api.inspect_container("p-always")
    assert info["RestartCount"] == 0 and info["State"]["Pid"] > 0
    st = _statuses(api)
    assert st == {"p-no": "exited", "p-always": "running", "p-unless": "exited",
                  "p-onfail": "exited"}

    # Exits while the daemon is down (killed, 137): every policy but `no` starts them again
    # when it comes back, as dockerd's restore does: a user's start, the count reset.
    for name in ("p-no", "p-unless", "p-onfail"):
        api.start(name)
    pids = {n: api.inspect_container(n)["State"]["Pid"] for n in POLICIES}
    client.close()
    own_daemon.kill9()
    for pid in pids.values():
        os.kill(pid, signal.SIGKILL)
    own_daemon.start()
    client = own_daemon.client()
    api = client.api
    def back(n: str) -> bool:
        st = api.inspect_container(n)["State"]
        return st["Status"] == "running" and st["Pid"] not in (0, pids[n])
    assert _until(lambda: all(back(n) for n in ("p-always", "p-unless", "p-onfail")))
    for n in ("p-always", "p-unless", "p-onfail"):
        assert api.inspect_container(n)["RestartCount"] == 0
    info = api.inspect_container("p-no")
    assert info["State"]["Status"] == "exited" and info["State"]["ExitCode"] == 137
    client.close()


def test_backoff_doubles_and_ps_shows_restarting(client: docker.DockerClient,
                                                 api: docker.APIClient, cli: Cli) -> None:
    since = time.time()
    ctr = client.containers.run("busybox", ["sh", "-c", "exit 2"], detach=True,
                                restart_policy={"Name": "on-failure", "MaximumRetryCount": 4})
    assert _until(lambda: api.inspect_container(ctr.id)["RestartCount"] == 4
                  and api.inspect_container(ctr.id)["State"]["Status"] == "exited", 20)
    events = api.events(since=since, until=time.time(), decode=True,
                        filters={"container": ctr.id, "event": ["die", "start"]})
    times = [(e["status"], e["timeNano"] / 1e9) for e in events]
    gaps = [start - die for (a, die), (b, start) in itertools.pairwise(times)
            if a == "die" and b == "start"]
    assert len(gaps) == 4, times
    for i, gap in enumerate(gaps):  # 100 ms, 200 ms, 400 ms, 800 ms at least
        assert gap >= 0.1 * 2 ** i * 0.95, gaps
    # Restarting shows in `docker ps` with the exit code, as dockerd words it.
    ctr2 = client.containers.run("busybox", ["sh", "-c", "exit 3"], detach=True,
                                 restart_policy={"Name": "always"})
    seen: list[str] = []

    def restarting() -> bool:
        out = cli("ps", "-a", "--filter", f"id={ctr2.id}", "--format", "{{.Status}}").stdout
        seen.append(out.strip())
        return out.startswith("Restarting (3) ") and out.strip().endswith("ago")
    assert _until(restarting, 20), seen
    ctr2.remove(force=True)


def test_update_restart_policy_of_a_running_container(client: docker.DockerClient,
                                                      api: docker.APIClient) -> None:
    ctr = client.containers.run("busybox", ["sleep", "600"], detach=True)
    ctr.update(restart_policy={"Name": "always"})
    assert api.inspect_container(ctr.id)["HostConfig"]["RestartPolicy"]["Name"] == "always"
    os.kill(api.inspect_container(ctr.id)["State"]["Pid"], signal.SIGKILL)
    assert _until(lambda: api.inspect_container(ctr.id)["RestartCount"] == 1
                  and api.inspect_container(ctr.id)["State"]["Status"] == "running")
    # A user's start begins a new count.
    ctr.stop(timeout=1)
    ctr.start()
    assert api.inspect_container(ctr.id)["RestartCount"] == 0
