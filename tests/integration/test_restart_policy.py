"""Restart policies and AutoRemove, as Docker applies them."""

import time

import docker


def _until(pred, timeout: float = 15.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_on_failure_retries_then_gives_up(client: docker.DockerClient,
                                          api: docker.APIClient) -> None:
    ctr = client.containers.run("busybox", ["sh", "-c", "exit 3"], detach=True,
                                restart_policy={"Name": "on-failure", "MaximumRetryCount": 2})
    assert _until(lambda: api.inspect_container(ctr.id)["RestartCount"] == 2
                  and api.inspect_container(ctr.id)["State"]["Status"] == "exited")
    time.sleep(1.0)
    info = api.inspect_container(ctr.id)
    assert info["RestartCount"] == 2
    assert info["State"]["Status"] == "exited" and info["State"]["ExitCode"] == 3


def test_on_failure_does_not_restart_success(client: docker.DockerClient,
                                             api: docker.APIClient) -> None:
    ctr = client.containers.run("busybox", ["true"], detach=True,
                                restart_policy={"Name": "on-failure"})
    ctr.wait(timeout=10)
    time.sleep(0.5)
    assert api.inspect_container(ctr.id)["RestartCount"] == 0


def test_always_restarts_until_stopped(client: docker.DockerClient,
                                       api: docker.APIClient) -> None:
    ctr = client.containers.run("busybox", ["sh", "-c", "sleep 0.2"], detach=True,
                                restart_policy={"Name": "always"})
    assert _until(lambda: api.inspect_container(ctr.id)["RestartCount"] >= 2)
    ctr.stop(timeout=1)
    count = api.inspect_container(ctr.id)["RestartCount"]
    time.sleep(1.0)
    info = api.inspect_container(ctr.id)
    assert info["State"]["Status"] == "exited"
    assert info["RestartCount"] == count


def test_unless_stopped_is_not_revived_by_kill(client: docker.DockerClient,
                                               api: docker.APIClient) -> None:
    ctr = client.containers.run("busybox", ["sleep", "300"], detach=True,
                                restart_policy={"Name": "unless-stopped"})
    ctr.kill()
    ctr.wait(timeout=10)
    time.sleep(0.5)
    info = api.inspect_container(ctr.id)
    assert info["State"]["Status"] == "exited" and info["RestartCount"] == 0


def test_auto_remove(client: docker.DockerClient, api: docker.APIClient) -> None:
    ctr = client.containers.run("busybox", ["true"], detach=True, auto_remove=True)
    assert _until(lambda: ctr.id not in {c["Id"] for c in api.containers(all=True)})
