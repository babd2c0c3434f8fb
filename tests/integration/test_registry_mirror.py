"""`--registry-mirror`: Docker Hub pulls served by a local docker-registry acting as the mirror.

Nothing here reaches Docker Hub: the test daemon's docker.io (STOWD_HUB_HOST) is a second
local registry, and both registries sit behind recording proxies, so each test sees which
of them answered. The first mirror given is a closed port (an unreachable mirror is skipped,
as dockerd does).
"""

import json
from collections.abc import Iterator
from dataclasses import dataclass

import docker
import pytest

from tests.daemon import Daemon
from tests.integration.conftest import Cli
from tests.registry import Pushed, Registry, SlowProxy, busybox_layer, files_layer

FAST = 1 << 30  # bytes a second: the proxies only record


@dataclass
class Hub:
    mirror: Registry
    mirror_proxy: SlowProxy
    hub: Registry
    hub_proxy: SlowProxy
    busybox: Pushed


@pytest.fixture(scope="module")
def hub() -> Iterator[Hub]:
    mirror, upstream = Registry.start(), Registry.start()
    mirror_proxy, hub_proxy = SlowProxy(mirror.port, FAST), SlowProxy(upstream.port, FAST)
    # The test's own busybox, in the mirror only (a pull-through cache would hold it so).
    busybox = mirror.push_image("library/busybox", "latest", [busybox_layer(marker="mirror")])
    yield Hub(mirror, mirror_proxy, upstream, hub_proxy, busybox)
    for p in (mirror_proxy, hub_proxy):
        p.stop()
    mirror.stop()
    upstream.stop()


@pytest.fixture(scope="module")
def mirrored(hub: Hub) -> Iterator[Daemon]:
    d = Daemon(extra_args=["--registry-mirror", "http://127.0.0.1:9",
                           "--registry-mirror", f"http://{hub.mirror_proxy.host}"])
    d.env["STOWD_HUB_HOST"] = hub.hub_proxy.host
    d.start()
    yield d
    d.cleanup()
    assert not d.blocking_calls, "blocking calls on the event loop:\n" + "\n".join(
        d.blocking_calls)


@pytest.fixture
def mcli(mirrored: Daemon) -> Cli:
    return Cli(mirrored)


@pytest.fixture
def mclient(mirrored: Daemon) -> Iterator[docker.DockerClient]:
    c = mirrored.client()
    yield c
    for ctr in c.containers.list(all=True):
        ctr.remove(force=True)
    for image in c.images.list():
        c.images.remove(image.id, force=True)
    c.close()


def _asked(proxy: SlowProxy, what: str) -> list[str]:
    return [r for r in proxy.requests if what in r]


def test_docker_hub_pull_is_served_by_the_mirror(mcli: Cli, mclient: docker.DockerClient,
                                                 hub: Hub) -> None:
    res = mcli("pull", "busybox")
    assert "latest: Pulling from library/busybox" in res.stdout
    assert f"Digest: {hub.busybox.digest}" in res.stdout
    assert "Status: Downloaded newer image for busybox:latest" in res.stdout
    assert _asked(hub.mirror_proxy, "GET /v2/library/busybox/manifests/latest")
    for layer in hub.busybox.manifest["layers"]:
        assert hub.mirror_proxy.blob_gets(layer["digest"]) == 1
    assert not _asked(hub.hub_proxy, "/v2/library/busybox"), "docker.io was asked"
    info = mclient.api.inspect_image("busybox")
    assert info["Id"] == hub.busybox.config_digest
    assert info["RepoTags"] == ["busybox:latest"]
    assert info["RepoDigests"] == [f"busybox@{hub.busybox.digest}"]
    out = mcli("run", "--rm", "busybox", "cat", "/etc/marker").stdout
    assert out.strip() == "mirror"
    # `docker info` lists the mirrors as dockerd normalises them.
    config = json.loads(mcli("info", "--format", "{{json .RegistryConfig}}").stdout)
    assert config["Mirrors"] == ["http://127.0.0.1:9/", f"http://{hub.mirror_proxy.host}/"]
    assert config["IndexConfigs"]["docker.io"]["Mirrors"] == config["Mirrors"]


def test_an_image_the_mirror_lacks_comes_from_the_registry(
        mclient: docker.DockerClient, hub: Hub) -> None:
    # As dockerd: whatever fails on a mirror, the next endpoint is asked.
    pushed = hub.hub.push_image("library/onlyhub", "1", [busybox_layer(marker="hub"),
                                                         files_layer({"hub": b"1"})])
    lines = list(mclient.api.pull("onlyhub", tag="1", stream=True, decode=True))
    assert not [line for line in lines if "error" in line], lines
    assert {"status": f"Digest: {pushed.digest}"} in lines
    assert _asked(hub.mirror_proxy, "GET /v2/library/onlyhub/manifests/1")
    assert _asked(hub.hub_proxy, "GET /v2/library/onlyhub/manifests/1")
    assert mclient.images.get("onlyhub:1").id == pushed.config_digest


def test_an_image_nowhere_is_the_registrys_not_found(mcli: Cli, hub: Hub) -> None:
    res = mcli("pull", "nowhere:1", check=False)
    assert res.returncode != 0
    assert "manifest for nowhere:1 not found" in res.stderr
    assert _asked(hub.mirror_proxy, "GET /v2/library/nowhere/manifests/1")
    assert _asked(hub.hub_proxy, "GET /v2/library/nowhere/manifests/1")
