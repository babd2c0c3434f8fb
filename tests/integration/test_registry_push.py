"""Push, login and the registry transports (htpasswd, Bearer tokens, TLS with certs.d)
against Debian's docker-registry started by the tests."""

import base64
import datetime
import gzip
import hashlib
import ipaddress
import json
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import bcrypt
import docker
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from tests.daemon import Daemon
from tests.integration.conftest import Cli
from tests.integration.test_registry_pull import multi_layers
from tests.registry import Registry, busybox_layer, files_layer, free_port
from tests.registry import remove_registry_images as _remove_all


@pytest.fixture(scope="module")
def registry() -> Iterator[Registry]:
    reg = Registry.start()
    yield reg
    reg.stop()


@pytest.fixture(autouse=True)
def _remove_pulled(client: docker.DockerClient) -> Iterator[None]:
    yield
    _remove_all(client)


def _push(api: docker.APIClient, repo: str, tag: str, **kw: Any) -> list[dict[str, Any]]:
    return list(api.push(repo, tag=tag, stream=True, decode=True, **kw))


def test_pull_run_push_back_remove_pull_again(cli: Cli, api: docker.APIClient,
                                              registry: Registry) -> None:
    pushed = registry.push_image("test/round", "v1", multi_layers())
    name = f"{registry.host}/test/round"
    cli("pull", f"{name}:v1")
    assert cli("run", "--rm", f"{name}:v1", "cat", "/etc/marker").stdout == "multi"
    # Pushed back as pulled: same blobs, same manifest digest, nothing uploaded.
    since = int(time.time())
    lines = _push(api, name, "v1")
    assert lines[0] == {"status": f"The push refers to repository [{name}]"}
    statuses = [x.get("status") for x in lines]
    assert statuses.count("Layer already exists") == 3
    assert "Pushed" not in statuses
    assert lines[-2] == {"status": f"v1: digest: {pushed.digest} size: {pushed.size}"}
    assert lines[-1] == {"progressDetail": {}, "aux": {"Tag": "v1", "Digest": pushed.digest,
                                                      "Size": pushed.size}}
    events = api.events(since=since, until=int(time.time()) + 1, decode=True,
                        filters={"type": "image", "event": "push"})
    assert any(e["Actor"]["ID"] == f"{name}:v1" for e in events)
    # Into a second repository of the registry: the blobs are mounted, not uploaded.
    api.tag(f"{name}:v1", f"{registry.host}/test/second", "v2")
    out = cli("push", f"{registry.host}/test/second:v2").stdout
    assert out.count("Mounted from test/round") == 3
    assert f"v2: digest: {pushed.digest} size: {pushed.size}" in out
    # Remove everything and pull the second repository again.
    cli("rmi", f"{name}:v1", f"{registry.host}/test/second:v2")
    out = cli("pull", f"{registry.host}/test/second:v2").stdout
    assert out.count("Pull complete") == 3
    assert cli("run", "--rm", f"{registry.host}/test/second:v2", "cat", "/etc/c").stdout \
        == "c" * 2_000_000


def test_push_uploads_what_the_registry_lacks(cli: Cli, api: docker.APIClient,
                                              client: docker.DockerClient,
                                              registry: Registry) -> None:
    # busybox:latest was imported, never pulled: its layer is gzipped and uploaded.
    name = f"{registry.host}/test/uploaded"
    client.images.get("busybox:latest").tag(name, "v1")
    lines = _push(api, name, "v1")
    statuses = [x.get("status") for x in lines]
    assert statuses[1] == "Preparing"
    assert "Pushing" in statuses and statuses.count("Pushed") == 1
    pushing = [x for x in lines if x.get("status") == "Pushing"]
    assert pushing[-1]["progressDetail"]["current"] == pushing[-1]["progressDetail"]["total"]
    assert str(pushing[-1]["progress"]).startswith("[")
    digest = lines[-1]["aux"]["Digest"]
    info = api.inspect_image(f"{name}:v1")
    assert f"{name}@{digest}" in info["RepoDigests"]
    # What was uploaded is the layer: its gzip holds the tar of the config's diff ID.
    manifest = registry.session.get(
        f"{registry.url}/v2/test/uploaded/manifests/v1",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"}).json()
    assert manifest["config"]["digest"] == info["Id"]
    blob = registry.session.get(
        f"{registry.url}/v2/test/uploaded/blobs/{manifest['layers'][0]['digest']}").content
    assert "sha256:" + hashlib.sha256(gzip.decompress(blob)).hexdigest() == \
        info["RootFS"]["Layers"][0]
    # Pushing again: the registry has it.
    again = cli("push", f"{name}:v1").stdout
    assert "Layer already exists" in again


FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"


@pytest.fixture
def url_registry() -> Iterator[Registry]:
    """A registry that takes manifests naming layers by URL (only its own, here)."""
    reg = Registry.start(extra={"validation": {"manifests": {"urls": {
        "allow": [r"^http://127\.0\.0\.1:[0-9]+/"]}}}})
    yield reg
    reg.stop()


def test_a_foreign_layer_is_pulled_but_never_pushed(api: docker.APIClient,
                                                    url_registry: Registry) -> None:
    registry = url_registry
    base, top = busybox_layer(marker="foreign"), files_layer({"top": b"t"})
    base_digest = registry.put_blob("test/foreign", base.blob())
    top_digest = registry.put_blob("test/foreign", top.blob())
    # The URL serves the blob (the same local registry): nothing leaves the host.
    urls = [f"{registry.url}/v2/test/foreign/blobs/{base_digest}"]
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
                         "rootfs": {"type": "layers",
                                    "diff_ids": [base.diff_id, top.diff_id]}}).encode()
    layers = [{"mediaType": FOREIGN, "size": len(base.blob()), "digest": base_digest,
               "urls": urls},
              {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
               "size": len(top.blob()), "digest": top_digest}]
    registry.put_manifest("test/foreign", "v1", {
        "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "size": len(config), "digest": registry.put_blob("test/foreign", config)},
        "layers": layers})
    list(api.pull(f"{registry.host}/test/foreign", tag="v1", stream=True, decode=True))
    copy = f"{registry.host}/test/foreign-copy"
    api.tag(f"{registry.host}/test/foreign:v1", copy, "v1")
    lines = _push(api, copy, "v1")
    assert not [x for x in lines if "error" in x], lines
    by_id = {x.get("id"): x.get("status") for x in lines if x.get("id")}
    assert by_id[base.diff_id[7:19]] == "Skipped foreign layer"  # dockerd's words
    assert by_id[top.diff_id[7:19]] == "Mounted from test/foreign"
    manifest = registry.session.get(
        f"{registry.url}/v2/test/foreign-copy/manifests/v1",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"}).json()
    assert manifest["layers"][0] == layers[0]  # named with its URLs, as pulled
    assert registry.request("HEAD", f"/v2/test/foreign-copy/blobs/{base_digest}"
                            ).status_code == 404  # neither uploaded nor mounted


def test_push_errors(cli: Cli, registry: Registry, daemon: Daemon) -> None:
    res = cli("push", f"{registry.host}/test/nothing:here", check=False)
    assert "An image does not exist locally with the tag: " \
           f"{registry.host}/test/nothing" in res.stderr
    cli("tag", "busybox:latest", f"127.0.0.1:{free_port()}/x:y")
    res = cli("push", f"127.0.0.1:{free_port()}/x:y", check=False)
    assert res.returncode != 0


# htpasswd ---------------------------------------------------------------------------------

USER, PASSWORD = "stowduser", "s3cret-" + secrets.token_hex(4)


@pytest.fixture(scope="module")
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    directory = tmp_path_factory.mktemp("htpasswd")
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=5)).decode()
    (directory / "htpasswd").write_text(f"{USER}:{hashed}\n")
    reg = Registry.start(auth={"htpasswd": {"realm": "basic-realm",
                                            "path": str(directory / "htpasswd")}})
    reg.session.auth = (USER, PASSWORD)
    reg.push_image("test/private", "v1", [busybox_layer(), files_layer({"p": b"private"})])
    yield reg
    reg.stop()


def test_htpasswd_login_pull_push(daemon: Daemon, cli: Cli, api: docker.APIClient,
                                  basic_registry: Registry, tmp_path: Path) -> None:
    host = basic_registry.host
    env_cli = Cli(daemon)
    env_cli.env["DOCKER_CONFIG"] = str(tmp_path)
    # Without credentials: a 401 (the CLI offers to log in, in a terminal), dockerd's words.
    with pytest.raises(docker.errors.APIError) as err:
        api.pull(f"{host}/test/private", tag="v1")
    assert err.value.status_code == 401
    assert f'Get "http://{host}/v2/test/private/manifests/v1": no basic auth credentials' \
        == err.value.explanation
    res = env_cli("login", "-u", USER, "--password-stdin", host, input="wrong\n", check=False)
    assert res.returncode != 0
    assert f"login attempt to http://{host}/v2/ failed with status: 401 Unauthorized" \
        in res.stderr
    res = env_cli("login", "-u", USER, "--password-stdin", host, input=PASSWORD + "\n")
    assert "Login Succeeded" in res.stdout
    answer = api.login(USER, PASSWORD, registry=host, reauth=True)
    assert answer == {"Status": "Login Succeeded", "IdentityToken": ""}
    env_cli("pull", f"{host}/test/private:v1")
    assert env_cli("run", "--rm", f"{host}/test/private:v1", "cat", "/p").stdout == "private"
    env_cli("tag", f"{host}/test/private:v1", f"{host}/test/pushed:v1")
    out = env_cli("push", f"{host}/test/pushed:v1").stdout
    assert "Mounted from test/private" in out
    # docker-py with auth_config.
    auth = {"username": USER, "password": PASSWORD}
    lines = _push(api, f"{host}/test/pushed", "v1", auth_config=auth)
    assert lines[-1]["aux"]["Tag"] == "v1"
    with pytest.raises(docker.errors.APIError) as err:
        api.pull(f"{host}/test/private", tag="v1",
                 auth_config={"username": USER, "password": "nope"})
    assert err.value.status_code == 401
    assert PASSWORD not in (daemon.log_path.read_text(errors="replace"))
    assert "nope" not in str(err.value.explanation)


# Bearer tokens ----------------------------------------------------------------------------

def _self_signed(cn: str) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """A token server in the test: Basic credentials in, a JWT signed with the test's key
    (its certificate in the registry's rootcertbundle, sent as x5c) out."""

    def __init__(self, key: rsa.RSAPrivateKey, cert: x509.Certificate) -> None:
        self.key = key
        self.cert = cert
        self.requests: list[dict[str, Any]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                from urllib.parse import parse_qs, urlsplit
                query = parse_qs(urlsplit(self.path).query)
                header = self.headers.get("Authorization", "")
                server.requests.append({"scope": query.get("scope", []), "auth": header})
                expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
                if header != expected:
                    body = json.dumps({"errors": [{"code": "UNAUTHORIZED",
                                                   "message": "wrong user or password"}]})
                    self.send_response(401)
                else:
                    body = json.dumps({"token": server.token(query.get("scope", [])),
                                       "expires_in": 300})
                    self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def token(self, scopes: list[str]) -> str:
        access = []
        for scope in " ".join(scopes).split():
            kind, name, actions = scope.split(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256",
                  "x5c": [base64.b64encode(self.cert.public_bytes(
                      serialization.Encoding.DER)).decode()]}
        claims = {"iss": "stowd-test", "sub": USER, "aud": "stowd-registry", "exp": now + 300,
                  "nbf": now - 10, "iat": now, "jti": secrets.token_hex(8), "access": access}
        signing = (_b64url(json.dumps(header).encode()) + "." +
                   _b64url(json.dumps(claims).encode()))
        sig = self.key.sign(signing.encode(), padding.PKCS1v15(), hashes.SHA256())
        return signing + "." + _b64url(sig)

    def stop(self) -> None:
        self.httpd.shutdown()


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[tuple[Registry, TokenServer]]:
    directory = tmp_path_factory.mktemp("token")
    key, cert = _self_signed("stowd test token signer")
    (directory / "bundle.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    tokens = TokenServer(key, cert)
    reg = Registry.start(auth={"token": {
        "realm": f"http://127.0.0.1:{tokens.port}/token", "service": "stowd-registry",
        "issuer": "stowd-test", "rootcertbundle": str(directory / "bundle.pem")}})
    yield reg, tokens
    reg.stop()
    tokens.stop()


def _auth_session(reg: Registry, tokens: TokenServer, scope: str) -> None:
    reg.session.headers["Authorization"] = "Bearer " + tokens.token([scope])


def test_bearer_token_registry(daemon: Daemon, api: docker.APIClient, cli: Cli,
                               token_registry: tuple[Registry, TokenServer]) -> None:
    reg, tokens = token_registry
    _auth_session(reg, tokens, "repository:test/tok:pull,push")
    reg.push_image("test/tok", "v1", [busybox_layer(), files_layer({"t": b"token"})])
    auth = {"username": USER, "password": PASSWORD}
    with pytest.raises(docker.errors.APIError) as err:
        api.pull(f"{reg.host}/test/tok", tag="v1")
    assert err.value.status_code == 401
    before = len(tokens.requests)
    api.pull(f"{reg.host}/test/tok", tag="v1", auth_config=auth)
    assert cli("run", "--rm", f"{reg.host}/test/tok:v1", "cat", "/t").stdout == "token"
    asked = tokens.requests[before:]
    assert asked[0]["scope"] == ["repository:test/tok:pull"]
    assert all(r["auth"].startswith("Basic ") for r in asked)
    # A second pull within the token's lifetime asks the token server nothing.
    n = len(tokens.requests)
    api.pull(f"{reg.host}/test/tok", tag="v1", auth_config=auth)
    assert len(tokens.requests) == n
    # Push asks for pull,push on the target (and pull where blobs can be mounted from).
    api.tag(f"{reg.host}/test/tok:v1", f"{reg.host}/test/tok2", "v1")
    lines = _push(api, f"{reg.host}/test/tok2", "v1", auth_config=auth)
    assert lines[-1]["aux"]["Tag"] == "v1", lines
    assert ["repository:test/tok2:pull,push", "repository:test/tok:pull"] in \
        [r["scope"] for r in tokens.requests[n:]]
    assert any(x.get("status") == "Mounted from test/tok" for x in lines)
    # Login through the token server, and a refused one.
    assert api.login(USER, PASSWORD, registry=reg.host, reauth=True)["Status"] == \
        "Login Succeeded"
    with pytest.raises(docker.errors.APIError) as err:
        api.login(USER, "bad", registry=reg.host, reauth=True)
    assert err.value.status_code == 401
    assert "wrong user or password" in str(err.value.explanation)


# TLS with certs.d ---------------------------------------------------------------------------

def _host_address() -> str:
    """An address of this host outside 127.0.0.0/8 (so the registry is not insecure)."""
    out = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True,
                         check=True).stdout
    for line in out.splitlines():
        addr = line.split()[3].split("/")[0]
        if not ipaddress.ip_address(addr).is_loopback:
            return addr
    pytest.skip("no non-loopback IPv4 address")


def _issue(ca_key: rsa.RSAPrivateKey, ca: x509.Certificate, cn: str, ip: str | None
           ) -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
               .issuer_name(ca.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(hours=1))
               .not_valid_after(now + datetime.timedelta(days=1)))
    if ip:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address(ip))]), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM,
                              serialization.PrivateFormat.TraditionalOpenSSL,
                              serialization.NoEncryption()))


def test_tls_registry_with_a_ca_and_client_certificate_from_certs_d(tmp_path: Path) -> None:
    ip = _host_address()
    ca_key, ca = _self_signed("stowd test CA")
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    server_cert, server_key = _issue(ca_key, ca, "registry", ip)
    client_cert, client_key = _issue(ca_key, ca, "client", None)
    (tmp_path / "server.crt").write_bytes(server_cert)
    (tmp_path / "server.key").write_bytes(server_key)
    (tmp_path / "ca.pem").write_bytes(ca_pem)
    port = free_port()
    reg = Registry.start(tls=(tmp_path / "server.crt", tmp_path / "server.key"), port=port,
                         host_ip=ip, client_ca=tmp_path / "ca.pem")
    certs = tmp_path / "certs.d"
    host_dir = certs / f"{ip}:{port}"
    host_dir.mkdir(parents=True)
    d = Daemon(extra_args=["--registry-certs-dir", str(certs)]).start()
    try:
        reg.verify = str(tmp_path / "ca.pem")
        (tmp_path / "client.cert").write_bytes(client_cert)
        (tmp_path / "client.key").write_bytes(client_key)
        reg.session.cert = (str(tmp_path / "client.cert"), str(tmp_path / "client.key"))
        reg.push_image("test/tls", "v1", [busybox_layer(), files_layer({"s": b"secure"})])
        api = docker.APIClient(base_url=d.url)
        name = f"{ip}:{port}/test/tls"
        # Not trusted yet: said as such, and no plain HTTP fallback for a secure registry.
        with pytest.raises(docker.errors.APIError) as err:
            api.pull(name, tag="v1")
        assert "tls: failed to verify certificate" in str(err.value.explanation)
        assert f"https://{ip}:{port}/v2/" in str(err.value.explanation)
        # The CA alone is not enough: this registry wants a client certificate.
        (host_dir / "ca.crt").write_bytes(ca_pem)
        with pytest.raises(docker.errors.APIError):
            api.pull(name, tag="v1")
        (host_dir / "client.cert").write_bytes(client_cert)
        (host_dir / "client.key").write_bytes(client_key)
        lines = list(api.pull(name, tag="v1", stream=True, decode=True))
        assert lines[-1]["status"] == f"Status: Downloaded newer image for {name}:v1"
        api.tag(f"{name}:v1", f"{ip}:{port}/test/tls2", "v1")
        pushed = list(api.push(f"{ip}:{port}/test/tls2", tag="v1", stream=True, decode=True))
        assert pushed[-1]["aux"]["Tag"] == "v1", pushed
        api.close()
    finally:
        d.cleanup()
        reg.stop()
    assert not d.blocking_calls, d.blocking_calls
