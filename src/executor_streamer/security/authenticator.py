"""From a presented credential to a :class:`Principal`: a JWT or an API key.

Without authentication every caller is an anonymous principal that may do everything
(the hub is then reachable from loopback only, unless ``security.allowInsecure``).
"""

from __future__ import annotations

import asyncio

from ..errors import Unauthorized
from .credentials import ApiKeys, JwtVerifier, Principal
from .scope import Scope

EVERYTHING = Scope(admin=True)

MAX_CREDENTIAL_CHARS = 8192
"""Longer is refused unread: no JWT this hub accepts is that long."""


class Authenticator:
    def __init__(
        self, *, required: bool, jwt: JwtVerifier | None = None, api_keys: ApiKeys | None = None
    ) -> None:
        self.required = required
        self._jwt = jwt
        self._api_keys = api_keys

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
            if self._jwt.may_block:
                return await asyncio.to_thread(self._jwt.verify, credential)
            return self._jwt.verify(credential)
        if self._api_keys is None:
            raise Unauthorized(reason="not a JWT, and no security.apiKeys are configured")
        return self._api_keys.verify(credential)


def _looks_like_jwt(credential: str) -> bool:
    # A JWS in compact form: three base64url parts, the header a JSON object ("eyJ").
    return credential.count(".") == 2 and credential.startswith("eyJ")
