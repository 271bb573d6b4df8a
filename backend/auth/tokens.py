"""Issuing our access tokens, and the one verifier for every accepted token (ours, Better Auth's).

A token names its issuer (`iss`); the verifier looks that issuer up among the trusted ones, takes
the key with the token's `kid` from that issuer's key source, and verifies the signature with the
algorithm of that key. Only then are the claims checked, so `token_expired` is only ever said of
an authentic token.
"""

import json
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jwt

from backend.auth.keys import (
    ACCEPTED_ALGORITHMS,
    KeySource,
    KeysUnavailable,
    LocalKeys,
    VerificationKey,
)
from backend.errors import (
    EmailNotVerified,
    InvalidToken,
    MissingToken,
    ServiceUnavailable,
    TokenExpired,
)
from backend.models import AuthProvider

ACCESS_TOKEN_TYPE = "access"  # noqa: S105 (a claim value, not a secret)
# Headers that would let a token choose its own verification key.
_FORBIDDEN_HEADERS = frozenset({"jku", "x5u", "jwk", "x5c", "crit"})
_REQUIRED_CLAIMS = ["exp", "iat", "sub", "iss", "aud"]
MAX_SUBJECT_LENGTH = 64
# Control characters and lone surrogates: no id of ours or Better Auth's holds one, and
# PostgreSQL cannot even compare text with NUL or a surrogate (a 500 instead of a 401).
_NOT_IN_A_SUBJECT = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a verified token speaks for."""

    subject: str
    provider: AuthProvider
    issued_at: float
    expires_at: int
    email: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class TrustedIssuer:
    provider: AuthProvider
    issuer: str
    audience: str
    keys: KeySource
    # The `typ` claim this issuer's access tokens carry (ours do; Better Auth's carry none).
    token_type: str | None = None
    # The lifetime this issuer gives its tokens, when known (ours): a token whose `exp` lies
    # further from its `iat` was not made by the issuer as configured, and is refused.
    lifetime_seconds: int | None = None
    # Accept only tokens whose `emailVerified` claim is true (Better Auth's, when configured).
    require_verified_email: bool = False


@dataclass(frozen=True, slots=True)
class _Verified:
    """A token that passed: who it speaks for, and the key that vouched for it, from where."""

    principal: Principal
    keys: KeySource
    key: VerificationKey


class TokenVerifier:
    """Verifies bearer tokens from any trusted issuer.

    A signature check costs about 0.2 ms of CPU, a large share of a fast request, so tokens that
    passed are remembered (a bounded, per-process map) until they expire, with the key that
    verified them: a remembered token counts only while its issuer still publishes that key, so
    a key withdrawn from Better Auth's JWKS stops every token it signed once the keys have been
    fetched again (in the background: a remembered token never waits for the endpoint). Only
    the cryptographic verdict is cached: the caller still checks, on every request, that the
    token's user exists and has not revoked it.
    """

    def __init__(
        self,
        issuers: Sequence[TrustedIssuer],
        *,
        leeway_seconds: int,
        max_token_bytes: int,
        cache_size: int = 10_000,
    ) -> None:
        self._issuers = {issuer.issuer: issuer for issuer in issuers}
        self._leeway = leeway_seconds
        self._max_bytes = max_token_bytes
        self._cache_size = cache_size
        self._verified: dict[str, _Verified] = {}

    async def verify(self, token: str) -> Principal:
        remembered = self._verified.get(token)
        if remembered is not None:
            if self._still_valid(remembered):
                return remembered.principal
            # Expired (verify again, to say token_expired) or its key is gone (invalid_token).
            self._verified.pop(token, None)
        verified = await self._verify(token)
        if self._cache_size:
            if len(self._verified) >= self._cache_size:
                self._verified.pop(next(iter(self._verified)), None)  # the oldest entry
            self._verified[token] = verified
        return verified.principal

    def _still_valid(self, remembered: _Verified) -> bool:
        if time.time() > remembered.principal.expires_at + self._leeway:
            return False
        # Equal, not identical: a refetched key set holds new objects for the same keys.
        return remembered.keys.current(remembered.key.kid) == remembered.key

    def _untrusted_issuer(self, claimed: object) -> str:
        """Which issuer came and which are trusted: issuers are public, and a mismatch such as
        `http://localhost:3000` against `http://127.0.0.1:3000` is otherwise a guessing game."""
        expected = " or ".join(_quoted(issuer) for issuer in self._issuers)
        if claimed is None:
            return f"The access token has no issuer (iss); expected {expected}."
        return f"The access token's issuer {_quoted(claimed)} is not trusted; expected {expected}."

    async def _verify(self, token: str) -> _Verified:
        if not token:
            raise MissingToken()
        if len(token) > self._max_bytes:
            raise InvalidToken("The access token is too large.")
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.InvalidTokenError as exc:
            raise InvalidToken("The access token is malformed.") from exc

        algorithm = header.get("alg")
        kid = header.get("kid")
        # Types first: an `alg` that is a list or an object is refused, not hashed (a 500).
        if not (isinstance(algorithm, str) and isinstance(kid, str)) or (
            algorithm not in ACCEPTED_ALGORITHMS
        ):
            raise InvalidToken("The access token's algorithm or key id is not accepted.")
        if _FORBIDDEN_HEADERS & header.keys():
            raise InvalidToken("The access token names its own key; that is not accepted.")
        claimed_issuer = unverified.get("iss") if isinstance(unverified, dict) else None
        issuer = self._issuers.get(claimed_issuer) if isinstance(claimed_issuer, str) else None
        if issuer is None:
            raise InvalidToken(self._untrusted_issuer(claimed_issuer))

        try:
            key = await issuer.keys.get(kid)
        except KeysUnavailable as exc:
            raise ServiceUnavailable("The identity provider's keys cannot be fetched.") from exc
        if key is None or key.algorithm != algorithm:
            raise InvalidToken("The access token was not signed by a trusted key.")

        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm],
                audience=issuer.audience,
                issuer=issuer.issuer,
                leeway=self._leeway,
                options={"require": _REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenExpired() from exc
        except jwt.InvalidTokenError as exc:
            raise InvalidToken() from exc
        return _Verified(_principal(claims, issuer, self._leeway), issuer.keys, key)


_MAX_TIMESTAMP = 10**15


def _quoted(value: object, limit: int = 100) -> str:
    """A claim as JSON, ASCII-escaped (a lone surrogate cannot be encoded as UTF-8), shortened:
    it comes from an unverified token, so it is echoed, never trusted."""
    text = json.dumps(value, ensure_ascii=True)
    return text if len(text) <= limit else f"{text[:limit]}…"


def _principal(claims: dict[str, Any], issuer: TrustedIssuer, leeway: int) -> Principal:
    subject, issued_at, expires_at = claims["sub"], claims["iat"], claims["exp"]
    if (
        not isinstance(subject, str)
        or not 0 < len(subject) <= MAX_SUBJECT_LENGTH
        or _NOT_IN_A_SUBJECT.search(subject)
    ):
        raise InvalidToken("The access token's subject is not valid.")
    # Numbers (not booleans), within a range that a float holds closely enough (10**15 seconds
    # is thirty million years either way; NaN compares false, so it is refused too).
    if not all(
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and abs(value) < _MAX_TIMESTAMP  # before isfinite, which cannot take a huge int
        for value in (issued_at, expires_at)
    ):
        raise InvalidToken("The access token's timestamps are not numbers.")
    if issuer.lifetime_seconds is not None and (
        expires_at - issued_at > issuer.lifetime_seconds + leeway
    ):
        raise InvalidToken("The access token outlives the lifetime its issuer gives tokens.")
    if issuer.token_type is not None and claims.get("typ") != issuer.token_type:
        raise InvalidToken("This is not an access token.")
    if issuer.require_verified_email and claims.get("emailVerified") is not True:
        raise EmailNotVerified()
    email, name = claims.get("email"), claims.get("name")
    return Principal(
        subject=subject,
        provider=issuer.provider,
        issued_at=float(issued_at),
        expires_at=int(expires_at),
        email=email if isinstance(email, str) else None,
        name=name if isinstance(name, str) else None,
    )


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    expires_in: int


class AccessTokenIssuer:
    """Signs our access tokens: EdDSA, header {alg, kid}, claims sub/iat/exp/iss/aud/typ."""

    def __init__(self, keys: LocalKeys, *, issuer: str, audience: str, lifetime_seconds: int):
        self._keys = keys
        self.issuer = issuer
        self.audience = audience
        self._lifetime = lifetime_seconds

    def issue(self, subject: str, *, not_before: float | None = None) -> IssuedToken:
        """A new access token for `subject`.

        `not_before` is the user's "tokens valid after" instant: tokens are refused when their
        `iat` is earlier. `iat` has microseconds (a JWT NumericDate may have a fraction), so a
        token issued right after a logout-all is valid, and one issued just before it is not.
        """
        issued_at = round(time.time(), 6)
        if not_before is not None:
            issued_at = max(issued_at, not_before)
        expires_at = issued_at + self._lifetime
        token = jwt.encode(
            {
                "sub": subject,
                "iat": issued_at,
                "exp": expires_at,
                "iss": self.issuer,
                "aud": self.audience,
                "typ": ACCESS_TOKEN_TYPE,
                "jti": uuid.uuid4().hex,  # every token is distinct, even within one second
            },
            self._keys.private_key,
            algorithm="EdDSA",
            headers={"kid": self._keys.kid},
        )
        return IssuedToken(token=token, expires_in=self._lifetime)
