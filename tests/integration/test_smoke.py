"""The shortest path a user takes: run a container and read what it printed."""

import docker


def test_run_detached_and_read_logs(client: docker.DockerClient) -> None:
    ctr = client.containers.run("busybox", ["sh", "-c", "echo hello; echo oops >&2; exit 3"],
                                detach=True)
    assert ctr.wait(timeout=30)["StatusCode"] == 3
    assert ctr.logs(stdout=True, stderr=False) == b"hello\n"
    assert ctr.logs(stdout=False, stderr=True) == b"oops\n"
