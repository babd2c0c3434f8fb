"""IPAM.Config[].AuxiliaryAddresses: shown in inspect, never given to a container."""

import docker

from tests.integration.conftest import Cli


def test_aux_addresses_reserved_and_shown(client: docker.DockerClient, cli: Cli) -> None:
    cli("network", "create", "--subnet", "10.231.77.0/24", "--aux-address", "a=10.231.77.2",
        "--aux-address", "b=10.231.77.3", "aux-net")
    try:
        cfg = client.api.inspect_network("aux-net")["IPAM"]["Config"][0]
        assert cfg["AuxiliaryAddresses"] == {"a": "10.231.77.2", "b": "10.231.77.3"}
        c = client.containers.run("busybox", ["sleep", "300"], detach=True, network="aux-net")
        ip = client.api.inspect_container(c.id)["NetworkSettings"]["Networks"]["aux-net"][
            "IPAddress"]
        assert ip == "10.231.77.4"  # .1 the gateway, .2 and .3 reserved (as dockerd)
        bad = cli("run", "-d", "--network", "aux-net", "--ip", "10.231.77.3", "busybox",
                  "sleep", "300", check=False)
        assert bad.returncode != 0 and "Address already in use" in bad.stderr
        api = client.api
        res = api.post(f"{api.base_url}/v1.44/networks/create",
                       json={"Name": "aux-bad", "IPAM": {"Config": [
                           {"Subnet": "10.231.78.0/24",
                            "AuxiliaryAddresses": {"a": "10.231.79.2"}}]}})
        assert res.status_code == 403
        assert res.json()["message"] == ("auxiliary address: (a:10.231.79.2) must belong to "
                                         "the master pool: 10.231.78.0/24")
    finally:
        for ctr in client.containers.list(all=True):
            ctr.remove(force=True)
        cli("network", "rm", "aux-net", check=False)
