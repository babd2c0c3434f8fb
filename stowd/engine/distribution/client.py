"""The registry's HTTP API (distribution spec v2) over aiohttp's client.

One `RegistryClient` per operation on one repository: it pings `/v2/` on each endpoint in
turn (HTTPS, then HTTP for insecure registries), answers the registry's challenge (Basic, or
a Bearer token from the realm, cached per scope until it expires), follows redirects without
carrying the Authorization header to another host, and turns the registry's errors into the
engine's typed errors with the registry's own words.
"""

import asyncio
import json
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

import aiohttp

from stowd.engine.distribution.auth import (
    Challenge,
    Credentials,
    TokenCache,
    basic_header,
    parse_challenges,
)
from stowd.engine.distribution.transport import Endpoint, RegistrySettings
from stowd.engine.errors import (
    EngineError,
    Forbidden,
    InvalidParameter,
    NotFound,
    Unauthorized,
    Unavailable,
)
from stowd.engine.images.layers import CHUNK  # the extraction's read size

log = logging.getLogger("stowd.distribution")

MAX_ERROR_BODY = 64 << 10
MAX_REDIRECTS = 10
# dockerd retries a layer download 5 times; each retry resumes where the last one stopped.
DOWNLOAD_ATTEMPTS = 5
RETRY_DELAY = 0.5


class DigestMismatch(InvalidParameter):
    pass


def _unreachable(method: str, url: str, exc: BaseException) -> str:
    """What went wrong reaching url, in words a user can act on (as Go's net errors say)."""
    parts = urlsplit(url)
    where = parts.netloc
    reason: str
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        reason = f"tls: failed to verify certificate: {exc.certificate_error}"
    elif isinstance(exc, aiohttp.ClientConnectorSSLError | aiohttp.ClientSSLError
                    | ssl.SSLError):
        reason = f"tls: handshake failure: {exc}"
    elif isinstance(exc, aiohttp.ClientConnectorDNSError):
        reason = f"dial tcp: lookup {parts.hostname}: no such host"
    elif isinstance(exc, aiohttp.ClientConnectorError):
        os_error = exc.os_error
        if isinstance(os_error, ConnectionRefusedError):
            reason = f"dial tcp {where}: connect: connection refused"
        else:
            reason = f"dial tcp {where}: {os_error.strerror or os_error}"
    elif isinstance(exc, TimeoutError):
        reason = "i/o timeout"
    else:
        reason = str(exc) or type(exc).__name__
    return f'{method.capitalize()} "{url}": {reason}'


async def read_body(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The whole body, or its first `limit` bytes (a bigger body is the caller's error):
    `content.read(n)` alone returns whatever has arrived so far."""
    parts: list[bytes] = []
    got = 0
    while got < limit and (chunk := await resp.content.read(limit - got)):
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


async def registry_error_text(resp: aiohttp.ClientResponse) -> str:
    """The registry's words (`manifest unknown: manifest unknown`), as Docker prints them."""
    try:
        body = await read_body(resp, MAX_ERROR_BODY)
    except aiohttp.ClientError:
        body = b""
    try:
        doc = json.loads(body)
        errors = doc.get("errors") if isinstance(doc, dict) else None
        if isinstance(errors, list) and errors:
            texts = []
            for e in errors:
                code = str(e.get("code") or "unknown").lower().replace("_", " ")
                message = e.get("message") or code
                texts.append(f"{code}: {message}")
            return ", ".join(texts)
        if isinstance(doc, dict) and doc.get("details"):
            return str(doc["details"])
    except (ValueError, AttributeError):
        pass
    text = body.decode(errors="replace").strip()
    if resp.status == 401:
        return "unauthorized: authentication required"
    return text[:200] or f"{resp.status} {resp.reason}"


class RegistryClient:
    def __init__(self, session: aiohttp.ClientSession, settings: RegistrySettings,
                 tokens: TokenCache, creds: Credentials, domain: str, path: str,
                 scopes: list[str]) -> None:
        self.session = session
        self.settings = settings
        self.tokens = tokens
        self.creds = creds
        self.domain = domain
        self.path = path
        self.scopes = scopes
        self.endpoint: Endpoint | None = None
        self._challenge: Challenge | None = None
        self._authorization: str | None = None

    # connecting -------------------------------------------------------------------------

    async def connect(self, pull: bool = True) -> None:
        """Find the first endpoint that answers `GET /v2/`; learn its challenge."""
        endpoints = await asyncio.to_thread(self.settings.endpoints, self.domain, pull)
        await self.connect_to(endpoints)

    async def connect_to(self, endpoints: list[Endpoint]) -> None:
        last = ""
        for ep in endpoints:
            url = ep.url + "/v2/"
            try:
                async with self.session.get(url, ssl=ep.ssl, allow_redirects=False) as resp:
                    await resp.read()
                    if resp.status == 401:
                        self._challenge = self._pick(resp.headers.get("WWW-Authenticate", ""))
                    elif resp.status >= 500:
                        last = f'Get "{url}": {resp.status} {resp.reason}'
                        continue
                    self.endpoint = ep
                    return
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                last = _unreachable("GET", url, exc)
                log.debug("registry endpoint %s: %s", ep.url, last)
        raise Unavailable(last or f"no endpoint for {self.domain}")

    @staticmethod
    def _pick(header: str) -> Challenge | None:
        challenges = parse_challenges(header)
        for scheme in ("bearer", "basic"):
            for c in challenges:
                if c.scheme == scheme:
                    return c
        return None

    # authorising --------------------------------------------------------------------------

    async def _authorize(self) -> None:
        """Set the Authorization header the registry's challenge asks for."""
        c = self._challenge
        if c is None:
            self._authorization = None
            return
        if c.scheme == "basic":
            self._authorization = None if self.creds.empty else basic_header(self.creds)
            return
        if self.creds.registry_token:
            self._authorization = "Bearer " + self.creds.registry_token
            return
        realm = c.params.get("realm", "")
        service = c.params.get("service", "")
        scope = " ".join(self.scopes)
        key = (realm, service, scope, self.creds.fingerprint)
        token = self.tokens.get(key)
        if token is None:
            token = self.tokens.put(key, await self._fetch_token(realm, service))
        self._authorization = "Bearer " + token

    async def _fetch_token(self, realm: str, service: str) -> dict[str, Any]:
        if not realm.startswith(("http://", "https://")):
            raise Unauthorized(f"the registry's token realm {realm!r} is not a URL")
        params: list[tuple[str, str]] = []
        if service:
            params.append(("service", service))
        params += [("scope", s) for s in self.scopes]
        headers = {}
        ssl_ctx = await asyncio.to_thread(self._realm_ssl, realm)
        if self.creds.identity_token:
            form = {"grant_type": "refresh_token", "refresh_token": self.creds.identity_token,
                    "client_id": "docker", "service": service, "scope": " ".join(self.scopes)}
            request = self.session.post(realm, data=form, ssl=ssl_ctx)
        else:
            if self.creds.username:
                headers["Authorization"] = basic_header(self.creds)
                params.append(("account", self.creds.username))
            url = realm + ("&" if "?" in realm else "?") + urlencode(params)
            request = self.session.get(url, headers=headers, ssl=ssl_ctx)
        try:
            async with request as resp:
                if resp.status in (401, 403):
                    raise Unauthorized(await registry_error_text(resp))
                if resp.status != 200:
                    raise Unavailable(f"getting a token from {realm}: "
                                      f"{await registry_error_text(resp)}")
                body = await read_body(resp, MAX_ERROR_BODY)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise Unavailable(_unreachable("GET", realm, exc)) from exc
        try:
            answer = json.loads(body)
        except ValueError as exc:
            raise Unavailable(f"the token server at {realm} answered no JSON") from exc
        if not isinstance(answer, dict):
            raise Unavailable(f"the token server at {realm} answered no JSON object")
        if not (answer.get("token") or answer.get("access_token")):
            raise Unavailable(f"the token server at {realm} answered without a token")
        return answer

    def _realm_ssl(self, realm: str) -> ssl.SSLContext | bool:
        parts = urlsplit(realm)
        if parts.scheme == "http":
            return False
        return self.settings.tls_context(parts.netloc,
                                         verify=not self.settings.is_insecure(parts.netloc))

    async def login(self) -> None:
        """Check the credentials against the registry (`docker login`); Unauthorized if it
        refuses them. A registry that asks for nothing accepts any."""
        assert self.endpoint is not None, "connect() first"
        url = self.endpoint.url + "/v2/"
        if self._challenge is None:
            return
        if self._challenge.scheme == "bearer":
            await self._authorize()  # the token server checks the credentials
        elif self.creds.empty:
            raise Unauthorized(f"login attempt to {url} failed: no credentials given")
        else:
            await self._authorize()
        async with await self.request("GET", url, retry_auth=False) as r:
            if r.status == 200:
                return
            raise Unauthorized(f"login attempt to {url} failed with status: {r.status} "
                               f"{r.reason}")

    # requests ---------------------------------------------------------------------------

    def url(self, rest: str) -> str:
        assert self.endpoint is not None, "connect() first"
        return f"{self.endpoint.url}/v2/{self.path}/{rest}"

    async def request(self, method: str, url: str, *, headers: dict[str, str] | None = None,
                      data: Any = None, retry_auth: bool = True) -> aiohttp.ClientResponse:
        """Send one request, answering a 401 challenge once; redirects followed by hand.

        The caller releases the response (`async with`)."""
        assert self.endpoint is not None, "connect() first"
        if self._challenge is not None and self._authorization is None:
            await self._authorize()
        for _ in range(MAX_REDIRECTS):
            hdrs = dict(headers or {})
            same_host = urlsplit(url).netloc == self.endpoint.host
            if self._authorization and same_host:
                hdrs["Authorization"] = self._authorization
            # Redirects to another host (blob storage) verify against the system's CAs.
            ssl_arg = self.endpoint.ssl if same_host else url.startswith("https")
            try:
                resp = await self.session.request(method, url, headers=hdrs, data=data,
                                                  ssl=ssl_arg, allow_redirects=False)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                raise Unavailable(_unreachable(method, url, exc)) from exc
            if resp.status == 401 and retry_auth and same_host:
                challenge = self._pick(resp.headers.get("WWW-Authenticate", ""))
                if challenge is not None and (data is None or isinstance(data, bytes)):
                    resp.release()
                    self._challenge = challenge
                    self._authorization = None
                    await self._authorize()
                    retry_auth = False
                    continue
            if resp.status in (301, 302, 303, 307, 308) and "Location" in resp.headers:
                resp.release()
                url = urljoin(url, resp.headers["Location"])
                if resp.status == 303:
                    method, data = "GET", None
                continue
            return resp
        raise Unavailable(f"too many redirects for {url}")

    async def check(self, resp: aiohttp.ClientResponse, what: str,
                    not_found: str | None = None) -> None:
        """Raise the typed error for an unsuccessful answer (and release it)."""
        if resp.status < 400:
            return
        text = await registry_error_text(resp)
        resp.release()
        if resp.status == 401 and self.creds.empty and self._challenge is not None \
                and self._challenge.scheme == "basic":
            text = "no basic auth credentials"  # dockerd's words
        raise self.error(resp.status, text, what, not_found)

    def error(self, status: int, text: str, what: str, not_found: str | None) -> EngineError:
        if status == 404:
            return NotFound(f"{not_found}: {text}" if not_found else text)
        if status == 401:
            return Unauthorized(f"{what}: {text}")
        if status == 403:
            return Forbidden(f"{what}: {text}")
        if status == 400 or status == 405 or status == 413:
            return InvalidParameter(f"{what}: {text}")
        return Unavailable(f"{what}: {text}")

    # reading ----------------------------------------------------------------------------

    async def get_manifest(self, ref: str, accept: list[str], not_found: str
                           ) -> tuple[bytes, str, str | None]:
        """(body, content type, Docker-Content-Digest header) of a manifest."""
        from stowd.engine.distribution.manifest import MAX_MANIFEST
        url = self.url(f"manifests/{ref}")
        async with await self.request("GET", url, headers={"Accept": ", ".join(accept)}) as r:
            await self.check(r, f'Get "{url}"', not_found)
            if r.content_length is not None and r.content_length > MAX_MANIFEST:
                raise InvalidParameter(f"manifest for {ref} is too large")
            body = await read_body(r, MAX_MANIFEST + 1)
            if len(body) > MAX_MANIFEST:
                raise InvalidParameter(f"manifest for {ref} is too large")
            return body, r.headers.get("Content-Type", ""), \
                r.headers.get("Docker-Content-Digest")

    async def get_small_blob(self, digest: str, limit: int) -> bytes:
        url = self.url(f"blobs/{digest}")
        async with await self.request("GET", url) as r:
            await self.check(r, f'Get "{url}"', f"blob {digest} not found")
            body = await read_body(r, limit + 1)
        if len(body) > limit:
            raise InvalidParameter(f"blob {digest} is larger than expected")
        return body

    async def blob_chunks(self, digest: str, urls: list[str] | None = None
                          ) -> AsyncIterator[bytes]:
        """A blob's bytes; a broken download resumes with a Range request, as dockerd."""
        url = self.url(f"blobs/{digest}")
        sources = [*(urls or []), url]
        offset = 0
        attempt = 0
        while True:
            headers = {"Range": f"bytes={offset}-"} if offset else {}
            source = sources[0]
            try:
                if source == url:
                    resp = await self.request("GET", source, headers=headers)
                else:
                    resp = await self.session.get(source, headers=headers)
            except Unavailable:
                if len(sources) > 1:
                    sources.pop(0)
                    continue
                attempt += 1
                if attempt >= DOWNLOAD_ATTEMPTS:
                    raise
                await asyncio.sleep(RETRY_DELAY * attempt)
                continue
            try:
                if resp.status >= 400:
                    if len(sources) > 1:
                        sources.pop(0)
                        resp.release()
                        continue
                    await self.check(resp, f'Get "{source}"', f"blob {digest} not found")
                skip = offset if offset and resp.status != 206 else 0
                # Pieces of CHUNK bytes (the extraction reads that much at a time, so they
                # go on without being cut): the socket gives 64 KiB at a time, and each
                # piece costs the extraction thread a wake-up. Joined once, not copied twice.
                pending: list[bytes] = []
                room = CHUNK
                try:
                    while chunk := await resp.content.read(room):
                        if skip:
                            # The server ignored the range: drop what was already read.
                            dropped = min(skip, len(chunk))
                            chunk = chunk[dropped:]
                            skip -= dropped
                            if not chunk:
                                continue
                        offset += len(chunk)
                        pending.append(chunk)
                        room -= len(chunk)
                        if not room:
                            yield pending[0] if len(pending) == 1 else b"".join(pending)
                            pending.clear()
                            room = CHUNK
                    if pending:
                        yield b"".join(pending)
                    return
                except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError,
                        OSError, TimeoutError) as exc:
                    if pending:
                        yield b"".join(pending)  # good bytes: the retry resumes after them
                    attempt += 1
                    if attempt >= DOWNLOAD_ATTEMPTS:
                        raise Unavailable(f"downloading {digest}: {exc or type(exc).__name__}"
                                          ) from exc
                    log.info("download of %s broke at %d bytes (%s); resuming", digest[:19],
                             offset, exc or type(exc).__name__)
            finally:
                resp.release()
            await asyncio.sleep(RETRY_DELAY * attempt)

    async def tags(self) -> list[str]:
        url = self.url("tags/list")
        out: list[str] = []
        while True:
            async with await self.request("GET", url) as r:
                await self.check(r, f'Get "{url}"',
                                 f"repository {self.domain}/{self.path} not found")
                doc = json.loads(await read_body(r, 16 << 20) or b"{}")
                link = r.headers.get("Link", "")
            out += [t for t in (doc.get("tags") or []) if isinstance(t, str)]
            if 'rel="next"' not in link:
                return out
            url = urljoin(url, link.split(";")[0].strip().strip("<>"))

    # writing ----------------------------------------------------------------------------

    async def blob_exists(self, digest: str) -> bool:
        url = self.url(f"blobs/{digest}")
        async with await self.request("HEAD", url) as r:
            if r.status == 404:
                return False
            await self.check(r, f'Head "{url}"')
            return True

    async def mount(self, digest: str, source_path: str) -> str | None:
        """Cross-repository mount; returns an upload URL when the registry declined it."""
        url = self.url("blobs/uploads/") + "?" + urlencode({"mount": digest,
                                                            "from": source_path})
        async with await self.request("POST", url) as r:
            await self.check(r, f'Post "{url}"')
            if r.status == 201:
                return None
            return urljoin(url, r.headers["Location"])

    async def start_upload(self) -> str:
        url = self.url("blobs/uploads/")
        async with await self.request("POST", url) as r:
            await self.check(r, f'Post "{url}"')
            return urljoin(url, r.headers["Location"])

    async def upload(self, location: str, chunks: AsyncIterator[bytes],
                     digest_of_upload: Awaitable[str]) -> None:
        """Stream the blob in one PATCH, then PUT ?digest= (known only after the last byte)."""
        async with await self.request(
                "PATCH", location, data=chunks,
                headers={"Content-Type": "application/octet-stream"}) as r:
            await self.check(r, f'Patch "{location}"')
            location = urljoin(location, r.headers.get("Location", location))
        digest = await digest_of_upload
        sep = "&" if "?" in location else "?"
        url = f"{location}{sep}{urlencode({'digest': digest})}"
        async with await self.request("PUT", url, headers={"Content-Length": "0"}) as r:
            await self.check(r, f'Put "{url}"')

    async def upload_whole(self, data: bytes, digest: str) -> None:
        """A small blob (a config) in one monolithic PUT."""
        location = await self.start_upload()
        sep = "&" if "?" in location else "?"
        url = f"{location}{sep}{urlencode({'digest': digest})}"
        async with await self.request(
                "PUT", url, data=data,
                headers={"Content-Type": "application/octet-stream"}) as r:
            await self.check(r, f'Put "{url}"')

    async def put_manifest(self, ref: str, body: bytes, media_type: str) -> str | None:
        url = self.url(f"manifests/{ref}")
        async with await self.request("PUT", url, data=body,
                                      headers={"Content-Type": media_type}) as r:
            await self.check(r, f'Put "{url}"')
            return r.headers.get("Docker-Content-Digest")
