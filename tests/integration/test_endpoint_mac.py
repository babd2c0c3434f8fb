"""EndpointSettings.MacAddress (API 1.44) at create and at connect; CPU real-time limits as
dockerd 20.10 handles them on this kernel."""

from pathlib import Path

import docker
import pytest

from tests.integration.conftest import Cli


def test_mac_address_at_connect_and_create(client: docker.DockerClient, cli: Cli) -> None:
    api = client.api
    net = client.networks.create("mac-net")
    try:
        c = client.containers.run("busybox", ["sleep", "300"], detach=True, name="mac-run")
        api.connect_container_to_network(c.id, net.id, mac_address="02:42:AC:11:00:99")
        info = api.inspect_container(c.id)["NetworkSettings"]["Networks"]["mac-net"]
        assert info["MacAddress"] == "02:42:ac:11:00:99"
        assert c.exec_run(["cat", "/sys/class/net/eth1/address"]).output.decode().strip() == (
            "02:42:ac:11:00:99")
        # a stopped container gets it at its next start
        stopped = client.containers.create("busybox", ["sleep", "300"], name="mac-later")
        api.connect_container_to_network(stopped.id, net.id, mac_address="02:42:ac:11:00:aa")
        stopped.start()
        info = api.inspect_container(stopped.id)["NetworkSettings"]["Networks"]["mac-net"]
        assert info["MacAddress"] == "02:42:ac:11:00:aa"
        # at create (the CLI puts --mac-address on the endpoint from API 1.44)
        cid = cli("run", "-d", "--network", "mac-net", "--mac-address", "02:42:ac:11:00:bb",
                  "busybox", "sleep", "300").stdout.strip()
        out = cli("exec", cid, "cat", "/sys/class/net/eth0/address").stdout.strip()
        assert out == "02:42:ac:11:00:bb"
        old = client.containers.run("busybox", ["sleep", "300"], detach=True, name="mac-old")
        bad = api.post(f"{api.base_url}/v1.44/networks/mac-net/connect",
                       json={"Container": old.id, "EndpointConfig": {"MacAddress": "zz"}})
        assert bad.status_code == 400 and bad.json()["message"] == "invalid MAC address: zz"
        # before 1.44 the field is ignored, as dockerd 20.10 does
        res = api.post(f"{api.base_url}/v1.41/networks/mac-net/connect",
                       json={"Container": old.id,
                             "EndpointConfig": {"MacAddress": "02:42:ac:11:00:cc"}})
        assert res.status_code == 200, res.text
        mac = api.inspect_container(old.id)["NetworkSettings"]["Networks"]["mac-net"][
            "MacAddress"]
        assert mac != "02:42:ac:11:00:cc"
    finally:
        for ctr in client.containers.list(all=True):
            ctr.remove(force=True)
        net.remove()


def _rt_supported() -> bool:
    return Path("/sys/fs/cgroup/cpu/cpu.rt_runtime_us").exists()


@pytest.mark.skipif(not _rt_supported(), reason="no cgroup v1 real-time CPU controller")
def test_cpu_realtime_as_dockerd_on_this_kernel(client: docker.DockerClient, cli: Cli) -> None:
    # A period alone is written to the container's cgroup.
    cid = cli("run", "-d", "--cpu-rt-period", "500000", "busybox", "sleep", "300").stdout.strip()
    assert client.api.inspect_container(cid)["HostConfig"]["CpuRealtimePeriod"] == 500000
    pid = client.api.inspect_container(cid)["State"]["Pid"]
    cpu_line = next(line for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines()
                    if ":cpu," in line or line.split(":")[1] in ("cpu", "cpuacct,cpu"))
    cgroup = Path("/sys/fs/cgroup/cpu") / cpu_line.split(":", 2)[2].lstrip("/")
    assert (cgroup / "cpu.rt_period_us").read_text().strip() == "500000"
    # A runtime: the cgroups above have no real-time budget (dockerd's default too), so the
    # kernel refuses it at start, in dockerd's words.
    result = cli("run", "--cpu-rt-runtime", "1000", "busybox", "true", check=False)
    assert result.returncode != 0
    assert 'failed to write "1000"' in result.stderr
    assert "cpu.rt_runtime_us: invalid argument" in result.stderr
