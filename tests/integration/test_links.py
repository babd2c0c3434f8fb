"""Legacy links: `--link` on the default bridge (hosts, variables), on user networks (DNS),
inspect's shape, and `docker rm --link`, compared with what dockerd 20.10 answers."""

import docker
import pytest

from tests.integration.conftest import Cli


def test_links_on_the_default_bridge(client: docker.DockerClient, cli: Cli) -> None:
    api = client.api
    web = client.containers.run("busybox", ["sleep", "300"], detach=True, name="lk-web",
                                environment={"FOO": "bar", "MULTI": "a=b"},
                                ports={"80/tcp": None, "8080/udp": None},
                                hostname="webhost")
    ip = api.inspect_container(web.id)["NetworkSettings"]["IPAddress"]
    cid = cli("run", "-d", "--name", "lk-cli", "--link", "lk-web:webalias", "--link",
              "lk-web", "busybox", "sleep", "300").stdout.strip()
    info = api.inspect_container(cid)
    assert info["HostConfig"]["Links"] == ["/lk-web:/lk-cli/webalias", "/lk-web:/lk-cli/lk-web"]
    assert "Links" not in info["Config"] and not any(
        e.startswith("WEBALIAS") for e in info["Config"]["Env"] or [])
    hosts = cli("exec", "lk-cli", "cat", "/etc/hosts").stdout.splitlines()
    assert f"{ip}\twebalias webhost lk-web" in hosts
    assert f"{ip}\tlk-web webhost" in hosts
    env = set(cli("exec", "lk-cli", "env").stdout.splitlines())
    for line in (f"WEBALIAS_PORT=tcp://{ip}:80", f"WEBALIAS_PORT_80_TCP=tcp://{ip}:80",
                 f"WEBALIAS_PORT_80_TCP_ADDR={ip}", "WEBALIAS_PORT_80_TCP_PORT=80",
                 "WEBALIAS_PORT_80_TCP_PROTO=tcp", f"WEBALIAS_PORT_8080_UDP=udp://{ip}:8080",
                 "WEBALIAS_NAME=/lk-cli/webalias", "WEBALIAS_ENV_FOO=bar",
                 "WEBALIAS_ENV_MULTI=a=b", "LK_WEB_NAME=/lk-cli/lk-web"):
        assert line in env, line
    assert not any(e.startswith("WEBALIAS_ENV_PATH=") for e in env)
    # the alias reaches the linked container
    assert cli("exec", "lk-cli", "ping", "-c", "1", "-W", "2", "webalias").returncode == 0

    # a restart of the linked container moves its address: the parent's hosts follow
    api.stop(web.id, timeout=0)
    client.containers.run("busybox", ["sleep", "300"], detach=True, name="lk-squatter")
    web.start()
    new_ip = api.inspect_container(web.id)["NetworkSettings"]["IPAddress"]
    hosts = cli("exec", "lk-cli", "cat", "/etc/hosts").stdout.splitlines()
    assert f"{new_ip}\twebalias webhost lk-web" in hosts

    # docker rm --link
    cli("rm", "--link", "/lk-cli/webalias")
    assert api.inspect_container(web.id)["State"]["Running"]  # the linked one stays
    assert api.inspect_container(cid)["HostConfig"]["Links"] == ["/lk-web:/lk-cli/lk-web"]
    assert not any("webalias" in h for h in
                   cli("exec", "lk-cli", "cat", "/etc/hosts").stdout.splitlines())
    bad = cli("rm", "--link", "lk-cli", check=False)
    assert "Conflict, cannot remove the default link name of the container" in bad.stderr
    bad = cli("rm", "--link", "/lk-cli/nope", check=False)
    assert "No such container: lk-cli/nope" in bad.stderr


def test_link_errors_as_dockerd(client: docker.DockerClient, cli: Cli) -> None:
    api = client.api
    with pytest.raises(docker.errors.APIError) as err:
        api.create_container("busybox", ["true"], host_config=api.create_host_config(
            links={"nope": "x"}))
    assert err.value.status_code == 400
    assert "could not get container for nope: No such container: nope" in str(err.value)
    client.containers.create("busybox", ["true"], name="lk-stopped")
    with pytest.raises(docker.errors.APIError) as err:
        api.create_container("busybox", ["true"], host_config=api.create_host_config(
            links={"lk-stopped": "s"}, network_mode="host"))
    assert err.value.status_code == 400
    assert "host type networking can't be used with links" in str(err.value)
    res = api.post(f"{api.base_url}/v1.44/containers/create",
                   json={"Image": "busybox", "HostConfig": {"Links": ["a:b:c"]}})
    assert res.status_code == 400 and res.json()["message"] == "bad format for links: a:b:c"
    cid = api.create_container("busybox", ["true"], name="lk-parent",
                               host_config=api.create_host_config(
                                   links={"lk-stopped": "s"}))["Id"]
    with pytest.raises(docker.errors.APIError) as err:
        api.start(cid)
    assert err.value.status_code == 409  # dockerd: 500
    assert "Cannot link to a non running container: /lk-stopped AS /lk-parent/s" in str(
        err.value)
    assert api.inspect_container(cid)["State"]["Status"] == "created"


def test_links_on_a_user_network_are_dns_aliases(client: docker.DockerClient,
                                                 cli: Cli) -> None:
    net = client.networks.create("lk-net")
    try:
        target = client.containers.run("busybox", ["sleep", "300"], detach=True,
                                       name="lk-target", network="lk-net")
        cli("run", "-d", "--name", "lk-user", "--network", "lk-net", "--link",
            "lk-target:ualias", "busybox", "sleep", "300")
        info = client.api.inspect_container("lk-user")
        assert info["HostConfig"]["Links"] is None
        assert info["NetworkSettings"]["Networks"]["lk-net"]["Links"] == ["lk-target:ualias"]
        ip = client.api.inspect_container(target.id)["NetworkSettings"]["Networks"][
            "lk-net"]["IPAddress"]
        out = cli("exec", "lk-user", "nslookup", "ualias").stdout
        assert ip in out
        # only the linking container knows the alias
        other = cli("exec", "lk-target", "nslookup", "ualias", check=False)
        assert ip not in other.stdout
        assert not any(e.startswith("UALIAS_") for e in
                       cli("exec", "lk-user", "env").stdout.splitlines())
    finally:
        for c in client.containers.list(all=True):
            c.remove(force=True)
        net.remove()
