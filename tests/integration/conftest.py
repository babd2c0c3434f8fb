"""Integration fixtures: one real stowd per session, real runc, real clients."""

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import docker
import pytest

from tests.daemon import Daemon, leftover_conmons


@pytest.fixture(scope="session")
def daemon() -> Iterator[Daemon]:
    if os.geteuid() != 0:
        pytest.skip("integration tests need root (containers, mounts, cgroups)")
    d = Daemon().start()
    d.import_busybox()
    assert "blocking calls on the event loop will raise" in d.log()
    yield d
    d.cleanup()
    assert not leftover_conmons(d.data_root), "conmon processes were left behind"
    assert not d.blocking_calls, "blocking calls on the event loop:\n" + "\n".join(
        d.blocking_calls)


@pytest.fixture
def own_daemon() -> Iterator[Daemon]:
    """A daemon of the test's own, for tests that kill or restart it."""
    d = Daemon().start()
    d.import_busybox()
    yield d
    d.cleanup()
    assert not leftover_conmons(d.data_root)
    assert not d.blocking_calls, "blocking calls on the event loop:\n" + "\n".join(
        d.blocking_calls)


@pytest.fixture
def client(daemon: Daemon) -> Iterator[docker.DockerClient]:
    c = daemon.client()
    yield c
    for ctr in c.containers.list(all=True):
        ctr.remove(force=True)
    c.close()


@pytest.fixture
def api(client: docker.DockerClient) -> docker.APIClient:
    return client.api


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


class Cli:
    """The real docker CLI pointed at the test daemon."""

    def __init__(self, daemon: Daemon) -> None:
        self.env = dict(os.environ, DOCKER_HOST=daemon.url, DOCKER_CONFIG="/tmp/stowd-docker-cfg")
        self.env.pop("DOCKER_CONTEXT", None)

    def __call__(self, *args: str, input: str | None = None, timeout: float = 60,
                 check: bool = True) -> CliResult:
        proc = subprocess.run(["docker", *args], capture_output=True, text=True, env=self.env,
                              input=input, timeout=timeout, check=False)
        result = CliResult(proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed ({proc.returncode}): "
                                 f"{proc.stderr}")
        return result


@pytest.fixture
def cli(daemon: Daemon, client: docker.DockerClient) -> Cli:
    return Cli(daemon)
