"""docker commit, image history, docker update and container prune."""

import docker
import pytest
from docker.errors import APIError

from tests.daemon import Daemon
from tests.integration.conftest import Cli
from tests.waits import logs_show, url


def test_commit_keeps_changes_and_applies_config(client: docker.DockerClient,
                                                 cli: Cli) -> None:
    ctr = client.containers.run("busybox", ["sh", "-c", "echo data > /newfile; rm /bin/vi; "
                                            "mkdir -p /etc/x && echo y > /etc/x/z; "
                                            "echo ready; sleep 60"],
                                detach=True, environment={"KEEP": "me"})
    logs_show(ctr, b"ready")  # the changes are made
    image = ctr.commit(repository="committed", tag="v1", message="my commit", author="me",
                       changes=['CMD ["cat", "/newfile"]'])
    try:
        assert ctr.status in ("running", "created")
        ctr.reload()
        assert ctr.attrs["State"]["Running"]  # the pause during commit was undone
        assert image.tags == ["committed:v1"]
        assert image.attrs["Comment"] == "my commit" and image.attrs["Author"] == "me"
        assert image.attrs["Config"]["Cmd"] == ["cat", "/newfile"]
        assert "KEEP=me" in image.attrs["Config"]["Env"]
        assert len(image.attrs["RootFS"]["Layers"]) == 2
        assert image.attrs["Parent"] == client.images.get("busybox").id
        assert client.containers.run("committed:v1", remove=True) == b"data\n"
        out = cli("run", "--rm", "committed:v1", "sh", "-c",
                  "ls /bin/vi 2>&1; cat /etc/x/z").stdout
        assert "No such file" in out and out.endswith("y\n")
        history = client.api.history("committed:v1")
        assert history[0]["Id"] == image.id and history[0]["Comment"] == "my commit"
        # The parent is here, so its row is named by its ID (dockerd walks Parent too).
        assert history[0]["Size"] > 0
        assert history[1]["Id"] == client.images.get("busybox").id
    finally:
        ctr.remove(force=True)
        client.images.remove("committed:v1")


def test_commit_errors(api: docker.APIClient) -> None:
    with pytest.raises(docker.errors.NotFound):
        api.commit("no-such-container", repository="x")
    cid = api.create_container("busybox", ["true"])["Id"]
    with pytest.raises(APIError) as err:
        api.commit(cid, repository="Bad:Name")
    assert err.value.status_code == 400
    with pytest.raises(APIError) as err:
        api.commit(cid, repository="fine", changes=["NOPE x"])
    assert err.value.status_code == 400


def test_update_resources_and_restart_policy(client: docker.DockerClient,
                                             api: docker.APIClient, daemon: Daemon) -> None:
    ctr = client.containers.run("busybox", ["sleep", "60"], detach=True, mem_limit="400m",
                                restart_policy={"Name": "always"})
    ctr.update(mem_limit="300m", restart_policy={"Name": "on-failure",
                                                 "MaximumRetryCount": 42})
    info = api.inspect_container(ctr.id)
    assert info["HostConfig"]["Memory"] == 300 * 1024 * 1024
    assert info["HostConfig"]["RestartPolicy"] == {"Name": "on-failure",
                                                  "MaximumRetryCount": 42}
    from pathlib import Path

    cg = Path("/sys/fs/cgroup/memory") / daemon.cgroup_parent / ctr.id
    if cg.exists():
        assert int((cg / "memory.limit_in_bytes").read_text()) == 300 * 1024 * 1024
    with pytest.raises(APIError) as err:
        ctr.update(mem_limit="1k")
    assert err.value.status_code == 400
    with pytest.raises(APIError) as err:
        ctr.update(restart_policy={"Name": "sometimes"})
    assert err.value.status_code == 400


def test_prune_removes_only_stopped(client: docker.DockerClient, api: docker.APIClient) -> None:
    done = client.containers.run("busybox", ["sh", "-c", "echo hello > /data.txt"],
                                 detach=True)
    done.wait(timeout=10)
    running = client.containers.run("busybox", ["sleep", "60"], detach=True)
    labelled = client.containers.create("busybox", ["true"], labels={"keep": "yes"})
    result = api.prune_containers(filters={"label!": "keep=yes"})
    assert done.id in result["ContainersDeleted"]
    assert running.id not in result["ContainersDeleted"]
    assert labelled.id not in result["ContainersDeleted"]
    assert result["SpaceReclaimed"] > 0
    assert {c["Id"] for c in api.containers(all=True)} == {running.id, labelled.id}


def test_image_prune(client: docker.DockerClient, api: docker.APIClient) -> None:
    base = client.images.get("busybox")
    ctr = client.containers.create("busybox", ["true"])
    dangling = ctr.commit()  # no tag: dangling
    tagged = ctr.commit(repository="prune-me", tag="v1", changes=["LABEL prune=yes"])
    ctr.remove()
    result = api.prune_images()
    assert {"Deleted": dangling.id} in result["ImagesDeleted"]
    assert client.images.get("prune-me:v1").id == tagged.id  # tagged: kept
    # dangling=false prunes unused tagged images too; the label keeps busybox out of it.
    result = api.prune_images(filters={"dangling": False, "label": "prune=yes"})
    assert {"Untagged": "prune-me:v1"} in result["ImagesDeleted"]
    assert result["SpaceReclaimed"] >= 0
    assert client.images.get("busybox").id == base.id
    assert (api.post(url(api, "/build/prune")).json() ==
            {"CachesDeleted": None, "SpaceReclaimed": 0})


def test_swarm_answers_as_a_plain_engine(api: docker.APIClient) -> None:
    res = api.get(url(api, "/swarm"))
    assert res.status_code == 503 and "not a swarm manager" in res.json()["message"]
    res = api.post(url(api, "/swarm/leave"), params={"force": 1})
    assert res.status_code == 503 and res.json()["message"] == "This node is not part of a swarm"
    assert api.get(url(api, "/plugins")).json() == []


def test_limits_given_at_create_reach_the_cgroup(client: docker.DockerClient,
                                                 daemon: Daemon) -> None:
    from pathlib import Path

    ctr = client.containers.run("busybox", ["sleep", "30"], detach=True, cpuset_cpus="0",
                                cpu_period=50000, cpu_quota=25000, pids_limit=50,
                                mem_reservation="32m")
    base = Path("/sys/fs/cgroup")
    v1 = (base / "cpuset" / daemon.cgroup_parent / ctr.id)
    if v1.exists():
        assert (v1 / "cpuset.cpus").read_text().strip() == "0"
        cpu = base / "cpu" / daemon.cgroup_parent / ctr.id
        assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "25000"
        assert (cpu / "cpu.cfs_period_us").read_text().strip() == "50000"
        pids = base / "pids" / daemon.cgroup_parent / ctr.id
        assert (pids / "pids.max").read_text().strip() == "50"
        mem = base / "memory" / daemon.cgroup_parent / ctr.id
        assert int((mem / "memory.soft_limit_in_bytes").read_text()) == 32 * 1024 * 1024
    else:
        v2 = base / daemon.cgroup_parent / ctr.id
        assert (v2 / "cpuset.cpus").read_text().strip() == "0"
        assert (v2 / "cpu.max").read_text().split() == ["25000", "50000"]
