"""IPv6 networks' pure parts: the IPv6 pool, published pairs, AAAA and ip6.arpa, ip6tables."""

import ipaddress
import socket
import struct

import pytest

from stowd.engine.errors import Conflict, Forbidden, InvalidParameter, SystemError_
from stowd.engine.network import dns, ipam, ports
from stowd.engine.network.iptables import Firewall


def test_v6_pool_gateway_lowest_free_first_and_reuse() -> None:
    pool = ipam.Pool.of6("fd5d:1:2:3::/64")
    assert str(pool.gateway) == "fd5d:1:2:3::1" and pool.version == 6
    got = [str(pool.allocate()) for _ in range(3)]
    assert got == ["fd5d:1:2:3::2", "fd5d:1:2:3::3", "fd5d:1:2:3::4"]
    pool.release("fd5d:1:2:3::3")
    assert str(pool.allocate()) == "fd5d:1:2:3::3"
    # The last address is a host (IPv6 has no broadcast); the subnet's first is not.
    small = ipam.Pool.of6("fd5d::/126")
    assert [str(small.allocate()) for _ in range(2)] == ["fd5d::2", "fd5d::3"]
    with pytest.raises(Conflict, match="no available IPv6 addresses"):
        small.allocate()


def test_v6_pool_given_gateway_range_aux_and_static_addresses() -> None:
    pool = ipam.Pool.of6("fd5d:1::/64", "fd5d:1::fe", "fd5d:1::/120",
                         {"router": "fd5d:1::2"})
    assert str(pool.gateway) == "fd5d:1::fe"
    assert str(pool.allocate()) == "fd5d:1::1"  # the gateway is elsewhere: ::1 is free
    assert str(pool.allocate()) == "fd5d:1::3"  # ::2 is an auxiliary address
    assert str(pool.allocate("fd5d:1::99")) == "fd5d:1::99"
    for taken in ("fd5d:1::99", "fd5d:1::fe", "fd5d:1::2", "fd5d:1::"):
        with pytest.raises(Conflict, match="Address already in use"):
            pool.allocate(taken)
    with pytest.raises(InvalidParameter, match="no configured subnet or ip-range contain"):
        pool.allocate("fd5d:2::5")
    with pytest.raises(InvalidParameter, match="invalid IPv6 address"):
        pool.allocate("10.0.0.5")
    pool.mark("fd5d:1::77")
    pool.mark("10.0.0.77")  # another family: not this pool's
    assert ipaddress.IPv6Address("fd5d:1::77") in pool.used and len(pool.used) == 4


@pytest.mark.parametrize(("subnet", "gateway", "ip_range", "aux", "error", "words"), [
    ("10.0.0.0/24", "", "", None, InvalidParameter, "not an IPv6 subnet"),
    ("fd5d::/127", "", "", None, InvalidParameter, "too long"),
    ("fd5d::/64", "fd5e::1", "", None, InvalidParameter, "not in subnet"),
    ("fd5d::/64", "", "fd5e::/80", None, InvalidParameter, "not in subnet"),
    ("fd5d::/64", "", "", {"a": "fd5e::1"}, Forbidden, "must belong to the master pool"),
    ("fd5d::/64", "", "", {"a": "10.0.0.1"}, Forbidden, "must belong to the master pool"),
])
def test_v6_pool_refuses_bad_configs(subnet: str, gateway: str, ip_range: str,
                                     aux: dict[str, str] | None, error: type[Exception],
                                     words: str) -> None:
    with pytest.raises(error, match=words):
        ipam.Pool.of6(subnet, gateway, ip_range, aux)


def test_v6_subnet_host_bits_are_dropped_as_dockerd_takes_them() -> None:
    pool = ipam.Pool.of6("2001:389::1/64", "2001:389::ffff", "2001:389::0/96")
    assert (str(pool.subnet), str(pool.ip_range)) == ("2001:389::/64", "2001:389::/96")
    assert str(pool.allocate()) == "2001:389::1"


def test_overlaps_compare_one_family() -> None:
    v6 = ipam.network6("fd5d::/64")
    assert ipam.overlaps(v6, [ipam.network6("fd5d::/48")])
    assert not ipam.overlaps(v6, [ipam.network("10.0.0.0/8"), ipam.network6("fd5e::/64")])


def test_published_pairs_for_a_container_with_ipv6() -> None:
    reqs = ports.requests({"90/tcp": {}}, {"80/tcp": [{"HostPort": "8080"}],
                                           "81/tcp": [{"HostIp": "::1", "HostPort": "8181"}],
                                           "82/tcp": [{"HostIp": "127.0.0.1"}]}, True)
    with6 = ports.for_container(reqs, ipv6=True, host_ipv6=True)
    assert [(r.container_port, r.host_ip, r.with_ipv6) for r in with6] == [
        (80, "", True), (81, "::1", False), (82, "127.0.0.1", False), (90, "", True)]
    # Without IPv6 in the container: every-address TCP ports are paired on `::` through the
    # userland proxy (as dockerd's docker-proxy), where the host has IPv6.
    without = ports.for_container(reqs, ipv6=False, host_ipv6=True)
    assert [(r.container_port, r.host_ip, r.with_ipv6, r.proxy_v6) for r in without] == [
        (80, "", True, True), (82, "127.0.0.1", False, False), (90, "", True, True)]
    assert not any(r.with_ipv6 for r in ports.for_container(reqs, ipv6=False, host_ipv6=False))
    udp = ports.requests({}, {"53/udp": [{"HostPort": "5353"}]}, False)
    assert not ports.for_container(udp, ipv6=False, host_ipv6=True)[0].with_ipv6
    with pytest.raises(InvalidParameter, match="invalid host IP"):
        ports.requests({}, {"80/tcp": [{"HostIp": "fd5d::zz"}]}, False)


def test_reserve_pairs_share_one_port() -> None:
    held = lambda proto, ip, port: False  # noqa: E731
    pair = ports.reserve([ports.PortRequest("tcp", 80, "", 0, 0, with_ipv6=True)], held, "c1")
    try:
        v4, v6 = pair
        assert (v4.host_ip, v6.host_ip) == ("0.0.0.0", "::") and v4.host_port == v6.host_port
        assert v6.sock is not None and v6.sock.family == socket.AF_INET6
        # The port is held on IPv6: a fixed pair on it fails, naming the IPv6 side.
        busy = v6.host_port
        v4.close()
        with pytest.raises(SystemError_, match=r"cannot publish tcp \[::\]:\d+: bind: address "
                                               "already in use"):
            ports.reserve([ports.PortRequest("tcp", 80, "", busy, busy, with_ipv6=True)],
                          held, "c2")
        assert ports.ports_view(["80/tcp"], pair) == {"80/tcp": [
            {"HostIp": "0.0.0.0", "HostPort": str(busy)}, {"HostIp": "::", "HostPort": str(busy)}]}
    finally:
        ports.close_all(pair)


def _query(name: str, qtype: int) -> bytes:
    return (struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 0) + dns.encode_name(name)
            + struct.pack("!HH", qtype, dns.CLASS_IN))


def test_aaaa_answers_the_ipv6_addresses_and_a_the_ipv4_ones() -> None:
    both = ["10.1.0.2", "fd5d::2"]
    aaaa = dns.answer(dns.parse_query(_query("web", dns.TYPE_AAAA)), both)
    assert struct.unpack("!H", aaaa[6:8])[0] == 1
    assert aaaa.endswith(socket.inet_pton(socket.AF_INET6, "fd5d::2"))
    assert struct.unpack("!HH", aaaa[-26:-22]) == (dns.TYPE_AAAA, dns.CLASS_IN)
    a = dns.answer(dns.parse_query(_query("web", dns.TYPE_A)), both)
    assert struct.unpack("!H", a[6:8])[0] == 1 and a.endswith(socket.inet_aton("10.1.0.2"))


def test_ip6_arpa_names() -> None:
    name = ipaddress.IPv6Address("fd5d::2").reverse_pointer
    assert dns.reverse_ip(name) == "fd5d::2"
    for bad in ("2.0.ip6.arpa", "z" + name[1:], "x.ip6.arpa"):
        assert dns.reverse_ip(bad) is None


def test_ip6tables_rules_as_ip6tables_prints_them() -> None:
    fw = Firewall("STX", ipv6=True)
    assert fw.cmd == "ip6tables"
    rules = fw.network_rules("stx0", "fd5d::/64", internal=False)
    assert not any("127.0.0.0/8" in r or "INPUT" in r for r in rules["filter"] + rules["nat"])
    assert '-A STX-POSTROUTING -s fd5d::/64 ! -o stx0 -m comment --comment "net stx0" ' \
           "-j MASQUERADE" in rules["nat"]
    dnat = fw.port_rules("abc", "fd5d::2", [ports.Binding("tcp", 80, "::", 8080),
                                            ports.Binding("tcp", 81, "fd5d::1", 8181)])
    assert dnat == [
        '-A STX-DNAT -p tcp -m tcp --dport 8080 -m comment --comment "ctr abc" '
        "-j DNAT --to-destination [fd5d::2]:80",
        '-A STX-DNAT -d fd5d::1/128 -p tcp -m tcp --dport 8181 -m comment --comment "ctr abc" '
        "-j DNAT --to-destination [fd5d::2]:81",
    ]
    # [::1] is not DNATed (no route_localnet in IPv6): dockerd's `! -d ::1/128`.
    jumps = [shown for _, (_, rules) in fw._base().items() for shown, _ in rules]
    assert "-A OUTPUT ! -d ::1/128 -m addrtype --dst-type LOCAL -j STX-DNAT" in jumps
