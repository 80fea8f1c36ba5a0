"""From a presented credential to a :class:`Principal`: a JWT or an API key.

Without authentication every caller is an anonymous principal that may do everything
(the hub is then reachable from loopback only, unless ``security.allowInsecure``).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict

from ..errors import Unauthorized
from .credentials import ApiKeys, JwtVerifier, Principal
from .scope import Scope

EVERYTHING = Scope(admin=True)

MAX_CREDENTIAL_CHARS = 8192
"""Longer is refused unread: no JWT this hub accepts is that long."""

VERIFIED_TOKENS = 4096
"""How many verified JWTs :class:`VerifiedTokens` remembers."""


class VerifiedTokens:
    """JWTs already verified, each with the principal it stands for, until it expires.

    Checking a signature costs ~90 µs on this machine (PyJWT, HS256): on a publisher that
    sends one event per request it was a fifth of the server's time at 2,000 events/s.
    The key is the whole token, so an entry answers only for exactly the token that was
    verified (a changed signature, claim or header is another key); only successes are
    kept; and an entry answers only until the moment the verifier would start refusing
    the token (``exp`` plus the leeway): ``exp`` is the only check whose answer changes
    with time from accepted to refused. Compared with verifying every time over random
    tokens in tests/security/test_authenticator.py.
    """

    def __init__(self, leeway_seconds: float, capacity: int = VERIFIED_TOKENS) -> None:
        self._leeway = leeway_seconds
        self._capacity = capacity
        self._entries: OrderedDict[str, tuple[float, Principal]] = OrderedDict()

    def get(self, token: str) -> Principal | None:
        entry = self._entries.get(token)
        if entry is None:
            return None
        until, principal = entry
        if time.time() >= until:
            del self._entries[token]
            return None
        self._entries.move_to_end(token)
        return principal

    def put(self, token: str, principal: Principal) -> None:
        if principal.expires_at is None:
            return
        self._entries[token] = (principal.expires_at.timestamp() + self._leeway, principal)
        self._entries.move_to_end(token)
        if len(self._entries) > self._capacity:
            self._entries.popitem(last=False)


class Authenticator:
    def __init__(self, *, jwt: JwtVerifier | None = None, api_keys: ApiKeys | None = None) -> None:
        self._jwt = jwt
        self._api_keys = api_keys
        self._verified = VerifiedTokens(jwt.leeway_seconds if jwt is not None else 0)

    @staticmethod
    def anonymous(who: str) -> Principal:
        """A caller of a hub without authentication; ``who`` (its address) is its subject
        for rate limits and connection caps."""
        return Principal(who, EVERYTHING, None)

    async def verify(self, credential: str) -> Principal:
        """The principal ``credential`` stands for; ``Unauthorized`` if it stands for none."""
        if not credential or len(credential) > MAX_CREDENTIAL_CHARS:
            raise Unauthorized(reason="empty or oversized credential")
        if _looks_like_jwt(credential):
            if self._jwt is None:
                raise Unauthorized(reason="a JWT, and no security.jwt is configured")
            known = self._verified.get(credential)
            if known is not None:
                return known
            if self._jwt.may_block:
                principal = await asyncio.to_thread(self._jwt.verify, credential)
            else:
                principal = self._jwt.verify(credential)
            self._verified.put(credential, principal)
            return principal
        if self._api_keys is None:
            raise Unauthorized(reason="not a JWT, and no security.apiKeys are configured")
        return self._api_keys.verify(credential)


def _looks_like_jwt(credential: str) -> bool:
    # A JWS in compact form: three base64url parts, the header a JSON object ("eyJ").
    return credential.count(".") == 2 and credential.startswith("eyJ")
