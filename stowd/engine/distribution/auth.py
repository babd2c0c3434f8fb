"""Registry credentials: the X-Registry-Auth header, challenges, and tokens.

Pure logic (no I/O): the HTTP side is in client.py. Credentials are never logged and never
appear in an error message: `Credentials.__repr__` hides them.
"""

import base64
import binascii
import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

# Tokens without `expires_in` live 60 s (the distribution spec's default).
DEFAULT_TOKEN_LIFETIME = 60
# A token is renewed this long before it expires, so a request never carries a stale one.
EXPIRY_MARGIN = 5


@dataclass(frozen=True)
class Credentials:
    username: str = ""
    password: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)
    registry_token: str = field(default="", repr=False)
    server_address: str = ""

    @property
    def fingerprint(self) -> str:
        """Tells credentials apart in the token cache without keeping the secret in it:
        tokens got with one password are never handed to a request made with another."""
        secret = "\0".join((self.username, self.password, self.identity_token,
                             self.registry_token))
        return hashlib.sha256(secret.encode()).hexdigest()

    @property
    def empty(self) -> bool:
        return not (self.username or self.password or self.identity_token
                    or self.registry_token)


def _b64decode(text: str) -> bytes:
    """Base64 in the URL or the standard alphabet, padded or not (clients send each)."""
    cleaned = text.strip().replace("-", "+").replace("_", "/")
    cleaned += "=" * (-len(cleaned) % 4)
    return base64.b64decode(cleaned, validate=True)


def decode_registry_auth(header: str | None) -> Credentials:
    """X-Registry-Auth → credentials; anything unreadable counts as no credentials.

    As dockerd: a pull without (usable) credentials is not an error, the registry decides."""
    if not header:
        return Credentials()
    try:
        doc = json.loads(_b64decode(header))
    except (ValueError, binascii.Error):
        return Credentials()
    return credentials_from(doc) if isinstance(doc, dict) else Credentials()


def credentials_from(doc: dict[str, Any]) -> Credentials:
    """An AuthConfig object (X-Registry-Auth or the body of POST /auth) → credentials."""
    def text(key: str) -> str:
        value = doc.get(key)
        return value if isinstance(value, str) else ""

    username, password = text("username"), text("password")
    if text("auth") and not username:
        # `auth` is base64("user:password"), as config.json stores it.
        try:
            username, _, password = _b64decode(text("auth")).decode().partition(":")
        except (ValueError, binascii.Error, UnicodeDecodeError):
            pass
    return Credentials(username, password, text("identitytoken"), text("registrytoken"),
                       text("serveraddress"))


@dataclass(frozen=True)
class Challenge:
    scheme: str  # "basic" or "bearer", lower case
    params: dict[str, str]


_PARAM = re.compile(r'\s*([A-Za-z][\w-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*,?')


def parse_challenges(header: str) -> list[Challenge]:
    """A WWW-Authenticate header → its challenges (`Bearer realm="…",service="…"`)."""
    out: list[Challenge] = []
    rest = header.strip()
    while rest:
        m = re.match(r"([A-Za-z][\w-]*)\s*", rest)
        if not m:
            break
        scheme = m.group(1).lower()
        rest = rest[m.end():]
        params: dict[str, str] = {}
        while True:
            p = _PARAM.match(rest)
            # A bare word followed by a space and no '=' starts the next challenge.
            if not p:
                break
            value = p.group(2) if p.group(2) is not None else p.group(3)
            params[p.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
            rest = rest[p.end():]
        out.append(Challenge(scheme, params))
        rest = rest.lstrip(", ")
    return out


def basic_header(creds: Credentials) -> str:
    raw = f"{creds.username}:{creds.password}".encode()
    return "Basic " + base64.b64encode(raw).decode()


@dataclass
class _Token:
    value: str
    expires: float


class TokenCache:
    """Bearer tokens per (realm, service, scope, credentials) until shortly before they
    expire."""

    def __init__(self) -> None:
        self._tokens: dict[tuple[str, str, str, str], _Token] = {}

    def get(self, key: tuple[str, str, str, str], now: float | None = None) -> str | None:
        token = self._tokens.get(key)
        if token is None:
            return None
        if (now if now is not None else time.monotonic()) >= token.expires:
            del self._tokens[key]
            return None
        return token.value

    def put(self, key: tuple[str, str, str, str], answer: dict[str, Any],
            now: float | None = None) -> str:
        """Remember a token server's answer; returns the token (InvalidToken if none)."""
        value = answer.get("token") or answer.get("access_token")
        if not isinstance(value, str) or not value:
            raise ValueError("the token server answered without a token")
        lifetime = answer.get("expires_in")
        if not isinstance(lifetime, int | float) or lifetime <= 0:
            lifetime = DEFAULT_TOKEN_LIFETIME
        start = now if now is not None else time.monotonic()
        self._tokens[key] = _Token(value, start + max(lifetime - EXPIRY_MARGIN, 1))
        return value


def scope_for(repository_path: str, actions: str) -> str:
    return f"repository:{repository_path}:{actions}"
