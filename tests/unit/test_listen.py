"""Listen addresses and the safety rules: `-H` parsing, loopback, TLS flags, Host headers.

`make_pki` (a CA, a server and a client certificate, and a rogue CA's client) is also used
by tests/integration/test_listen.py.
"""

import datetime
import ipaddress
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from stowd.api.server import (
    DEFAULT_UNIX_PATH,
    Listener,
    ListenError,
    host_header_is_loopback,
    is_loopback_ip,
    is_loopback_name,
    parse_host,
    plan_listeners,
)
from stowd.config import Settings

# --- a throw-away PKI ---------------------------------------------------------------------


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_ca: Path
    rogue_cert: Path  # a client certificate signed by a CA the server does not trust
    rogue_key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: str,
          issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool = False,
          server: bool = False) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(_name(subject)).issuer_name(_name(issuer))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                          content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False), critical=True)
    elif server:
        builder = builder.add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1"))]), critical=False)
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    else:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    p = Pki(*(directory / n for n in (
        "ca.pem", "server-cert.pem", "server-key.pem", "cert.pem", "key.pem",
        "rogue-ca.pem", "rogue-cert.pem", "rogue-key.pem")))
    keys = {n: ec.generate_private_key(ec.SECP256R1())
            for n in ("ca", "server", "client", "rogue_ca", "rogue")}
    pem = serialization.Encoding.PEM
    p.ca.write_bytes(_cert("stowd test CA", keys["ca"], "stowd test CA", keys["ca"],
                           ca=True).public_bytes(pem))
    p.server_cert.write_bytes(_cert("localhost", keys["server"], "stowd test CA", keys["ca"],
                                    server=True).public_bytes(pem))
    p.client_cert.write_bytes(_cert("client", keys["client"], "stowd test CA",
                                    keys["ca"]).public_bytes(pem))
    p.rogue_ca.write_bytes(_cert("rogue CA", keys["rogue_ca"], "rogue CA", keys["rogue_ca"],
                                 ca=True).public_bytes(pem))
    p.rogue_cert.write_bytes(_cert("client", keys["rogue"], "rogue CA",
                                   keys["rogue_ca"]).public_bytes(pem))
    _write_key(keys["server"], p.server_key)
    _write_key(keys["client"], p.client_key)
    _write_key(keys["rogue"], p.rogue_key)
    return p


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


# --- parse_host ---------------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "tls", "expected"), [
    ("unix:///run/x.sock", False, Listener("unix", path="/run/x.sock")),
    ("unix://", False, Listener("unix", path=DEFAULT_UNIX_PATH)),
    (" unix:///run/x.sock ", False, Listener("unix", path="/run/x.sock")),
    ("tcp://127.0.0.1:2375", False, Listener("tcp", host="127.0.0.1", port=2375)),
    ("tcp://127.0.0.1", False, Listener("tcp", host="127.0.0.1", port=2375)),
    ("tcp://127.0.0.1", True, Listener("tcp", host="127.0.0.1", port=2376)),
    ("tcp://", False, Listener("tcp", host="localhost", port=2375)),
    ("tcp://:8080", False, Listener("tcp", host="localhost", port=8080)),
    (":8080", False, Listener("tcp", host="localhost", port=8080)),
    ("127.0.0.1:9000", False, Listener("tcp", host="127.0.0.1", port=9000)),
    ("tcp://[::1]:2375", False, Listener("tcp", host="::1", port=2375)),
    ("tcp://[::1]", True, Listener("tcp", host="::1", port=2376)),
    ("tcp://0.0.0.0:2375", False, Listener("tcp", host="0.0.0.0", port=2375)),
    ("tcp://docker.example:2376", True, Listener("tcp", host="docker.example", port=2376)),
])
def test_parse_host(spec: str, tls: bool, expected: Listener) -> None:
    assert parse_host(spec, tls) == expected


@pytest.mark.parametrize(("spec", "hint"), [
    ("", "use unix:///path or tcp://IP:PORT"),
    ("unix://relative.sock", "use unix:///absolute/path"),
    ("unix:///" + "x" * 120, "kernel's limit"),
    ("/run/x.sock", "as unix:///run/x.sock"),
    ("tcp://127.0.0.1:99999", "from 1 to 65535"),
    ("tcp://127.0.0.1:0", "from 1 to 65535"),
    ("tcp://127.0.0.1:http", "from 1 to 65535"),
    ("tcp://::1:2375", "in brackets, as tcp://[::1]:2375"),
    ("tcp://[::1:2375", "unclosed '['"),
    ("tcp://127.0.0.1:2375/api", "no path"),
    ("fd://", "socket activation"),
    ("ssh://me@host", "use unix:///path or tcp://IP:PORT"),
    ("http://127.0.0.1:2375", "use unix:///path or tcp://IP:PORT"),
])
def test_parse_host_errors_say_what_to_write(spec: str, hint: str) -> None:
    with pytest.raises(ListenError) as info:
        parse_host(spec, False)
    assert hint in str(info.value)


def test_listener_str_round_trips() -> None:
    for spec in ("unix:///run/x.sock", "tcp://127.0.0.1:2375", "tcp://[::1]:2376"):
        assert str(parse_host(spec, False)) == spec


# --- loopback ----------------------------------------------------------------------------


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("::ffff:127.0.0.1", True),
    ("localhost", True), ("LocalHost.", True), ("api.moby.localhost", True),
    ("0.0.0.0", False), ("::", False), ("10.0.0.1", False), ("192.168.1.1", False),
    ("::ffff:10.0.0.1", False), ("example.com", False), ("localhost.example.com", False),
    ("127.0.0.1.nip.io", False),
])
def test_is_loopback_name(host: str, loopback: bool) -> None:
    assert is_loopback_name(host) is loopback
    assert Listener("tcp", host=host, port=1).loopback is loopback


def test_unix_listener_is_local() -> None:
    assert Listener("unix", path="/x").loopback
    assert not is_loopback_ip("localhost")  # a name is not an IP


@pytest.mark.parametrize(("header", "ok"), [
    ("127.0.0.1:2375", True), ("127.0.0.1", True), ("localhost:2375", True),
    ("LOCALHOST", True), ("localhost.:2375", True), ("[::1]:2375", True), ("[::1]", True),
    ("::1", True), ("api.moby.localhost", True),
    ("evil.example", False), ("evil.example:2375", False), ("10.0.0.1:2375", False),
    ("127.0.0.1.nip.io:2375", False), ("[::1", False), ("localhost:http", False),
    ("[fe80::1]:2375", False), ("", False),
])
def test_host_header_is_loopback(header: str, ok: bool) -> None:
    assert host_header_is_loopback(header) is ok


# --- plan_listeners: the safety rules -----------------------------------------------------


def test_loopback_tcp_and_unix_need_nothing() -> None:
    listeners, ctx = plan_listeners(Settings(hosts=[
        "unix:///run/a.sock", "tcp://127.0.0.1:2375", "tcp://[::1]:2375", "tcp://localhost"]))
    assert ctx is None
    assert [str(lst) for lst in listeners] == [
        "unix:///run/a.sock", "tcp://127.0.0.1:2375", "tcp://[::1]:2375",
        "tcp://localhost:2375"]


@pytest.mark.parametrize("host", ["tcp://0.0.0.0:2375", "tcp://[::]:2375", "10.1.2.3:2375",
                                  "tcp://docker.example"])
def test_non_loopback_plain_tcp_is_refused(host: str) -> None:
    with pytest.raises(ListenError) as info:
        plan_listeners(Settings(hosts=["unix:///run/a.sock", host]))
    message = str(info.value)
    assert "refusing to serve the Docker API without TLS" in message
    assert "--tlsverify" in message and "--insecure-tcp" in message


def test_insecure_tcp_is_allowed_with_a_loud_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="stowd.server"):
        listeners, ctx = plan_listeners(Settings(hosts=["tcp://0.0.0.0:2375"],
                                                 insecure_tcp=True))
    assert ctx is None and listeners == [Listener("tcp", host="0.0.0.0", port=2375)]
    assert any("INSECURE" in r.message and "root access" in r.message for r in caplog.records)


def test_loopback_tcp_warns_that_local_users_get_root(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="stowd.server"):
        plan_listeners(Settings(hosts=["tcp://127.0.0.1:2375"], insecure_tcp=True))
    messages = [r.message for r in caplog.records]
    assert not any("INSECURE" in m for m in messages)
    assert any("every local user" in m for m in messages)


def test_the_same_address_twice_is_refused() -> None:
    with pytest.raises(ListenError, match="given twice"):
        plan_listeners(Settings(hosts=["tcp://127.0.0.1:2375", "127.0.0.1:2375"]))


def test_tls_flags_without_tlsverify_are_refused(pki: Pki) -> None:
    # Serving plain HTTP while the operator believes TLS is on would be the worst outcome.
    with pytest.raises(ListenError, match="without --tlsverify"):
        plan_listeners(Settings(hosts=["tcp://127.0.0.1:2375"], tls_cert=pki.server_cert,
                                tls_key=pki.server_key))


def test_tlsverify_names_the_missing_flags(pki: Pki) -> None:
    with pytest.raises(ListenError) as info:
        plan_listeners(Settings(hosts=["tcp://0.0.0.0:2376"], tls_verify=True,
                                tls_cert=pki.server_cert))
    assert "--tlsverify needs --tlscacert, --tlskey" in str(info.value)


def test_tlsverify_with_a_missing_file(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(ListenError, match=r"--tlskey .*: no such file"):
        plan_listeners(Settings(hosts=["tcp://127.0.0.1:2376"], tls_verify=True,
                                tls_ca_cert=pki.ca, tls_cert=pki.server_cert,
                                tls_key=tmp_path / "nope.pem"))


def test_tlsverify_with_a_key_that_does_not_match(pki: Pki) -> None:
    with pytest.raises(ListenError, match="key matches the certificate"):
        plan_listeners(Settings(hosts=["tcp://127.0.0.1:2376"], tls_verify=True,
                                tls_ca_cert=pki.ca, tls_cert=pki.server_cert,
                                tls_key=pki.client_key))


def test_tlsverify_with_a_bad_ca(pki: Pki) -> None:
    with pytest.raises(ListenError, match=r"--tlscacert .*not a usable PEM CA"):
        plan_listeners(Settings(hosts=["tcp://127.0.0.1:2376"], tls_verify=True,
                                tls_ca_cert=pki.server_key, tls_cert=pki.server_cert,
                                tls_key=pki.server_key))


def test_mutual_tls_allows_any_address(pki: Pki) -> None:
    listeners, ctx = plan_listeners(Settings(
        hosts=["tcp://0.0.0.0", "unix:///run/a.sock"], tls_verify=True,
        tls_ca_cert=pki.ca, tls_cert=pki.server_cert, tls_key=pki.server_key))
    assert listeners[0] == Listener("tcp", host="0.0.0.0", port=2376)
    assert ctx is not None
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_tlsverify_without_tcp_warns(pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="stowd.server"):
        plan_listeners(Settings(hosts=["unix:///run/a.sock"], tls_verify=True,
                                tls_ca_cert=pki.ca, tls_cert=pki.server_cert,
                                tls_key=pki.server_key))
    assert any("--tlsverify has no effect" in r.message for r in caplog.records)


# --- binding --------------------------------------------------------------------------------


def test_loopback_names_must_resolve_to_loopback() -> None:
    from stowd.api.server import _tcp_sockets

    socks = _tcp_sockets(Listener("tcp", host="localhost", port=0), loopback_only=True)
    try:
        assert socks and all(is_loopback_ip(s.getsockname()[0]) for s in socks)
    finally:
        for s in socks:
            s.close()
    with pytest.raises(ListenError, match=r"resolves to 0\.0\.0\.0, which is not a loopback"):
        _tcp_sockets(Listener("tcp", host="0.0.0.0", port=0), loopback_only=True)
