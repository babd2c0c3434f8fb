"""Networking's pure parts: subnets and addresses, port requests, DNS wire format, rules."""

import asyncio
import ipaddress
import socket
import struct

import pytest

from stowd.engine.errors import Conflict, InvalidParameter, SystemError_
from stowd.engine.network import dns, ipam, ports
from stowd.engine.network.iptables import Firewall

# ipam -------------------------------------------------------------------------------------

ROUTES = """\
default via 192.0.2.1 dev eth0
172.17.0.0/16 dev docker0 proto kernel scope link src 172.17.0.1 linkdown
192.0.2.0/24 dev eth0 proto kernel scope link src 192.0.2.2
local 127.0.0.0/8 dev lo table local proto kernel scope host src 127.0.0.1
broadcast 172.17.255.255 dev docker0 table local proto kernel scope link src 172.17.0.1
10.88.0.0/16 dev stowd0 proto kernel scope link src 10.88.0.1
"""


def test_routes_are_parsed_without_default_and_loopback() -> None:
    nets = [str(n) for n in ipam.parse_routes(ROUTES)]
    assert nets == ["172.17.0.0/16", "192.0.2.0/24", "172.17.255.255/32", "10.88.0.0/16"]


def test_default_bridge_subnet_avoids_routes() -> None:
    taken = ipam.parse_routes(ROUTES)
    candidates = [ipam.network(s) for s in ipam.DEFAULT_BRIDGE_CANDIDATES]
    assert str(ipam.pick_subnet(candidates, taken)) == "10.87.0.0/16"
    with pytest.raises(Conflict):
        ipam.pick_subnet([ipam.network("172.17.3.0/24")], taken)


def test_pool_subnets_wrap_around() -> None:
    base, size = ipam.parse_pool("base=10.89.0.0/22,size=24")
    assert [str(n) for n in ipam.pool_subnets(base, size, start=3)] == [
        "10.89.3.0/24", "10.89.0.0/24", "10.89.1.0/24", "10.89.2.0/24"]
    assert ipam.parse_pool("10.1.0.0/16") == (ipam.network("10.1.0.0/16"), 24)
    for bad in ("base=10.1.0.0/16,size=8", "base=nope", "size=24,foo=1"):
        with pytest.raises(InvalidParameter):
            ipam.parse_pool(bad)


def test_subnet_text_is_checked() -> None:
    with pytest.raises(InvalidParameter, match=r"it should be 10\.1\.2\.0/24"):
        ipam.network("10.1.2.3/24")
    with pytest.raises(InvalidParameter, match="IPv4"):
        ipam.network("fd00::/64")


def test_addresses_lowest_free_first_and_reused() -> None:
    pool = ipam.Pool.of("10.5.0.0/29")
    assert str(pool.gateway) == "10.5.0.1"
    got = [str(pool.allocate()) for _ in range(5)]
    assert got == ["10.5.0.2", "10.5.0.3", "10.5.0.4", "10.5.0.5", "10.5.0.6"]
    with pytest.raises(Conflict, match="no available IPv4 addresses"):
        pool.allocate()
    pool.release("10.5.0.3")
    assert str(pool.allocate()) == "10.5.0.3"


def test_ip_range_static_address_and_restart_marks() -> None:
    pool = ipam.Pool.of("10.6.0.0/24", "10.6.0.254", "10.6.0.128/25")
    assert str(pool.allocate()) == "10.6.0.128"
    assert str(pool.allocate("10.6.0.7")) == "10.6.0.7"
    with pytest.raises(Conflict, match="Address already in use"):
        pool.allocate("10.6.0.7")
    with pytest.raises(Conflict):
        pool.allocate("10.6.0.254")  # the gateway
    with pytest.raises(InvalidParameter):
        pool.allocate("10.7.0.1")
    pool.mark("10.6.0.129")
    assert str(pool.allocate()) == "10.6.0.130"
    with pytest.raises(InvalidParameter, match="not in subnet"):
        ipam.Pool.of("10.6.0.0/24", "10.9.0.1")


def test_mac_from_address() -> None:
    assert ipam.mac_for(ipaddress.IPv4Address("172.17.0.2")) == "02:42:ac:11:00:02"


# ports ------------------------------------------------------------------------------------


def test_requests_from_bindings_and_publish_all() -> None:
    reqs = ports.requests(
        {"80/tcp": {}, "53/udp": {}, "99/tcp": {}},
        {"80/tcp": [{"HostIp": "", "HostPort": "8080"}, {"HostIp": "127.0.0.1", "HostPort": ""}],
         "53/udp": [{"HostIp": "0.0.0.0", "HostPort": "5300-5310"}],
         "7000-7001/tcp": [{"HostPort": "9000-9001"}]},
        publish_all=True)
    assert reqs == [
        ports.PortRequest("tcp", 80, "", 8080, 8080),
        ports.PortRequest("tcp", 80, "127.0.0.1", 0, 0),
        ports.PortRequest("udp", 53, "", 5300, 5310),
        ports.PortRequest("tcp", 7000, "", 9000, 9000),
        ports.PortRequest("tcp", 7001, "", 9001, 9001),
        ports.PortRequest("tcp", 99, "", 0, 0),
    ]


def test_ipv6_host_addresses_are_skipped_and_bad_ones_refused() -> None:
    # Kept in the request, left out for a container without IPv6 (test_ipv6.py: with it).
    reqs = ports.requests({}, {"80/tcp": [{"HostIp": "::", "HostPort": "80"}]}, False)
    assert reqs == [ports.PortRequest("tcp", 80, "::", 80, 80)]
    assert ports.for_container(reqs, ipv6=False, host_ipv6=True) == []
    with pytest.raises(InvalidParameter, match="invalid host IP"):
        ports.requests({}, {"80/tcp": [{"HostIp": "nope", "HostPort": "80"}]}, False)
    with pytest.raises(InvalidParameter):
        ports.requests({}, {"80/xyz": [{}]}, False)
    with pytest.raises(InvalidParameter):
        ports.requests({}, {"80-82/tcp": [{"HostPort": "9000-9001"}]}, False)
    with pytest.raises(InvalidParameter):
        ports.requests({}, {"80/tcp": [{"HostPort": "70000"}]}, False)


def test_reserve_ephemeral_fixed_and_conflicts() -> None:
    held = lambda proto, ip, port: False  # noqa: E731
    [eph] = ports.reserve([ports.PortRequest("tcp", 80, "127.0.0.1", 0, 0)], held, "c1")
    try:
        assert eph.host_ip == "127.0.0.1" and eph.host_port > 0
        busy = eph.host_port
        with pytest.raises(SystemError_, match="address already in use"):
            ports.reserve([ports.PortRequest("tcp", 80, "", busy, busy)], held, "c2")
        # A range skips the busy port.
        [b] = ports.reserve([ports.PortRequest("tcp", 80, "127.0.0.1", busy, busy + 50)],
                            held, "c3")
        assert b.host_port != busy
        b.close()
        with pytest.raises(SystemError_, match="port is already allocated"):
            ports.reserve([ports.PortRequest("tcp", 80, "", 5, 5)],
                          lambda proto, ip, port: True, "c4")
        # All or nothing: the first reservation is released when the second fails.
        with pytest.raises(SystemError_):
            ports.reserve([ports.PortRequest("udp", 53, "127.0.0.1", 0, 0),
                           ports.PortRequest("tcp", 80, "", busy, busy)], held, "c5")
    finally:
        eph.close()
    s = socket.socket()
    s.bind(("127.0.0.1", busy))  # free again
    s.close()


def test_docker_views_of_ports() -> None:
    keys = ports.exposed_keys({"80/tcp": {}, "99/tcp": {}}, {"53/udp": [{}]})
    assert keys == ["53/udp", "80/tcp", "99/tcp"]
    bindings = [ports.Binding("tcp", 80, "0.0.0.0", 8080), ports.Binding("udp", 53, "127.0.0.1",
                                                                           5353)]
    assert ports.ports_view(keys, bindings) == {
        "53/udp": [{"HostIp": "127.0.0.1", "HostPort": "5353"}],
        "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}],
        "99/tcp": None,
    }
    assert ports.summary(keys, bindings) == [
        {"IP": "127.0.0.1", "PrivatePort": 53, "PublicPort": 5353, "Type": "udp"},
        {"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
        {"PrivatePort": 99, "Type": "tcp"},
    ]
    record = bindings[0].to_record()
    assert ports.Binding.from_record(record) == bindings[0]


# dns --------------------------------------------------------------------------------------


def _query(name: str, qtype: int = dns.TYPE_A, qid: int = 0x1234) -> bytes:
    return (struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + dns.encode_name(name)
            + struct.pack("!HH", qtype, dns.CLASS_IN))


def test_query_parsing() -> None:
    q = dns.parse_query(_query("Web.Example."))
    assert q.id == 0x1234 and q.name == "web.example" and q.qtype == dns.TYPE_A
    assert q.recursion_desired
    for bad in (b"", b"\0" * 11, _query("x")[:14]):
        with pytest.raises(dns.DnsFormatError):
            dns.parse_query(bad)
    response = bytearray(_query("x"))
    response[2] |= 0x80
    with pytest.raises(dns.DnsFormatError):
        dns.parse_query(bytes(response))


def test_answers() -> None:
    q = dns.parse_query(_query("web"))
    reply = dns.answer(q, ["10.1.0.2", "10.1.0.3"])
    qid, flags, qd, an, ns, ar = struct.unpack("!HHHHHH", reply[:12])
    assert (qid, qd, an, ns, ar) == (0x1234, 1, 2, 0, 0)
    assert flags & 0x8000 and flags & 0x0100 and flags & 0x0080 and flags & 0xF == 0
    assert reply.endswith(socket.inet_aton("10.1.0.3"))
    aaaa = dns.answer(dns.parse_query(_query("web", dns.TYPE_AAAA)), ["10.1.0.2"])
    assert struct.unpack("!H", aaaa[6:8])[0] == 0  # known name, no IPv6: empty NOERROR
    ptr_q = dns.parse_query(_query("2.0.1.10.in-addr.arpa", dns.TYPE_PTR))
    assert dns.reverse_ip(ptr_q.name) == "10.1.0.2"
    assert dns.answer_ptr(ptr_q, "web.net").endswith(dns.encode_name("web.net"))
    assert struct.unpack("!H", dns.error(q, dns.RCODE_SERVFAIL)[2:4])[0] & 0xF == 2
    assert dns.formerr(b"\x12\x34junk")[:2] == b"\x12\x34"


def test_resolver_local_names_and_no_upstream() -> None:
    resolver = dns.Resolver(lambda cid, name: ["10.1.0.2"] if name == "web" else None,
                            lambda cid, ip: None, lambda cid: [])
    reply = asyncio.run(resolver.resolve("c", _query("web"), tcp=False))
    assert reply is not None and reply.endswith(socket.inet_aton("10.1.0.2"))
    reply = asyncio.run(resolver.resolve("c", _query("elsewhere"), tcp=False))
    assert reply is not None and reply[3] & 0xF == dns.RCODE_SERVFAIL


def test_host_resolvers(tmp_path: object) -> None:
    from pathlib import Path

    f = Path(str(tmp_path)) / "resolv.conf"
    f.write_text("nameserver 127.0.0.53\nnameserver fd00::1\nsearch x\nnameserver 10.0.0.2\n")
    assert dns.host_resolvers(str(f)) == ["127.0.0.53", "10.0.0.2"]


# iptables rules ------------------------------------------------------------------------------


def test_rules_are_written_as_iptables_prints_them() -> None:
    fw = Firewall("STX")
    rules = fw.network_rules("stx0", "10.9.0.0/24", internal=False)
    assert rules["filter"][0] == (
        '-A STX-ISOLATION-1 -i stx0 ! -o stx0 -m comment --comment "net stx0" '
        "-j STX-ISOLATION-2")
    assert '-A STX-POSTROUTING -s 10.9.0.0/24 ! -o stx0 -m comment --comment "net stx0" ' \
           "-j MASQUERADE" in rules["nat"]
    internal = fw.network_rules("stx1", "10.9.1.0/24", internal=True)
    assert not any("MASQUERADE" in r and "! -o" in r for r in internal["nat"])
    assert not any("! -o stx1" in r and "ACCEPT" in r for r in internal["filter"])
    dnat = fw.port_rules("abc", "10.9.0.2", [ports.Binding("tcp", 80, "0.0.0.0", 8080),
                                             ports.Binding("udp", 53, "127.0.0.1", 5353)])
    assert dnat == [
        '-A STX-DNAT -p tcp -m tcp --dport 8080 -m comment --comment "ctr abc" '
        "-j DNAT --to-destination 10.9.0.2:80",
        '-A STX-DNAT -d 127.0.0.1/32 -p udp -m udp --dport 5353 -m comment --comment "ctr abc" '
        "-j DNAT --to-destination 10.9.0.2:53",
    ]
