"""Testcontainers (testcontainers-python) against stowd: `DockerImage` builds through
docker-py's `images.build` (the classic builder), `DockerContainer` runs the image with a
published port, waits on its logs, execs into it and removes what it made."""

import urllib.request
from pathlib import Path

import docker
import pytest
from testcontainers.core.config import testcontainers_config
from testcontainers.core.container import DockerContainer
from testcontainers.core.image import DockerImage
from testcontainers.core.wait_strategies import LogMessageWaitStrategy

from tests.daemon import Daemon

DOCKERFILE = """\
FROM busybox
RUN mkdir /www && echo built by stowd > /www/index.html
EXPOSE 8080
CMD ["sh", "-c", "echo ready; exec httpd -f -p 8080 -h /www"]
"""


def test_docker_image_build_and_container_run(daemon: Daemon, client: docker.DockerClient,
                                              tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", daemon.url)
    # Ryuk, the reaper container, is an image from Docker Hub: not reachable here.
    monkeypatch.setattr(testcontainers_config, "ryuk_disabled", True)
    (tmp_path / "Dockerfile").write_text(DOCKERFILE)
    before = {c.id for c in client.containers.list(all=True)}
    with DockerImage(path=tmp_path, tag="tc-built:latest") as image:
        streams = "".join(line.get("stream", "") for line in image.get_logs())
        assert f"Successfully built {image.short_id}" in streams
        assert client.images.get("tc-built:latest").id.startswith(f"sha256:{image.short_id}")
        container = DockerContainer(str(image)).with_exposed_ports(8080).waiting_for(
            LogMessageWaitStrategy("ready"))
        with container:
            host = container.get_container_host_ip()
            port = container.get_exposed_port(8080)
            with urllib.request.urlopen(f"http://{host}:{port}/", timeout=10) as reply:
                assert reply.read() == b"built by stowd\n"
            assert container.exec(["cat", "/www/index.html"]).output == b"built by stowd\n"
    # Both cleaned up on leaving: the container removed, the image (and its steps) too.
    assert {c.id for c in client.containers.list(all=True)} == before
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get("tc-built:latest")
