"""Container networking with real namespaces, bridges and iptables, through real clients.

Traffic goes only to loopback and to the networks the test daemon creates itself (its bridge's
gateway address is one of the host's addresses on that network).
"""

import contextlib
import io
import os
import socket
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from stowd.engine.seed import busybox_binary, busybox_rootfs_tar
from tests.daemon import Daemon, network_leftovers
from tests.integration.conftest import Cli
from tests.waits import until, url

HTTPD = ("mkdir -p /w{port} && echo {text} > /w{port}/index.html && "
         "exec httpd -f -p {port} -h /w{port}")


def _httpd(client: docker.DockerClient, text: str = "hello", port: int = 80,
           **kwargs: object) -> docker.models.containers.Container:
    return client.containers.run("busybox", ["sh", "-c", HTTPD.format(text=text, port=port)],
                                 detach=True, **kwargs)


def _get(url: str, timeout: float = 10.0) -> str:
    """GET url, retrying while the server in the container is still coming up."""
    body: list[str] = []

    def answered() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as res:
                body.append(res.read().decode().strip())
                return True
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return False

    until(answered, timeout, f"{url} never answered", every=0.1)
    return body[0]


def _refused(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return False
    except OSError:
        return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])


def _host_port(api: docker.APIClient, cid: str, key: str, index: int = 0) -> int:
    return int(api.inspect_container(cid)["NetworkSettings"]["Ports"][key][index]["HostPort"])


def _gateway(daemon: Daemon) -> str:
    return daemon.bridge_subnet.rsplit(".", 1)[0] + ".1"


def _run(client: docker.DockerClient, script: str, **kwargs: object) -> str:
    out = client.containers.run("busybox", ["sh", "-c", script], remove=True, **kwargs)
    return out.decode() if isinstance(out, bytes) else str(out)


def _dnat_rules(daemon: Daemon) -> list[str]:
    out = subprocess.run(["iptables", "-w", "-t", "nat", "-S", f"{daemon.chain_prefix}-DNAT"],
                         capture_output=True, text=True, check=False).stdout
    return [line for line in out.splitlines() if line.startswith("-A")]


def _host_state(daemon: Daemon) -> dict[str, object]:
    """What stowd's containers hold on the host: namespaces, veths, DNAT rules."""
    netns = daemon.exec_root / "netns"
    brif = Path("/sys/class/net") / daemon.bridge / "brif"
    return {
        "netns": sorted(p.name for p in netns.iterdir()) if netns.is_dir() else [],
        "veths": sorted(os.listdir(brif)) if brif.is_dir() else [],
        "dnat": _dnat_rules(daemon),
    }


def _wait_clean(daemon: Daemon, timeout: float = 10.0) -> dict[str, object]:
    """Teardown finishes just after the API answers a removal: wait for it."""
    state = _host_state(daemon)

    def clean() -> bool:
        nonlocal state
        state = _host_state(daemon)
        return not any(state.values())

    with contextlib.suppress(AssertionError):  # the caller's assert shows what is left
        until(clean, timeout, every=0.1)
    return state


# published ports -------------------------------------------------------------------------------


def test_seed_port_binding_answers_on_the_hosts_port(api: docker.APIClient,
                                                     daemon: Daemon) -> None:
    """The founding document's PortBindings {"5432/tcp": [{"HostPort": "5432"}]}."""
    with socket.socket() as probe:
        try:
            probe.bind(("0.0.0.0", 5432))
        except OSError:
            pytest.skip("host port 5432 is in use on this machine")
    host_config = api.create_host_config(port_bindings={"5432/tcp": [{"HostIp": "",
                                                                       "HostPort": "5432"}]})
    ctr = api.create_container("busybox", ["sh", "-c", HTTPD.format(text="seed", port=5432)],
                               ports=[5432], host_config=host_config)
    api.start(ctr["Id"])
    try:
        assert _get("http://127.0.0.1:5432/") == "seed"
        assert _get(f"http://{_gateway(daemon)}:5432/") == "seed"
        info = api.inspect_container(ctr["Id"])
        # As dockerd 20.10 on a host with IPv6: also `::`, through the userland proxy.
        assert info["NetworkSettings"]["Ports"] == {
            "5432/tcp": [{"HostIp": "0.0.0.0", "HostPort": "5432"},
                         {"HostIp": "::", "HostPort": "5432"}]}
        assert _get("http://[::1]:5432/") == "seed"
    finally:
        api.remove_container(ctr["Id"], force=True)


def test_ephemeral_port_is_chosen_reported_and_answers(client: docker.DockerClient,
                                                       api: docker.APIClient, cli: Cli) -> None:
    ctr = _httpd(client, "eph", ports={"80/tcp": None})
    port = _host_port(api, ctr.id, "80/tcp")
    assert port > 1024
    assert _get(f"http://127.0.0.1:{port}/") == "eph"
    assert cli("port", ctr.id, "80").stdout.split() == [f"0.0.0.0:{port}", f"[::]:{port}"]
    [row] = api.containers(filters={"id": ctr.id})
    assert row["Ports"] == [{"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": port,
                             "Type": "tcp"},
                            {"IP": "::", "PrivatePort": 80, "PublicPort": port, "Type": "tcp"}]


def test_ipv6_loopback_reaches_a_published_port_through_the_proxy(own_daemon: Daemon) -> None:
    """`localhost` is `[::1]` first for many clients: dockerd's docker-proxy serves `[::]`
    of a container without IPv6, and stowd's userland proxy does too. Data goes through
    whole both ways (with a half-close), the proxy comes back after a daemon restart, and
    the port is free again once the container stops."""
    client = own_daemon.client()
    ctr = client.containers.run(
        "busybox", ["sh", "-c", "mkdir -p /w && echo v6 > /w/index.html && "
                    "(httpd -f -p 80 -h /w &) && exec nc -ll -p 81 -e cat"],
        detach=True, ports={"80/tcp": None, "81/tcp": None})
    port = _host_port(client.api, ctr.id, "80/tcp")
    echo = _host_port(client.api, ctr.id, "81/tcp")
    assert _get(f"http://[::1]:{port}/") == "v6"
    assert _get(f"http://127.0.0.1:{port}/") == "v6"
    payload = os.urandom(2_000_000)

    def echoed() -> bytes:
        with socket.create_connection(("::1", echo), timeout=10) as conn:
            sender = threading.Thread(target=lambda: (conn.sendall(payload),
                                                      conn.shutdown(socket.SHUT_WR)))
            sender.start()
            got = bytearray()
            while chunk := conn.recv(65536):
                got += chunk
            sender.join()
        return bytes(got)

    until(lambda: echoed() == payload, 10, "the echo server did not answer in full")
    own_daemon.stop()
    own_daemon.start()
    assert _get(f"http://[::1]:{port}/") == "v6"
    ctr.stop(timeout=1)

    def released() -> bool:  # the teardown after an exit finishes just after stop answers
        with socket.socket(socket.AF_INET6) as again:
            again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                again.bind(("::", port))
                again.listen()
            except OSError:
                return False
        return True

    until(released, 10, f"[::]:{port} still held after the container stopped")
    ctr.remove()


def test_a_port_an_earlier_server_left_in_time_wait_can_be_published(
        client: docker.DockerClient) -> None:
    """A dev server stopped a moment ago leaves its port's connections in TIME_WAIT for a
    minute: dockerd (docker-proxy, SO_REUSEADDR) publishes that port, and so does stowd
    now (it failed with `bind: address already in use`). While the container has it, no
    other program can bind it, SO_REUSEADDR or not."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    peer = socket.create_connection(("127.0.0.1", port))
    conn, _ = server.accept()
    conn.close()  # the server closes first: its side of the port goes to TIME_WAIT
    assert peer.recv(1) == b""
    peer.close()
    server.close()
    states = subprocess.run(["ss", "-tan", f"sport = :{port}"], capture_output=True,
                            text=True, check=True).stdout
    assert "TIME-WAIT" in states
    ctr = _httpd(client, "tw", ports={"80/tcp": port})
    try:
        assert _get(f"http://127.0.0.1:{port}/") == "tw"
        with socket.socket() as other:
            other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            with pytest.raises(OSError):
                other.bind(("0.0.0.0", port))
    finally:
        ctr.remove(force=True)


def test_publish_all_covers_exposed_and_image_ports(client: docker.DockerClient,
                                                    api: docker.APIClient,
                                                    daemon: Daemon) -> None:
    buf = io.BytesIO()
    busybox_rootfs_tar(busybox_binary() or "/bin/busybox", buf)
    api.import_image_from_data(buf.getvalue(), repository="busybox-exposed", tag="latest",
                               changes=["EXPOSE 8081"])
    ctr = client.containers.run(
        "busybox-exposed", ["sh", "-c", HTTPD.format(text="eighty", port=80) + " & "
                            + HTTPD.format(text="image", port=8081)],
        detach=True, publish_all_ports=True, ports={"80/tcp": None})
    try:
        ports = api.inspect_container(ctr.id)["NetworkSettings"]["Ports"]
        assert set(ports) == {"80/tcp", "8081/tcp"}
        assert _get(f"http://127.0.0.1:{_host_port(api, ctr.id, '80/tcp')}/") == "eighty"
        assert _get(f"http://127.0.0.1:{_host_port(api, ctr.id, '8081/tcp')}/") == "image"
    finally:
        ctr.remove(force=True)
        client.images.remove("busybox-exposed:latest")


def test_host_ip_binds_only_there(client: docker.DockerClient, api: docker.APIClient,
                                  daemon: Daemon) -> None:
    ctr = _httpd(client, "local", ports={"80/tcp": ("127.0.0.1", None)})
    port = _host_port(api, ctr.id, "80/tcp")
    assert api.inspect_container(ctr.id)["NetworkSettings"]["Ports"]["80/tcp"][0][
        "HostIp"] == "127.0.0.1"
    assert _get(f"http://127.0.0.1:{port}/") == "local"
    assert _refused(_gateway(daemon), port)


def test_port_ranges_and_udp(client: docker.DockerClient, api: docker.APIClient,
                             cli: Cli) -> None:
    low = _free_port()
    while not all(_bindable(p) for p in range(low, low + 3)):
        low = _free_port()
    # -p low-(low+2):80 picks one port of the range; a udp port on 127.0.0.1 beside it.
    cid = cli("run", "-d", "-p", f"{low}-{low + 2}:80", "-p", "127.0.0.1::9999/udp", "busybox",
              "sh", "-c", HTTPD.format(text="ranged", port=80)).stdout.strip()
    port = _host_port(api, cid, "80/tcp")
    assert low <= port <= low + 2
    assert _get(f"http://127.0.0.1:{port}/") == "ranged"
    # busybox has no UDP server: a datagram DNATed to the container's closed port 9999 comes
    # back as ICMP port unreachable (a refused connected socket), and the container's kernel
    # counts it in Udp NoPorts; without the DNAT it would land in stowd's reserving socket.
    udp_port = _host_port(api, cid, "9999/udp")
    ctr = client.containers.get(cid)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.connect(("127.0.0.1", udp_port))
        s.send(b"ping\n")
        with pytest.raises(ConnectionRefusedError):
            s.recv(100)
    snmp = _exec(ctr, "grep Udp: /proc/net/snmp").splitlines()
    counters = dict(zip(snmp[0].split()[1:], snmp[1].split()[1:], strict=True))
    assert int(counters["NoPorts"]) >= 1


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
            return True
        except OSError:
            return False


def test_port_in_use_fails_start_cleanly(client: docker.DockerClient, api: docker.APIClient,
                                         daemon: Daemon) -> None:
    squatter = socket.socket()
    squatter.bind(("0.0.0.0", 0))
    squatter.listen()
    port = squatter.getsockname()[1]
    before = _wait_clean(daemon)  # the previous test's teardown may still be finishing
    ctr = client.containers.create("busybox", ["sleep", "300"], ports={"80/tcp": port})
    with pytest.raises(docker.errors.APIError) as err:
        ctr.start()
    assert err.value.response.status_code == 500
    assert f"0.0.0.0:{port}" in str(err.value) and "address already in use" in str(err.value)
    info = api.inspect_container(ctr.id)
    assert info["State"]["Status"] == "created" and "already in use" in info["State"]["Error"]
    assert info["NetworkSettings"]["Networks"]["bridge"]["IPAddress"] == ""
    # Nothing left: no namespace, veth or rule (the kernel frees a namespace's veths just
    # after the namespace goes).
    until(lambda: _host_state(daemon) == before, timeout=10, what="host state restored")
    squatter.close()
    ctr.start()
    assert _host_port(api, ctr.id, "80/tcp") == port
    # A second container asking for the same port: Docker's "already allocated".
    other = client.containers.create("busybox", ["sleep", "300"], ports={"80/tcp": port})
    with pytest.raises(docker.errors.APIError, match="port is already allocated"):
        other.start()


# inspect and list shapes -----------------------------------------------------------------------

ENDPOINT_KEYS = {"IPAMConfig", "Links", "Aliases", "NetworkID", "EndpointID", "Gateway",
                 "IPAddress", "IPPrefixLen", "IPv6Gateway", "GlobalIPv6Address",
                 "GlobalIPv6PrefixLen", "MacAddress", "DriverOpts"}
SETTINGS_KEYS = {"Bridge", "SandboxID", "HairpinMode", "LinkLocalIPv6Address",
                 "LinkLocalIPv6PrefixLen", "Ports", "SandboxKey", "SecondaryIPAddresses",
                 "SecondaryIPv6Addresses", "EndpointID", "Gateway", "GlobalIPv6Address",
                 "GlobalIPv6PrefixLen", "IPAddress", "IPPrefixLen", "IPv6Gateway", "MacAddress",
                 "Networks"}


def test_inspect_before_during_and_after_as_dockerd(client: docker.DockerClient,
                                                    api: docker.APIClient,
                                                    daemon: Daemon) -> None:
    ctr = client.containers.create("busybox", ["sleep", "300"], ports={"80/tcp": None},
                                   name="shape")
    ns = api.inspect_container(ctr.id)["NetworkSettings"]
    assert set(ns) == SETTINGS_KEYS
    assert ns["Ports"] == {} and ns["IPAddress"] == "" and ns["SandboxKey"] == ""
    assert set(ns["Networks"]) == {"bridge"}
    assert set(ns["Networks"]["bridge"]) == ENDPOINT_KEYS
    assert ns["Networks"]["bridge"]["IPAddress"] == ""

    ctr.start()
    ns = api.inspect_container(ctr.id)["NetworkSettings"]
    ep = ns["Networks"]["bridge"]
    bridge_net = api.inspect_network("bridge")
    assert ep["NetworkID"] == bridge_net["Id"]
    assert ep["Gateway"] == _gateway(daemon) == ns["Gateway"]
    assert ep["IPAddress"] == ns["IPAddress"] and ep["IPAddress"].startswith(
        daemon.bridge_subnet.rsplit(".", 1)[0] + ".")
    assert ep["IPPrefixLen"] == 24 and ep["Aliases"] is None
    octets = [int(x) for x in ep["IPAddress"].split(".")]
    assert ep["MacAddress"] == "02:42:" + ":".join(f"{o:02x}" for o in octets)
    assert len(ep["EndpointID"]) == 64 and ep["EndpointID"] == ns["EndpointID"]
    assert len(ns["SandboxID"]) == 64 and ns["SandboxKey"].startswith(str(daemon.exec_root))
    assert list(ns["Ports"]) == ["80/tcp"]
    [row] = api.containers(filters={"id": ctr.id})
    assert row["NetworkSettings"]["Networks"]["bridge"]["IPAddress"] == ep["IPAddress"]
    assert bridge_net["Containers"][ctr.id]["IPv4Address"] == ep["IPAddress"] + "/24"
    assert bridge_net["Containers"][ctr.id]["Name"] == "shape"
    hosts = _exec(ctr, "cat /etc/hosts")
    assert f"{ep['IPAddress']}\t{ctr.id[:12]}" in hosts

    ctr.stop(timeout=0)
    ns = api.inspect_container(ctr.id)["NetworkSettings"]
    assert ns["Ports"] == {} and ns["IPAddress"] == ""
    assert ns["Networks"]["bridge"]["NetworkID"] == bridge_net["Id"]
    assert ns["Networks"]["bridge"]["IPAddress"] == ""
    [row] = api.containers(all=True, filters={"id": ctr.id})
    assert row["Ports"] == []


def _exec(ctr: docker.models.containers.Container, script: str) -> str:
    code, out = ctr.exec_run(["sh", "-c", script])
    text = out.decode() if isinstance(out, bytes) else str(out)
    assert code == 0, text
    return text


# user-defined networks ------------------------------------------------------------------------


@pytest.fixture
def net(client: docker.DockerClient) -> Iterator[docker.models.networks.Network]:
    network = client.networks.create(f"tnet-{os.urandom(3).hex()}", driver="bridge")
    yield network
    for c in client.containers.list(all=True):
        c.remove(force=True)
    network.remove()


def test_containers_on_a_user_network_talk_by_name_and_alias(
        client: docker.DockerClient, api: docker.APIClient,
        net: docker.models.networks.Network) -> None:
    server = _httpd(client, "by-name", port=8080, name="tweb", network=net.name)
    api.disconnect_container_from_network(server.id, net.id)
    api.connect_container_to_network(server.id, net.id, aliases=["webalias"])
    out = _run(client, "cat /etc/resolv.conf; wget -q -O- http://tweb:8080/; "
                       "wget -q -O- http://webalias:8080/; "
                       f"wget -q -O- http://tweb.{net.name}:8080/; nslookup webalias",
               network=net.name)
    assert "nameserver 127.0.0.11" in out
    assert out.count("by-name") == 3
    ip = api.inspect_container(server.id)["NetworkSettings"]["Networks"][net.name]["IPAddress"]
    assert f"Address: {ip}" in out
    aliases = api.inspect_container(server.id)["NetworkSettings"]["Networks"][net.name][
        "Aliases"]
    assert aliases == ["webalias", server.id[:12]]
    for ref in (net.name, net.id):
        assert [r["Id"] for r in api.containers(filters={"network": ref})] == [server.id]


def test_default_bridge_has_no_embedded_dns(client: docker.DockerClient) -> None:
    other = client.containers.run("busybox", ["sleep", "300"], detach=True, name="quiet")
    out = _run(client, "cat /etc/resolv.conf /etc/hosts")
    assert "127.0.0.11" not in out and "quiet" not in out and other.id[:12] not in out


def test_disconnect_and_connect_a_running_container(
        client: docker.DockerClient, api: docker.APIClient,
        net: docker.models.networks.Network) -> None:
    server = _httpd(client, "joined", port=8080, name="joiner", network=net.name)
    client_ctr = client.containers.run("busybox", ["sleep", "300"], detach=True)
    assert "eth1" not in _exec(client_ctr, "ip -o link")
    net.connect(client_ctr)
    links = _exec(client_ctr, "ip -o addr show eth1")
    ip = api.inspect_container(client_ctr.id)["NetworkSettings"]["Networks"][net.name][
        "IPAddress"]
    assert ip and ip in links
    assert _exec(client_ctr, "wget -q -O- http://joiner:8080/").strip() == "joined"
    assert client_ctr.id in api.inspect_network(net.id)["Containers"]
    with pytest.raises(docker.errors.APIError) as err:
        net.connect(client_ctr)
    assert err.value.response.status_code == 403

    net.disconnect(server)
    assert "eth0" not in _exec(server, "ip -o link")
    assert net.name not in api.inspect_container(server.id)["NetworkSettings"]["Networks"]
    with pytest.raises(docker.errors.APIError) as err:
        net.disconnect(server)
    assert "is not connected to network" in str(err.value)
    net.connect(server, aliases=["back"])
    assert _exec(client_ctr, "wget -q -O- http://back:8080/").strip() == "joined"


def test_network_api(client: docker.DockerClient, api: docker.APIClient) -> None:
    res = api.create_network("tapi-net", driver="bridge", labels={"team": "x"},
                             ipam=docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(
                                 subnet="10.223.7.0/24", iprange="10.223.7.128/25",
                                 gateway="10.223.7.254")]), check_duplicate=True)
    nid = res["Id"]
    try:
        info = api.inspect_network("tapi-net")
        assert info["Id"] == nid and info["Driver"] == "bridge" and info["Scope"] == "local"
        assert info["IPAM"]["Config"] == [{"Subnet": "10.223.7.0/24",
                                           "IPRange": "10.223.7.128/25",
                                           "Gateway": "10.223.7.254"}]
        assert info["Labels"] == {"team": "x"} and info["Containers"] == {}
        assert api.inspect_network(nid[:10])["Name"] == "tapi-net"
        with pytest.raises(docker.errors.APIError) as err:
            api.create_network("tapi-net", check_duplicate=True)
        assert err.value.response.status_code == 409
        with pytest.raises(docker.errors.APIError) as err:
            api.create_network("tapi-other", ipam=docker.types.IPAMConfig(
                pool_configs=[docker.types.IPAMPool(subnet="10.223.7.0/25")]))
        assert err.value.response.status_code == 403  # overlaps

        names = {n["Name"] for n in api.networks()}
        assert {"bridge", "host", "none", "tapi-net"} <= names
        assert [n["Name"] for n in api.networks(filters={"label": "team=x"})] == ["tapi-net"]
        assert {n["Name"] for n in api.networks(filters={"type": "builtin"})} == {
            "bridge", "host", "none"}
        assert [n["Name"] for n in api.networks(names=["tapi-net"])] == ["tapi-net"]
        assert {n["Driver"] for n in api.networks()} >= {"bridge", "host", "null"}

        ctr = client.containers.run("busybox", ["sleep", "300"], detach=True,
                                    network="tapi-net")
        ip = api.inspect_container(ctr.id)["NetworkSettings"]["Networks"]["tapi-net"][
            "IPAddress"]
        assert ip == "10.223.7.128"  # the first of the IPRange
        with pytest.raises(docker.errors.APIError) as err:
            api.remove_network(nid)
        assert err.value.response.status_code == 403
        assert "active endpoints" in str(err.value)
        # A static address on a user network with a user subnet.
        fixed = client.containers.create("busybox", ["sleep", "300"])
        api.disconnect_container_from_network(fixed.id, "bridge")
        api.connect_container_to_network(fixed.id, nid, ipv4_address="10.223.7.9")
        fixed.start()
        assert api.inspect_container(fixed.id)["NetworkSettings"]["Networks"]["tapi-net"][
            "IPAddress"] == "10.223.7.9"
        ctr.remove(force=True)
        fixed.remove(force=True)
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            api.remove_network(nid)
    for name in ("bridge", "host", "none"):
        with pytest.raises(docker.errors.APIError) as err:
            api.remove_network(name)
        assert err.value.response.status_code == 403
    with pytest.raises(docker.errors.NotFound):
        api.inspect_network("tapi-net")
    a = api.create_network("tprune-a")["Id"]
    api.create_network("tprune-b", labels={"keep": "1"})
    deleted = api.prune_networks(filters={"label!": "keep"})["NetworksDeleted"]
    assert deleted == ["tprune-a"]
    assert api.prune_networks()["NetworksDeleted"] == ["tprune-b"]
    with pytest.raises(docker.errors.NotFound):
        api.inspect_network(a)


def test_network_cli_round_trip(cli: Cli) -> None:
    cli("network", "create", "tcli-net")
    try:
        assert "tcli-net" in cli("network", "ls").stdout
        cid = cli("run", "-d", "--network", "tcli-net", "--network-alias", "cli-alias",
                  "busybox", "sleep", "300").stdout.strip()
        out = cli("run", "--rm", "--network", "tcli-net", "busybox", "nslookup",
                  "cli-alias").stdout
        assert "Address:" in out.split("Name:")[-1]
        cli("rm", "-f", cid)
    finally:
        cli("network", "rm", "tcli-net")


# other modes -----------------------------------------------------------------------------------


def test_none_has_only_loopback(client: docker.DockerClient, api: docker.APIClient) -> None:
    out = _run(client, "ip -o link; ip -o addr; cat /etc/hosts", network_mode="none")
    links = [line.split(":")[1].strip() for line in out.splitlines() if ": <" in line]
    assert links == ["lo"]
    assert "127.0.0.1/8" in out and "LOOPBACK,UP" in out
    ctr = client.containers.create("busybox", ["true"], network_mode="none")
    assert list(api.inspect_container(ctr.id)["NetworkSettings"]["Networks"]) == ["none"]


def test_host_mode_sees_the_hosts_interfaces(client: docker.DockerClient,
                                             api: docker.APIClient, daemon: Daemon) -> None:
    before = set(os.listdir("/sys/class/net"))
    out = _run(client, "hostname; ip -o link", network_mode="host")
    lines = out.splitlines()
    assert lines[0] == socket.gethostname()
    names = {line.split(":")[1].strip().split("@")[0] for line in lines[1:] if ": <" in line}
    # Other daemons on this host add and remove veths meanwhile: only the interfaces present
    # both before and after the run must have been seen from inside.
    assert before & set(os.listdir("/sys/class/net")) <= names | {"lo"}
    assert daemon.bridge in names or not os.path.exists(f"/sys/class/net/{daemon.bridge}")
    ctr = client.containers.create("busybox", ["true"], network_mode="host")
    info = api.inspect_container(ctr.id)
    assert info["Config"]["Hostname"] == socket.gethostname()
    assert list(info["NetworkSettings"]["Networks"]) == ["host"]


def test_container_mode_shares_the_namespace(client: docker.DockerClient,
                                             api: docker.APIClient) -> None:
    server = _httpd(client, "shared", port=8080)
    ip = api.inspect_container(server.id)["NetworkSettings"]["IPAddress"]
    out = _run(client, "ip -o addr show eth0; wget -q -O- http://localhost:8080/",
               network_mode=f"container:{server.id}")
    assert ip in out and "shared" in out
    with pytest.raises(docker.errors.APIError) as err:
        client.containers.create("busybox", ["true"], network_mode=f"container:{server.id}",
                                 ports={"80/tcp": None})
    assert "conflicting options" in str(err.value)


# nothing leaks ---------------------------------------------------------------------------------


def test_create_start_remove_cycles_leave_nothing(client: docker.DockerClient,
                                                  api: docker.APIClient, daemon: Daemon) -> None:
    """STOWD_LEAK_CYCLES (default 100, about 12 s) create-start-remove cycles with ports."""
    cycles = int(os.environ.get("STOWD_LEAK_CYCLES", "100"))
    assert _wait_clean(daemon) == {"netns": [], "veths": [], "dnat": []}
    first_ip = None
    for _ in range(cycles):
        ctr = client.containers.run("busybox", ["sleep", "300"], detach=True,
                                    ports={"80/tcp": None, "53/udp": ("127.0.0.1", None)})
        ip = api.inspect_container(ctr.id)["NetworkSettings"]["IPAddress"]
        first_ip = first_ip or ip
        assert ip == first_ip  # the lease came back: lowest free address again
        ctr.remove(force=True)
    assert _wait_clean(daemon) == {"netns": [], "veths": [], "dnat": []}


def test_kill_9_keeps_addresses_and_ports_and_stop_cleans_up() -> None:
    d = Daemon().start()
    try:
        d.import_busybox()
        client = d.client()
        network = client.networks.create("tkill")
        web = _httpd(client, "survivor", port=80, name="survivor", ports={"80/tcp": None},
                     network="tkill")
        peer = client.containers.run("busybox", ["sleep", "300"], detach=True, network="tkill")
        api = client.api
        before = api.inspect_container(web.id)["NetworkSettings"]
        port = _host_port(api, web.id, "80/tcp")
        assert _get(f"http://127.0.0.1:{port}/") == "survivor"
        client.close()

        d.kill9()
        assert _get(f"http://127.0.0.1:{port}/") == "survivor"  # iptables keep working
        d.start()

        client = d.client()
        api = client.api
        after = api.inspect_container(web.id)["NetworkSettings"]
        assert after["Networks"]["tkill"]["IPAddress"] == before["Networks"]["tkill"][
            "IPAddress"]
        assert after["Ports"] == before["Ports"]
        assert _get(f"http://127.0.0.1:{port}/") == "survivor"
        assert not _bindable(port)  # held again
        assert len(_dnat_rules(d)) == 1  # not added twice
        assert _exec(client.containers.get(peer.id),
                     "wget -q -O- http://survivor/").strip() == "survivor"  # DNS again
        # A new container does not get a recovered container's address.
        third = client.containers.run("busybox", ["sleep", "300"], detach=True,
                                      network="tkill")
        ips = {api.inspect_container(c)["NetworkSettings"]["Networks"]["tkill"]["IPAddress"]
               for c in (web.id, peer.id, third.id)}
        assert len(ips) == 3

        for c in (web.id, peer.id, third.id):
            api.stop(c, timeout=0)
        assert _wait_clean(d) == {"netns": [], "veths": [], "dnat": []}
        assert _refused("127.0.0.1", port)
        assert _bindable(port)
        for c in (web.id, peer.id, third.id):
            api.remove_container(c)
        network.remove()
        client.close()
        d.stop()
        assert network_leftovers(d) == []
    finally:
        d.cleanup()


def test_failed_start_gives_back_every_address(client: docker.DockerClient,
                                               api: docker.APIClient, daemon: Daemon) -> None:
    a = client.networks.create("tfail-a")
    b = client.networks.create("tfail-b", ipam=docker.types.IPAMConfig(
        pool_configs=[docker.types.IPAMPool(subnet="10.222.9.0/24")]))
    try:
        holder = client.containers.create("busybox", ["sleep", "300"], network="tfail-b")
        api.disconnect_container_from_network(holder.id, b.id)
        api.connect_container_to_network(holder.id, b.id, ipv4_address="10.222.9.5")
        holder.start()
        loser = client.containers.create("busybox", ["sleep", "300"], network="tfail-a")
        api.connect_container_to_network(loser.id, b.id, ipv4_address="10.222.9.5")
        with pytest.raises(docker.errors.APIError, match="Address already in use"):
            loser.start()
        assert _host_state(daemon)["netns"] == [holder.id]  # the loser's is gone already
        probe = client.containers.run("busybox", ["sleep", "300"], detach=True,
                                      network="tfail-a")
        ip = api.inspect_container(probe.id)["NetworkSettings"]["Networks"]["tfail-a"][
            "IPAddress"]
        assert ip.endswith(".2")  # the loser's address on tfail-a came back
    finally:
        for c in client.containers.list(all=True):
            c.remove(force=True)
        a.remove()
        b.remove()


def test_network_names_as_dockerd_takes_them(client: docker.DockerClient,
                                             api: docker.APIClient) -> None:
    net = client.networks.create("test 01")
    try:
        assert client.networks.get("test 01").id == net.id
        assert [n["Name"] for n in api.networks(names=["test 01"])] == ["test 01"]
    finally:
        net.remove()
    res = api.post(url(api, "/networks/create"), json={"Name": "a/b"})
    assert res.status_code == 400
