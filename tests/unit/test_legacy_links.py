"""Legacy links (engine/network/legacy_links.py): dockerd's formats and variables."""

import pytest

from stowd.engine.errors import Conflict, InvalidParameter
from stowd.engine.network import legacy_links as ll


def test_parse_forms_and_errors() -> None:
    assert ll.parse("web:alias") == ("web", "alias")
    assert ll.parse("/web:alias") == ("web", "alias")
    assert ll.parse("web") == ("web", "web")
    for bad in ("a:b:c", "", ":x", "x:"):
        with pytest.raises(InvalidParameter, match="bad format for links"):
            ll.parse(bad)
    assert ll.parse_all(None) == []
    with pytest.raises(InvalidParameter):
        ll.parse_all("web:alias")


def test_inspect_form_and_link_paths() -> None:
    assert ll.inspect_form("web", "client", "webalias") == "/web:/client/webalias"
    assert ll.split_link_path("/client/webalias") == ("client", "webalias")
    assert ll.split_link_path("client/webalias") == ("client", "webalias")
    with pytest.raises(Conflict, match="cannot remove the default link name"):
        ll.split_link_path("client")


def test_env_vars_as_dockerd_20_10_wrote_them() -> None:
    env = ll.env_vars("i10cli", "webalias", "172.17.0.2", [
        "PATH=/bin", "HOME=/root", "FOO=bar", "MULTI=a=b", "NOVALUE"],
        {"8080/udp": {}, "80/tcp": {}})
    assert env == [
        "WEBALIAS_PORT=tcp://172.17.0.2:80",
        "WEBALIAS_PORT_80_TCP=tcp://172.17.0.2:80",
        "WEBALIAS_PORT_80_TCP_ADDR=172.17.0.2",
        "WEBALIAS_PORT_80_TCP_PORT=80",
        "WEBALIAS_PORT_80_TCP_PROTO=tcp",
        "WEBALIAS_PORT_8080_UDP=udp://172.17.0.2:8080",
        "WEBALIAS_PORT_8080_UDP_ADDR=172.17.0.2",
        "WEBALIAS_PORT_8080_UDP_PORT=8080",
        "WEBALIAS_PORT_8080_UDP_PROTO=udp",
        "WEBALIAS_NAME=/i10cli/webalias",
        "WEBALIAS_ENV_FOO=bar",
        "WEBALIAS_ENV_MULTI=a=b",
    ]


def test_env_vars_port_ranges_and_dashes() -> None:
    env = ll.env_vars("p", "my-db", "10.0.0.2", None,
                      {"5000/tcp": {}, "5001/tcp": {}, "5002/tcp": {}})
    assert "MY_DB_PORT=tcp://10.0.0.2:5000" in env
    assert env[-5:] == [
        "MY_DB_PORT_5000_TCP_START=tcp://10.0.0.2:5000",
        "MY_DB_PORT_5000_TCP_PORT_START=5000",
        "MY_DB_PORT_5000_TCP_END=tcp://10.0.0.2:5002",
        "MY_DB_PORT_5000_TCP_PORT_END=5002",
        "MY_DB_NAME=/p/my-db",
    ]
    assert ll.env_vars("p", "x", "1.2.3.4", None, None) == ["X_NAME=/p/x"]


def test_hosts_entry_names_as_dockerd() -> None:
    assert ll.hosts_entry("webalias", "i10web", "778cfa02394a", "172.17.0.2") == (
        "webalias 778cfa02394a i10web:172.17.0.2")
    assert ll.hosts_entry("i10web", "i10web", "778cfa02394a", "172.17.0.2") == (
        "i10web 778cfa02394a:172.17.0.2")
