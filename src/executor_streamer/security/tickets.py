"""Single-use tickets: short-lived stand-ins for a credential in a URL.

A browser's ``EventSource`` (and ``new WebSocket``) cannot send an ``Authorization``
header, and a long-lived token in a URL ends up in proxy logs and browser history. So a
client that holds a credential trades it (``POST /api/auth/tickets``) for a ticket:
random, good for one use within ``ttl`` seconds, carrying the credential's subject and
scope and never outliving the credential itself.

Tickets are kept in this process, or, with hubs sharing a Redis (docs/multi-node.md), in
Redis: a ticket one hub issued opens a connection to any other, once.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

import orjson

from ..errors import Unauthorized
from .credentials import Principal
from .scope import Scope

TICKET_TTL_SECONDS = 30


class OnceStore(Protocol):
    """Values that can be taken once, within a time (a shared store provides one)."""

    async def put_once(self, key: str, value: bytes, ttl_seconds: float) -> None: ...

    async def take_once(self, key: str) -> bytes | None:
        """The value, removed in the same step; None if absent or expired."""


class LocalOnceStore:
    """Values kept in this process; ``clock`` (seconds, never going back) tells when."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._values: dict[str, tuple[float, bytes]] = {}
        self._clock = clock

    async def put_once(self, key: str, value: bytes, ttl_seconds: float) -> None:
        self._forget_expired()
        self._values[key] = (self._clock() + ttl_seconds, value)

    async def take_once(self, key: str) -> bytes | None:
        entry = self._values.pop(key, None)
        if entry is None or self._clock() > entry[0]:
            return None
        return entry[1]

    def _forget_expired(self) -> None:
        # Deadlines grow in insertion order (one ttl), and dicts keep that order.
        now = self._clock()
        while self._values:
            oldest = next(iter(self._values))
            if self._values[oldest][0] >= now:
                return
            del self._values[oldest]


class Tickets:
    def __init__(
        self,
        store: OnceStore | None = None,
        ttl_seconds: float = TICKET_TTL_SECONDS,
        *,
        leeway_seconds: float = 0,
        clock: Callable[[], float] = time.time,
    ):
        """``leeway_seconds`` is how long past its ``exp`` the hub still accepts a
        credential (``security.jwt.leewaySeconds``): a ticket is good no longer than that."""
        self.ttl = ttl_seconds
        self.store: OnceStore = store or LocalOnceStore()
        self._leeway = leeway_seconds
        self._clock = clock

    async def issue(self, principal: Principal) -> str:
        ticket = secrets.token_urlsafe(32)
        await self.store.put_once(_key(ticket), _dump(principal), self.ttl)
        return ticket

    async def redeem(self, ticket: str) -> Principal:
        """The principal a ticket was issued to; the ticket is spent. A ticket that is
        unknown, spent or past its time is ``Unauthorized``, and so is one whose
        credential the hub would refuse by now: a ticket never outlives what bought it."""
        value = await self.store.take_once(_key(ticket))
        if value is None:
            raise Unauthorized(reason="unknown, spent or expired ticket")
        principal = _load(value)
        expires = principal.expires_at
        if expires is not None and self._clock() > expires.timestamp() + self._leeway:
            raise Unauthorized(reason="the credential that bought the ticket has expired")
        return principal


def _key(ticket: str) -> str:
    return "ticket:" + ticket


def _dump(principal: Principal) -> bytes:
    scope = principal.scope
    return orjson.dumps(
        {
            "sub": principal.subject,
            "scope": {
                "subscribe": list(scope.subscribe),
                "publish": list(scope.publish),
                "admin": scope.admin,
            },
            "exp": None if principal.expires_at is None else principal.expires_at.isoformat(),
        }
    )


def _load(value: bytes) -> Principal:
    data = orjson.loads(value)
    expires = data["exp"]
    return Principal(
        data["sub"],
        Scope.from_claim(data["scope"]),
        None if expires is None else datetime.fromisoformat(expires),
    )
