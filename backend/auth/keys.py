"""Where verification keys come from: our own Ed25519 key, and Better Auth's published JWKS.

Both are *key sources* for the one verifier in `tokens.py`: given a `kid`, they return the public
key and the one algorithm that key is used with. The algorithm always comes from the key, never
from the token's header.
"""

import asyncio
import base64
import hashlib
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import httpx
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from jwt import PyJWK
from jwt.algorithms import OKPAlgorithm
from jwt.exceptions import PyJWTError

from backend.config import Settings
from backend.metrics import JWKS_FETCH_FAILED, JWKS_FETCH_SUCCEEDED

logger = logging.getLogger("backend.auth.keys")

# What Better Auth's JWT plugin can sign with (and all we accept from anyone).
ACCEPTED_ALGORITHMS = frozenset({"EdDSA", "ES256", "ES512", "RS256", "PS256"})
_ALGORITHM_BY_CURVE = {"Ed25519": "EdDSA", "P-256": "ES256", "P-521": "ES512"}


@dataclass(frozen=True, slots=True)
class VerificationKey:
    kid: str
    algorithm: str
    key: Any  # a `cryptography` public key object, parsed once


class KeySource(Protocol):
    async def get(self, kid: str) -> VerificationKey | None:
        """The key with this id, or None when the source does not know it."""
        ...

    def current(self, kid: str) -> VerificationKey | None:
        """The key with this id among those the source holds now, without waiting for a fetch
        (a remote source refreshes stale keys in the background)."""
        ...


class KeysUnavailable(Exception):
    """No key could ever be obtained from a remote key source."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def ed25519_thumbprint(public_key: Ed25519PublicKey) -> str:
    """The RFC 7638 JWK thumbprint, used as our key id."""
    x = _b64url(public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
    canonical = orjson.dumps({"crv": "Ed25519", "kty": "OKP", "x": x})
    return _b64url(hashlib.sha256(canonical).digest())


def generate_private_key_pem() -> str:
    key = Ed25519PrivateKey.generate()
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _parse_private_key(pem: str, *, origin: str) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{origin} is not a PEM private key without a passphrase") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{origin} must be an Ed25519 key; generate one with `todo-api genkey`")
    return key


def _read_or_create_key_file(path: Path) -> str:
    """Read the development key, creating it atomically if this is the first start (several
    workers may start at once: exactly one key wins and all of them use it)."""
    if not path.exists():
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(generate_private_key_pem())
        try:
            os.link(temporary, path)
            logger.warning("generated a new token signing key in %s", path)
        except FileExistsError:
            pass
        finally:
            temporary.unlink()
    return path.read_text()


class LocalKeys:
    """Our signing key. Its public half is published at /api/auth/jwks."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self.private_key = private_key
        public_key = private_key.public_key()
        self.kid = ed25519_thumbprint(public_key)
        self._verification_key = VerificationKey(self.kid, "EdDSA", public_key)
        jwk = OKPAlgorithm.to_jwk(public_key, as_dict=True)
        self._jwks = {"keys": [{**jwk, "kid": self.kid, "alg": "EdDSA", "use": "sig"}]}

    @classmethod
    def from_settings(cls, settings: Settings) -> "LocalKeys":
        if settings.jwt_private_key is not None:
            pem = settings.jwt_private_key.get_secret_value()
            return cls(_parse_private_key(pem, origin="JWT_PRIVATE_KEY"))
        # Settings made sure that a configured key file, or production's key, exists.
        path = settings.key_file
        return cls(
            _parse_private_key(_read_or_create_key_file(path), origin=f"the key file {path}")
        )

    def public_jwks(self) -> dict[str, Any]:
        return self._jwks

    async def get(self, kid: str) -> VerificationKey | None:
        return self.current(kid)

    def current(self, kid: str) -> VerificationKey | None:
        return self._verification_key if kid == self.kid else None


def parse_jwk(jwk: Mapping[str, Any]) -> VerificationKey | None:
    """A published public key, or None if it is unusable (no kid, private, unknown algorithm, an
    RSA key that does not say whether it is RS256 or PS256, an `alg` that contradicts the curve,
    or key material that does not parse). One unusable entry never spoils the others."""
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not kid or "d" in jwk:
        return None
    curve_algorithm = _ALGORITHM_BY_CURVE.get(str(jwk.get("crv")))
    algorithm = jwk.get("alg") or curve_algorithm
    if not isinstance(algorithm, str) or algorithm not in ACCEPTED_ALGORITHMS:
        return None
    if jwk.get("kty") in ("EC", "OKP") and algorithm != curve_algorithm:
        return None  # e.g. "ES256" on a P-521 key: PyJWT would fail at verification time
    try:
        parsed = PyJWK(dict(jwk), algorithm=algorithm)
    except (PyJWTError, ValueError, TypeError, KeyError):  # PyJWKError, InvalidKeyError…
        return None
    return VerificationKey(kid, algorithm, parsed.key)


class JwksError(Exception):
    pass


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=f"***@{netloc}"))


class RemoteJwks:
    """A remote JWKS (Better Auth's), fetched asynchronously and cached.

    - Keys are refreshed when the cache is older than `cache_seconds`.
    - An unknown `kid` triggers a refetch, but at most once per `cooldown_seconds`, however many
      tokens with made-up key ids arrive, and not right after another fetch; concurrent callers
      share one fetch. A routine refresh does not start that cooldown, so a key rotated in just
      after one is still picked up at once.
    - When the endpoint is down, slow or answers garbage, the last good keys stay in use.
    - The response is bounded in size and in total time.
    - `current` answers from the keys held now and refreshes stale ones in the background, so
      requests with tokens verified before never wait for the endpoint.
    """

    def __init__(
        self,
        *,
        url: str,
        client: httpx.AsyncClient,
        cache_seconds: float,
        cooldown_seconds: float,
        timeout_seconds: float,
        max_bytes: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        # For messages: the URL without any user name or password it holds.
        self._shown_url = _without_credentials(url)
        self._client = client
        self._cache_seconds = cache_seconds
        self._cooldown = cooldown_seconds
        self._timeout = timeout_seconds
        self._max_bytes = max_bytes
        self._clock = clock
        self._keys: dict[str, VerificationKey] | None = None
        self._fresh_until = 0.0
        self._last_attempt: float | None = None
        self._last_unknown_kid_fetch: float | None = None
        self._lock = asyncio.Lock()
        self._background: asyncio.Task[None] | None = None

    async def get(self, kid: str) -> VerificationKey | None:
        if self._keys is None or self._clock() >= self._fresh_until:
            await self._refresh(self._may_refetch)
        assert self._keys is not None
        key = self._keys.get(kid)
        if key is None and self._may_refetch_for_unknown_kid():
            self._last_unknown_kid_fetch = self._clock()  # set before awaiting: one caller wins
            await self._refresh(lambda: True)
            key = self._keys.get(kid)
        return key

    def current(self, kid: str) -> VerificationKey | None:
        if self._keys is None:
            return None
        stale = self._clock() >= self._fresh_until
        idle = self._background is None or self._background.done()
        if stale and idle and self._may_refetch():
            self._background = asyncio.create_task(self._refresh(self._may_refetch))
        return self._keys.get(kid)

    async def close(self) -> None:
        if self._background is not None:
            self._background.cancel()
            await asyncio.gather(self._background, return_exceptions=True)

    def _may_refetch(self) -> bool:
        return self._last_attempt is None or self._clock() - self._last_attempt >= self._cooldown

    def _may_refetch_for_unknown_kid(self) -> bool:
        now = self._clock()
        just_fetched = self._last_attempt is not None and now - self._last_attempt < min(
            self._cooldown, 1.0
        )
        cooled_down = (
            self._last_unknown_kid_fetch is None
            or now - self._last_unknown_kid_fetch >= self._cooldown
        )
        return cooled_down and not just_fetched

    async def _refresh(self, allowed: Callable[[], bool]) -> None:
        requested_at = self._clock()
        async with self._lock:
            if self._last_attempt is not None and self._last_attempt >= requested_at:
                pass  # another request refreshed while this one waited for the lock
            elif allowed():
                await self._fetch_into_cache()
        if self._keys is None:
            raise KeysUnavailable(f"no keys could be fetched from {self._shown_url}")

    async def _fetch_into_cache(self) -> None:
        self._last_attempt = self._clock()
        try:
            keys = await self._fetch()
        except (JwksError, httpx.HTTPError, TimeoutError, ValueError) as exc:
            JWKS_FETCH_FAILED.inc()
            logger.warning(
                "could not refresh the Better Auth JWKS from %s: %s",
                self._shown_url,
                str(exc).replace(self.url, self._shown_url),
            )
            # Keep the last good keys; try again after the cooldown, not on every request.
            self._fresh_until = self._clock() + self._cooldown
            return
        JWKS_FETCH_SUCCEEDED.inc()
        self._keys = keys
        self._fresh_until = self._clock() + self._cache_seconds

    async def _fetch(self) -> dict[str, VerificationKey]:
        async with asyncio.timeout(self._timeout):
            async with self._client.stream(
                "GET", self.url, headers={"accept": "application/json"}, timeout=self._timeout
            ) as response:
                if response.status_code != 200:
                    raise JwksError(f"HTTP {response.status_code}")
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > self._max_bytes:
                        raise JwksError(f"response larger than {self._max_bytes} bytes")
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise JwksError("response is not JSON") from exc
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise JwksError('response has no "keys" list')
        keys = {}
        for entry in document["keys"]:
            key = parse_jwk(entry) if isinstance(entry, dict) else None
            if key is not None:
                keys[key.kid] = key
        if not keys:
            raise JwksError("no usable key in the response")
        return keys
