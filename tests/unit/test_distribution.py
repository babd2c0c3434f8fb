"""The registry client's pure parts, and its HTTP behaviour against a small aiohttp server."""

import asyncio
import base64
import hashlib
import json
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from stowd.engine.distribution import manifest as mf
from stowd.engine.distribution.auth import (
    Credentials,
    TokenCache,
    decode_registry_auth,
    parse_challenges,
)
from stowd.engine.distribution.client import RegistryClient
from stowd.engine.distribution.transport import Endpoint, RegistrySettings
from stowd.engine.errors import InvalidParameter, NotFound, Unauthorized


def _auth_header(doc: object, urlsafe: bool = True, padded: bool = True) -> str:
    raw = json.dumps(doc).encode()
    text = (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(raw).decode()
    return text if padded else text.rstrip("=")


@pytest.mark.parametrize("urlsafe", [True, False])
@pytest.mark.parametrize("padded", [True, False])
def test_registry_auth_is_decoded_leniently(urlsafe: bool, padded: bool) -> None:
    # '?>' in the password gives '/' or '_' and '+' or '-' in base64.
    doc = {"username": "u", "password": "p?>?>~", "serveraddress": "r:5000"}
    creds = decode_registry_auth(_auth_header(doc, urlsafe, padded))
    assert (creds.username, creds.password, creds.server_address) == ("u", "p?>?>~", "r:5000")


@pytest.mark.parametrize("header", ["", "e30=", "e30", "not base64!", "bnVsbA==", "W10="])
def test_unusable_registry_auth_is_no_credentials(header: str) -> None:
    assert decode_registry_auth(header).empty


def test_the_auth_field_carries_user_and_password() -> None:
    creds = decode_registry_auth(_auth_header({"auth": base64.b64encode(b"me:se:cret")
                                               .decode()}))
    assert (creds.username, creds.password) == ("me", "se:cret")


def test_credentials_never_show_in_their_repr() -> None:
    creds = Credentials("me", "hunter2", "idtoken", "regtoken")
    assert "hunter2" not in repr(creds) and "idtoken" not in repr(creds)


def test_challenges() -> None:
    [c] = parse_challenges('Bearer realm="https://auth.example/token",service="reg",'
                           'scope="repository:a/b:pull,push"')
    assert c.scheme == "bearer"
    assert c.params == {"realm": "https://auth.example/token", "service": "reg",
                        "scope": "repository:a/b:pull,push"}
    both = parse_challenges('Basic realm="x", Bearer realm="https://t/", service=s')
    assert [c.scheme for c in both] == ["basic", "bearer"]
    assert both[1].params == {"realm": "https://t/", "service": "s"}


def test_tokens_are_cached_per_scope_until_they_expire() -> None:
    cache = TokenCache()
    key = ("realm", "svc", "repository:a:pull", "me")
    cache.put(key, {"token": "t1", "expires_in": 60}, now=100)
    assert cache.get(key, now=150) == "t1"
    assert cache.get(("realm", "svc", "repository:a:pull,push", "me"), now=150) is None
    assert cache.get(key, now=156) is None  # renewed a little before it expires
    cache.put(key, {"access_token": "t2"}, now=200)  # no expires_in: 60 s
    assert cache.get(key, now=250) == "t2"
    with pytest.raises(ValueError):
        cache.put(key, {"expires_in": 5})


# manifests ----------------------------------------------------------------------------------

def _desc(media: str, n: int, **extra: object) -> dict[str, object]:
    return {"mediaType": media, "digest": "sha256:" + f"{n:x}" * 64, "size": 10, **extra}


def _manifest(media: str = mf.MEDIA_DOCKER_MANIFEST,
              layer: str = "application/vnd.docker.image.rootfs.diff.tar.gzip") -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": media,
                       "config": _desc(mf.DOCKER_CONFIG, 1),
                       "layers": [_desc(layer, 2)]}).encode()


def test_schema1_is_refused_with_dockerds_words() -> None:
    body = json.dumps({"schemaVersion": 1, "name": "x", "fsLayers": []}).encode()
    with pytest.raises(InvalidParameter) as err:
        mf.parse(body, mf.MEDIA_SCHEMA1_SIGNED, "docker.io/library/old:1")
    assert err.value.message.startswith(
        "Docker Image Format v1 and Docker Image manifest version 2, schema 1 support has "
        "been removed. Suggest the author of docker.io/library/old:1 to upgrade")


@pytest.mark.parametrize(("media", "compression"), [
    ("application/vnd.docker.image.rootfs.diff.tar.gzip", "gzip"),
    ("application/vnd.oci.image.layer.v1.tar+gzip", "gzip"),
    ("application/vnd.oci.image.layer.v1.tar+zstd", "zstd"),
    ("application/vnd.oci.image.layer.v1.tar", "none"),
])
def test_layer_compression_comes_from_the_media_type(media: str, compression: str) -> None:
    doc = mf.parse(_manifest(mf.MEDIA_OCI_MANIFEST, media), "", "r")
    assert isinstance(doc, mf.ImageManifest)
    assert mf.LAYER_COMPRESSION[doc.layers[0].media_type] == compression


def test_unknown_layer_media_types_and_artifacts_are_refused() -> None:
    with pytest.raises(InvalidParameter, match="unsupported layer media type"):
        mf.parse(_manifest(layer="application/x-whatever"), "", "r")
    art = json.dumps({"schemaVersion": 2, "mediaType": mf.MEDIA_OCI_MANIFEST,
                      "config": _desc("application/vnd.cncf.helm.config.v1+json", 1),
                      "layers": []}).encode()
    with pytest.raises(InvalidParameter, match="not a container image"):
        mf.parse(art, "", "r")


def _index() -> mf.Index:
    body = json.dumps({"schemaVersion": 2, "mediaType": mf.MEDIA_OCI_INDEX, "manifests": [
        _desc(mf.MEDIA_OCI_MANIFEST, 3, platform={"os": "linux", "architecture": "arm",
                                                  "variant": "v7"}),
        _desc(mf.MEDIA_OCI_MANIFEST, 4, platform={"os": "linux", "architecture": "arm64",
                                                  "variant": "v8"}),
        _desc(mf.MEDIA_OCI_MANIFEST, 5, platform={"os": "unknown", "architecture": "unknown"},
              annotations={"vnd.docker.reference.type": "attestation-manifest"}),
        _desc(mf.MEDIA_OCI_MANIFEST, 6, platform={"os": "linux", "architecture": "amd64"}),
    ]}).encode()
    doc = mf.parse(body, "", "r")
    assert isinstance(doc, mf.Index)
    return doc


def test_platform_choice() -> None:
    index = _index()
    host = mf.Platform("linux", "amd64")
    assert mf.choose(index, host).digest == "sha256:" + "6" * 64
    assert mf.choose(index, mf.parse_platform("linux/arm64", host)).digest == \
        "sha256:" + "4" * 64
    assert mf.choose(index, mf.parse_platform("linux/aarch64/v8", host)).digest == \
        "sha256:" + "4" * 64
    assert mf.choose(index, mf.parse_platform("linux/arm/v7", host)).digest == \
        "sha256:" + "3" * 64
    with pytest.raises(NotFound) as err:
        mf.choose(index, mf.parse_platform("linux/s390x", host))
    assert err.value.message == ("no matching manifest for linux/s390x in the manifest list "
                                 "entries (available: linux/arm/v7, linux/arm64, linux/amd64)")
    with pytest.raises(InvalidParameter):
        mf.parse_platform("linux//", host)


# transport ----------------------------------------------------------------------------------

def test_insecure_registries(tmp_path: Path) -> None:
    s = RegistrySettings(["10.1.0.0/16", "myreg:5000", "other.example"], [], tmp_path)
    assert s.is_insecure("127.0.0.1:5000")
    assert s.is_insecure("[::1]:5000")
    assert s.is_insecure("10.1.2.3")
    assert s.is_insecure("myreg:5000")
    assert not s.is_insecure("myreg:5001")
    assert s.is_insecure("other.example:443")
    assert not s.is_insecure("10.2.0.1:5000")
    assert [e.url for e in s.endpoints("127.0.0.1:5000")] == ["https://127.0.0.1:5000",
                                                            "http://127.0.0.1:5000"]
    assert [e.url for e in s.endpoints("10.2.0.1:5000")] == ["https://10.2.0.1:5000"]


def test_docker_hub_and_its_mirrors(tmp_path: Path) -> None:
    s = RegistrySettings([], ["https://mirror.example", "http://127.0.0.1:5999/"], tmp_path)
    assert [e.url for e in s.endpoints("docker.io")] == [
        "https://mirror.example", "http://127.0.0.1:5999", "https://registry-1.docker.io"]
    assert [e.url for e in s.endpoints("docker.io", pull=False)] == [
        "https://registry-1.docker.io"]
    with pytest.raises(InvalidParameter):
        RegistrySettings([], ["mirror.example"], tmp_path)


def test_certs_dir_key_without_certificate_is_refused(tmp_path: Path) -> None:
    (tmp_path / "reg:5000").mkdir()
    (tmp_path / "reg:5000" / "client.key").write_text("x")
    with pytest.raises(InvalidParameter, match="missing client certificate"):
        RegistrySettings([], [], tmp_path).tls_context("reg:5000", True)


# the client against a small server ---------------------------------------------------------

BLOB = bytes(range(256)) * 4096  # 1 MiB
BLOB_DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()


async def _with_server(app: web.Application, test: object) -> None:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as session:
            await test(session, Endpoint(f"http://127.0.0.1:{port}", False))  # type: ignore
    finally:
        await runner.cleanup()


def _client(session: aiohttp.ClientSession, creds: Credentials | None = None
            ) -> RegistryClient:
    return RegistryClient(session, RegistrySettings(), TokenCache(), creds or Credentials(),
                          "127.0.0.1", "a/b", ["repository:a/b:pull"])


def test_a_broken_download_resumes_with_a_range_request() -> None:
    ranges: list[str | None] = []

    async def blob(request: web.Request) -> web.StreamResponse:
        ranges.append(request.headers.get("Range"))
        start = int(request.headers["Range"][6:-1]) if "Range" in request.headers else 0
        resp = web.StreamResponse(status=206 if start else 200)
        resp.content_length = len(BLOB) - start
        await resp.prepare(request)
        if len(ranges) < 3:
            await resp.write(BLOB[start:start + 300_000])
            assert request.transport is not None
            request.transport.close()  # cut in the middle
            return resp
        await resp.write(BLOB[start:])
        return resp

    app = web.Application()
    async def ping(request: web.Request) -> web.Response:
        return web.json_response({})

    app.router.add_get("/v2/", ping)
    app.router.add_get("/v2/a/b/blobs/{digest}", blob)

    async def test(session: aiohttp.ClientSession, ep: Endpoint) -> None:
        client = _client(session)
        await client.connect_to([ep])
        got = b"".join([c async for c in client.blob_chunks(BLOB_DIGEST)])
        assert got == BLOB

    asyncio.run(_with_server(app, test))
    assert ranges == [None, "bytes=300000-", "bytes=600000-"]


def test_bearer_tokens_and_no_authorization_to_another_host() -> None:
    seen: list[tuple[str, str | None]] = []

    async def ping(request: web.Request) -> web.Response:
        realm = f"http://{request.host}/token"
        return web.Response(status=401, headers={
            "WWW-Authenticate": f'Bearer realm="{realm}",service="svc"'})

    async def token(request: web.Request) -> web.Response:
        seen.append(("token " + request.query.get("scope", ""),
                     request.headers.get("Authorization")))
        if request.headers.get("Authorization") != "Basic " + base64.b64encode(
                b"me:right").decode():
            return web.json_response({"errors": [{"code": "UNAUTHORIZED",
                                                  "message": "bad credentials"}]}, status=401)
        return web.json_response({"token": "tok", "expires_in": 300})

    async def manifest(request: web.Request) -> web.Response:
        seen.append(("manifest", request.headers.get("Authorization")))
        if request.headers.get("Authorization") != "Bearer tok":
            return web.Response(status=401, headers={
                "WWW-Authenticate": f'Bearer realm="http://{request.host}/token",service="svc"'})
        # Redirected to "another host" (localhost instead of 127.0.0.1).
        port = request.url.port
        raise web.HTTPTemporaryRedirect(f"http://localhost:{port}/elsewhere")

    async def elsewhere(request: web.Request) -> web.Response:
        seen.append(("elsewhere", request.headers.get("Authorization")))
        return web.Response(body=b"{}", content_type=mf.MEDIA_DOCKER_MANIFEST)

    app = web.Application()
    app.router.add_get("/v2/", ping)
    app.router.add_get("/token", token)
    app.router.add_get("/v2/a/b/manifests/{ref}", manifest)
    app.router.add_get("/elsewhere", elsewhere)

    async def test(session: aiohttp.ClientSession, ep: Endpoint) -> None:
        client = _client(session, Credentials("me", "right"))
        await client.connect_to([ep])
        body, _, _ = await client.get_manifest("v1", mf.ACCEPT, "nf")
        assert body == b"{}"
        # The token is cached: a second request asks the token server nothing.
        await client.get_manifest("v1", mf.ACCEPT, "nf")
        wrong = _client(session, Credentials("me", "wrong"))
        await wrong.connect_to([ep])
        with pytest.raises(Unauthorized) as err:
            await wrong.get_manifest("v1", mf.ACCEPT, "nf")
        assert "bad credentials" in err.value.message
        assert "wrong" not in err.value.message

    asyncio.run(_with_server(app, test))
    tokens = [s for s in seen if s[0].startswith("token")]
    assert tokens[0][0] == "token repository:a/b:pull"
    assert len(tokens) == 2  # one for each client; the first one's token was reused
    assert ("elsewhere", None) in seen
    assert ("manifest", "Bearer tok") in seen


def test_a_manifest_arriving_in_pieces_is_read_whole() -> None:
    body = json.dumps({"schemaVersion": 2, "mediaType": mf.MEDIA_DOCKER_MANIFEST,
                       "config": _desc(mf.DOCKER_CONFIG, 1),
                       "layers": [_desc("application/vnd.docker.image.rootfs.diff.tar.gzip",
                                        i % 15 + 1) for i in range(40)]}, indent=3).encode()

    async def ping(request: web.Request) -> web.Response:
        return web.json_response({})

    async def manifest(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": mf.MEDIA_DOCKER_MANIFEST})
        resp.content_length = len(body)
        await resp.prepare(request)
        for i in range(0, len(body), 1000):
            await resp.write(body[i:i + 1000])
            await asyncio.sleep(0.01)
        return resp

    app = web.Application()
    app.router.add_get("/v2/", ping)
    app.router.add_get("/v2/a/b/manifests/{ref}", manifest)

    async def test(session: aiohttp.ClientSession, ep: Endpoint) -> None:
        client = _client(session)
        await client.connect_to([ep])
        got, _, _ = await client.get_manifest("v1", mf.ACCEPT, "nf")
        assert got == body

    asyncio.run(_with_server(app, test))
