"""IPv6 user networks through docker-py and the docker CLI: addresses, DNS, ports, ip6tables.

Every IPv6 subnet here is a ULA /64 of the test daemon's own (fd5d:X:Y:k::/64 from its IPv4
bridge subnet 10.X.Y.0/24), so tests running beside each other never share one, and traffic
only goes between the daemon's containers and the host's own address on its bridges.
"""

import subprocess

import docker
import pytest
from docker.types import EndpointConfig, IPAMConfig, IPAMPool

from tests.daemon import Daemon, network_leftovers
from tests.integration.conftest import Cli
from tests.integration.test_network import _get
from tests.waits import until

HTTPD = "mkdir -p /w && echo {text} > /w/index.html && exec httpd -f -p 80 -h /w"


def _v6(daemon: Daemon, k: int) -> str:
    octets = daemon.bridge_subnet.split(".")
    return f"fd5d:{int(octets[1]):x}:{int(octets[2]):x}:{k:x}::/64"


def _ip6tables(daemon: Daemon, table: str, tag: str) -> list[str]:
    out = subprocess.run(["ip6tables", "-w", "-t", table, "-S"], capture_output=True,
                         text=True, check=True).stdout
    return [line for line in out.splitlines()
            if daemon.chain_prefix + "-" in line and f'--comment "{tag}"' in line]


def _sh(ctr: docker.models.containers.Container, script: str) -> str:
    code, out = ctr.exec_run(["sh", "-c", script])
    text = out.decode() if isinstance(out, bytes) else str(out)
    assert code == 0, text
    return text


def test_ipv6_network_addresses_dns_ports_and_rules(client: docker.DockerClient,
                                                    daemon: Daemon) -> None:
    api = client.api
    subnet = _v6(daemon, 1)
    prefix = subnet.split("/")[0]
    net = client.networks.create("t6", driver="bridge", enable_ipv6=True,
                                 ipam=IPAMConfig(pool_configs=[IPAMPool(subnet=subnet)]))
    bridge = f"br-{net.id[:12]}"
    try:
        info = api.inspect_network(net.id)
        assert info["EnableIPv6"] is True
        v4, v6 = info["IPAM"]["Config"]
        assert v6 == {"Subnet": subnet}  # as dockerd: no Gateway unless one was given
        assert ":" not in v4["Subnet"] and v4["Gateway"]
        assert _ip6tables(daemon, "filter", f"net {bridge}")
        assert _ip6tables(daemon, "nat", f"net {bridge}")

        web = client.containers.run("busybox", ["sh", "-c", HTTPD.format(text="over-v6")],
                                    detach=True, name="web6", network="t6",
                                    ports={"80/tcp": None})
        static = prefix + "99"
        peer = client.containers.run(
            "busybox", ["sleep", "300"], detach=True, name="peer6", network="t6",
            networking_config={"t6": EndpointConfig(api._version, ipv6_address=static)})
        web_ep = api.inspect_container(web.id)["NetworkSettings"]["Networks"]["t6"]
        assert (web_ep["GlobalIPv6Address"], web_ep["GlobalIPv6PrefixLen"],
                web_ep["IPv6Gateway"]) == (prefix + "2", 64, prefix + "1")
        peer_ep = api.inspect_container(peer.id)["NetworkSettings"]["Networks"]["t6"]
        assert peer_ep["GlobalIPv6Address"] == static
        assert peer_ep["IPAMConfig"] == {"IPv6Address": static}
        members = api.inspect_network(net.id)["Containers"]
        assert members[peer.id]["IPv6Address"] == f"{static}/64"
        assert members[web.id]["IPv4Address"] == f"{web_ep['IPAddress']}/{web_ep['IPPrefixLen']}"

        # Inside: the address, the default route, the hosts line; the name by AAAA; traffic.
        assert f"{static}/64" in _sh(peer, "ip -6 addr show eth0")
        assert f"default via {prefix}1" in _sh(peer, "ip -6 route")
        assert f"{static}\t{peer.id[:12]}" in _sh(peer, "cat /etc/hosts")
        looked_up = _sh(peer, "nslookup -type=aaaa web6")
        assert f"Address: {prefix}2" in looked_up and web_ep["IPAddress"] not in looked_up
        assert f"Address: {web_ep['IPAddress']}" in _sh(peer, "nslookup -type=a web6")
        until(lambda: "over-v6" in peer.exec_run(
            ["wget", "-q", "-O-", f"http://[{prefix}2]/"]).output.decode(), what="web over v6")

        # Published on both families, one port; reached over IPv6 from the host and from
        # a container (through the gateway: DNAT, hairpin masquerade).
        ports = api.inspect_container(web.id)["NetworkSettings"]["Ports"]["80/tcp"]
        port = ports[0]["HostPort"]
        assert ports == [{"HostIp": "0.0.0.0", "HostPort": port},
                         {"HostIp": "::", "HostPort": port}]
        assert _get(f"http://[{prefix}1]:{port}/") == "over-v6"
        assert _get(f"http://127.0.0.1:{port}/") == "over-v6"
        assert "over-v6" in _sh(peer, f"wget -q -O- http://[{prefix}1]:{port}/")
        [rule] = _ip6tables(daemon, "nat", f"ctr {web.id}")
        assert f"--to-destination [{prefix}2]:80" in rule
        assert f"[::]:{port}->80/tcp" in subprocess.run(
            ["docker", "-H", daemon.url, "ps", "--filter", "name=web6", "--format",
             "{{.Ports}}"], capture_output=True, text=True, check=True).stdout

        web.remove(force=True)
        assert _ip6tables(daemon, "nat", f"ctr {web.id}") == []
        # The address is free again: the next container gets it.
        again = client.containers.run("busybox", ["sleep", "300"], detach=True, network="t6")
        assert api.inspect_container(again.id)["NetworkSettings"]["Networks"]["t6"][
            "GlobalIPv6Address"] == prefix + "2"
    finally:
        for c in client.containers.list(all=True):
            c.remove(force=True)
        net.remove()
    for table in ("filter", "nat"):
        assert _ip6tables(daemon, table, f"net {bridge}") == []


def test_ipv6_cli_ip6_at_run_and_connect_and_dockerds_errors(cli: Cli, daemon: Daemon,
                                                             client: docker.DockerClient) -> None:
    subnet = _v6(daemon, 2)
    prefix = subnet.split("/")[0]
    gateway = prefix + "fe"
    cli("network", "create", "--ipv6", "--subnet", subnet, "--gateway", gateway,
        "--aux-address", f"router6={prefix}11", "t6cli")
    cli("network", "create", "t4cli")
    try:
        assert client.api.inspect_network("t6cli")["IPAM"]["Config"][1] == {
            "Subnet": subnet, "Gateway": gateway,
            "AuxiliaryAddresses": {"router6": prefix + "11"}}
        aux = cli("run", "--rm", "--network", "t6cli", "--ip6", prefix + "11", "busybox",
                  "true", check=False)
        assert aux.returncode != 0 and f"Address already in use: {prefix}11" in aux.stderr
        cli("run", "-d", "--name", "c6", "--network", "t6cli", "--ip6", prefix + "10",
            "busybox", "sleep", "300")
        ep = client.api.inspect_container("c6")["NetworkSettings"]["Networks"]["t6cli"]
        assert (ep["GlobalIPv6Address"], ep["IPv6Gateway"]) == (prefix + "10", gateway)
        assert cli("inspect", "-f", "{{range .NetworkSettings.Networks}}"
                   "{{.GlobalIPv6Address}}{{end}}", "c6").stdout.strip() == prefix + "10"

        # A running container of an IPv4 network joins with an address of its choice.
        cli("run", "-d", "--name", "c4", "--network", "t4cli", "busybox", "sleep", "300")
        cli("network", "connect", "--ip6", prefix + "20", "t6cli", "c4")
        joined = client.api.inspect_container("c4")["NetworkSettings"]["Networks"]["t6cli"]
        assert joined["GlobalIPv6Address"] == prefix + "20"
        assert joined["IPAMConfig"] == {"IPv6Address": prefix + "20"}
        c4 = client.containers.get("c4")
        assert f"{prefix}20/64" in _sh(c4, "ip -6 addr show eth1")
        assert f"Address: {prefix}10" in _sh(c4, "nslookup -type=aaaa c6")
        _sh(c4, f"ping -c 1 -W 5 {prefix}10")
        cli("network", "disconnect", "t6cli", "c4")
        assert prefix not in _sh(c4, "ip -6 addr")
        assert f"default via {gateway}" not in _sh(c4, "ip -6 route")
        taken = cli("network", "connect", "--ip6", prefix + "10", "t6cli", "c4", check=False)
        assert taken.returncode != 0 and f"Address already in use: {prefix}10" in taken.stderr
        assert "t6cli" not in client.api.inspect_container("c4")["NetworkSettings"]["Networks"]

        errors = [
            (["run", "--rm", "--network", "t4cli", "--ip6", prefix + "5", "busybox", "true"],
             "user specified IP address is supported only when connecting to networks with "
             "user configured subnets"),
            (["create", "--network", "t6cli", "--ip6", "fd5d:ffff::5", "busybox", "true"],
             "no configured subnet or ip-range contain the IP address fd5d:ffff::5"),
            (["network", "create", "--ipv6", "tnopool"],
             "could not find an available, non-overlapping IPv6 address pool"),
            (["network", "create", "--ipv6", "--subnet", subnet, "toverlap"],
             "Pool overlaps with other one on this address space"),
            (["network", "create", "--ipv6", "--subnet", _v6(daemon, 3), "--subnet",
              _v6(daemon, 4), "ttwo"], "bridge driver doesn't support multiple subnets"),
        ]
        for args, words in errors:
            res = cli(*args, check=False)
            assert res.returncode != 0 and words in res.stderr, (args, res.stderr)
        names = {n.name for n in client.networks.list()}
        assert not names & {"tnopool", "toverlap", "ttwo"}
        # The IPv6 address taken at create: a second container asking for it fails to start.
        cli("create", "--name", "dup", "--network", "t6cli", "--ip6", prefix + "10",
            "busybox", "sleep", "300")
        dup = cli("start", "dup", check=False)
        assert dup.returncode != 0 and f"Address already in use: {prefix}10" in dup.stderr
        assert client.containers.get("dup").status == "created"
    finally:
        for c in client.containers.list(all=True):
            c.remove(force=True)
        cli("network", "rm", "t6cli", "t4cli", check=False)


def test_ipv6_subnet_without_enable_ipv6_is_kept_and_unused(client: docker.DockerClient,
                                                            daemon: Daemon) -> None:
    subnet = _v6(daemon, 5)
    net = client.networks.create("t6off", enable_ipv6=False,
                                 ipam=IPAMConfig(pool_configs=[IPAMPool(subnet=subnet)]))
    try:
        info = client.api.inspect_network(net.id)
        assert info["EnableIPv6"] is False and info["IPAM"]["Config"][-1] == {"Subnet": subnet}
        # As docker-py's test_create_with_ipv6_address and test_connect_with_ipv6_address
        # (and dockerd): the address is taken into IPAMConfig, and no IPv6 is given.
        want = subnet.split("/")[0] + "f00d"
        c = client.containers.run(
            "busybox", ["sleep", "300"], detach=True, network="t6off",
            networking_config={"t6off": EndpointConfig(client.api._version, ipv6_address=want)})
        ep = client.api.inspect_container(c.id)["NetworkSettings"]["Networks"]["t6off"]
        assert ep["IPAMConfig"] == {"IPv6Address": want}
        assert ep["GlobalIPv6Address"] == "" and ep["IPv6Gateway"] == ""
        assert "fd5d:" not in _sh(c, "ip -6 addr")
        client.api.disconnect_container_from_network(c.id, net.id)
        client.api.connect_container_to_network(c.id, net.id, ipv6_address=want)
        ep = client.api.inspect_container(c.id)["NetworkSettings"]["Networks"]["t6off"]
        assert ep["IPAMConfig"] == {"IPv6Address": want} and ep["IPAddress"]
        with pytest.raises(docker.errors.APIError, match="no configured subnet"):
            client.api.connect_container_to_network(
                client.containers.create("busybox", ["true"]).id, net.id,
                ipv6_address="fd5d:ffff::1")
    finally:
        for c in client.containers.list(all=True):
            c.remove(force=True)
        net.remove()


def test_ipv6_survives_kill_9_and_leaves_no_ip6tables_rules() -> None:
    d = Daemon().start()
    try:
        d.import_busybox()
        client = d.client()
        subnet = _v6(d, 1)
        prefix = subnet.split("/")[0]
        client.networks.create("t6k", enable_ipv6=True,
                               ipam=IPAMConfig(pool_configs=[IPAMPool(subnet=subnet)]))
        web = client.containers.run("busybox", ["sh", "-c", HTTPD.format(text="kept")],
                                    detach=True, network="t6k", ports={"80/tcp": None})
        port = client.api.inspect_container(web.id)["NetworkSettings"]["Ports"]["80/tcp"][1][
            "HostPort"]
        assert _get(f"http://[{prefix}1]:{port}/") == "kept"
        client.close()
        d.kill9()
        assert _get(f"http://[{prefix}1]:{port}/") == "kept"  # ip6tables keep working
        d.start()
        client = d.client()
        assert len(_ip6tables(d, "nat", f"ctr {web.id}")) == 1  # not added twice
        # The address is held: a new container gets the next one.
        other = client.containers.run("busybox", ["sleep", "300"], detach=True, network="t6k")
        assert client.api.inspect_container(other.id)["NetworkSettings"]["Networks"]["t6k"][
            "GlobalIPv6Address"] == prefix + "3"
        for c in client.containers.list(all=True):
            c.remove(force=True)
        client.networks.get("t6k").remove()
        client.close()
        d.stop()
        assert network_leftovers(d) == []
    finally:
        d.cleanup()


def test_docker_py_shaped_ipv6_networks(client: docker.DockerClient, daemon: Daemon) -> None:
    """docker-py's own test_create_network_ipv6_enabled, test_create_with_ipv6_address and
    test_connect_with_ipv6_address, on a ULA subnet of this daemon's (host bits included,
    as they send it)."""
    api = client.api
    prefix = _v6(daemon, 6).split("/")[0]
    pool = IPAMPool(subnet=f"{prefix}1/64", iprange=f"{prefix}0/96", gateway=f"{prefix}ffff")
    enabled = api.create_network("t6py", enable_ipv6=True, ipam=IPAMConfig(
        driver="default", pool_configs=[pool]))["Id"]
    try:
        net = api.inspect_network(enabled)
        assert net["EnableIPv6"] is True
        assert net["IPAM"]["Config"][1] == {"Subnet": f"{prefix}/64", "IPRange": f"{prefix}/96",
                                            "Gateway": f"{prefix}ffff"}
        ctr = api.create_container(
            "busybox", "top", host_config=api.create_host_config(network_mode="t6py"),
            networking_config=api.create_networking_config({
                "t6py": api.create_endpoint_config(ipv6_address=f"{prefix}f00d")}))
        api.start(ctr)
        ep = api.inspect_container(ctr)["NetworkSettings"]["Networks"]["t6py"]
        assert ep["IPAMConfig"]["IPv6Address"] == f"{prefix}f00d"
        assert (ep["GlobalIPv6Address"], ep["IPv6Gateway"]) == (f"{prefix}f00d", f"{prefix}ffff")
        api.disconnect_container_from_network(ctr, "t6py")
        api.connect_container_to_network(ctr, "t6py", ipv6_address=f"{prefix}f00e")
        ep = api.inspect_container(ctr)["NetworkSettings"]["Networks"]["t6py"]
        assert ep["IPAMConfig"]["IPv6Address"] == ep["GlobalIPv6Address"] == f"{prefix}f00e"
    finally:
        for c in client.containers.list(all=True):
            c.remove(force=True)
        api.remove_network(enabled)
