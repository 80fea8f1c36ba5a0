"""Checking a credential: a JWT signed with the configured key, or an API key.

Every answer to a bad credential is the same ``Unauthorized``; what exactly was wrong
(signature, expiry, audience...) is kept for the log (``reason``), never told the caller.

JWTs: the algorithm is the configured one, never the token's own ``alg`` (so ``none``, and
an HS256 token made with an RS256 public key as its secret, are refused); ``exp`` and
``sub`` are required; ``aud`` and ``iss`` are checked when configured; ``nbf`` and ``exp``
allow ``leeway`` seconds of clock skew. API keys are kept as SHA-256 digests and compared
in constant time, with every configured key (so the time taken says nothing of which one
nearly matched).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import jwt
from jwt import PyJWKClient

from ..errors import InvalidInput, Unauthorized
from .scope import Scope

Algorithm = Literal["HS256", "RS256", "ES256"]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a credential belongs to and what it may do, until when."""

    subject: str
    scope: Scope
    expires_at: datetime | None
    """None for an API key, which does not expire."""


class JwtVerifier:
    def __init__(
        self,
        algorithm: Algorithm,
        key: str | bytes | PyJWKClient,
        *,
        audience: str | None = None,
        issuer: str | None = None,
        leeway_seconds: float = 30,
    ) -> None:
        """``key`` is the HS256 secret, the PEM public key for RS256 and ES256, or a
        ``PyJWKClient`` over a JWKS URL, which fetches and caches the keys. Its
        :meth:`verify` then may block on the network (the first time, and when a token
        names an unknown ``kid``): call it in a thread."""
        self._algorithm = algorithm
        self._key = key
        self._audience = audience
        self._issuer = issuer
        self._leeway = leeway_seconds
        required = ["exp", "sub"]
        if audience is not None:
            required.append("aud")
        if issuer is not None:
            required.append("iss")
        self._options: Any = {"require": required, "verify_aud": audience is not None}

    @property
    def leeway_seconds(self) -> float:
        return self._leeway

    @property
    def may_block(self) -> bool:
        return isinstance(self._key, PyJWKClient)

    def verify(self, token: str) -> Principal:
        try:
            key = self._key
            if isinstance(key, PyJWKClient):
                key = key.get_signing_key_from_jwt(token).key
            claims = jwt.decode(
                token,
                key,
                algorithms=[self._algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options=self._options,
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized(reason=f"{type(exc).__name__}: {exc}") from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise Unauthorized(reason="sub must be a non-empty string")
        try:
            scope = Scope.from_claim(claims.get("scope"))
        except InvalidInput as exc:
            raise Unauthorized(reason=exc.message) from None
        return Principal(subject, scope, datetime.fromtimestamp(expiry(claims["exp"]), UTC))


MAX_EXP = 253_402_300_800
"""The first second of the year 10000: ``exp`` must be a JSON number below it."""


def expiry(exp: object) -> float:
    """A token's ``exp`` as seconds since the epoch; ``Unauthorized`` unless it is a JSON
    number (PyJWT also takes a numeric string) below :data:`MAX_EXP`, which every date
    type can hold."""
    if isinstance(exp, bool) or not isinstance(exp, int | float) or not 0 <= exp < MAX_EXP:
        raise Unauthorized(reason="exp must be a number of seconds before the year 10000")
    return float(exp)


@dataclass(frozen=True, slots=True)
class ApiKey:
    name: str
    key_sha256: str
    """Hex SHA-256 of the key; the key itself is never kept."""
    scope: Scope


class ApiKeys:
    def __init__(self, keys: list[ApiKey]) -> None:
        self._keys = [(bytes.fromhex(key.key_sha256), key) for key in keys]

    def verify(self, presented: str) -> Principal:
        digest = hashlib.sha256(presented.encode("utf-8", "surrogatepass")).digest()
        found: ApiKey | None = None
        for expected, key in self._keys:  # all of them, whichever matches
            if hmac.compare_digest(digest, expected):
                found = key
        if found is None:
            raise Unauthorized(reason="unknown API key")
        return Principal(found.name, found.scope, None)


def mint_token(
    secret: str | bytes,
    subject: str,
    scope: Scope,
    ttl_seconds: int,
    *,
    algorithm: Algorithm = "HS256",
    audience: str | None = None,
    issuer: str | None = None,
) -> str:
    """A token for ``subject`` with ``scope``, valid ``ttl_seconds`` from now (for tests
    and small setups; a real deployment's tokens come from its identity provider)."""
    now = int(time.time())
    if not 0 < now + ttl_seconds < MAX_EXP:
        raise ValueError(f"a ttl of {ttl_seconds} s would expire past the year 10000")
    claims: dict[str, Any] = {"sub": subject, "iat": now, "exp": now + ttl_seconds}
    claims["scope"] = scope.to_claim()
    if audience is not None:
        claims["aud"] = audience
    if issuer is not None:
        claims["iss"] = issuer
    return jwt.encode(claims, secret, algorithm=algorithm)
