"""Single-use tickets: short-lived stand-ins for a credential in a URL.

A browser's ``EventSource`` (and ``new WebSocket``) cannot send an ``Authorization``
header, and a long-lived token in a URL ends up in proxy logs and browser history. So a
client that holds a credential trades it (``POST /api/auth/tickets``) for a ticket:
random, good for one use within ``ttl`` seconds, carrying the credential's subject and
scope and never outliving the credential itself.
"""

from __future__ import annotations

import secrets
import time

from ..errors import Unauthorized
from .credentials import Principal

TICKET_TTL_SECONDS = 30


class Tickets:
    def __init__(self, ttl_seconds: float = TICKET_TTL_SECONDS) -> None:
        self.ttl = ttl_seconds
        self._issued: dict[str, tuple[float, Principal]] = {}

    def issue(self, principal: Principal) -> str:
        self._forget_expired()
        ticket = secrets.token_urlsafe(32)
        # What the ticket opens expires with the credential (``Principal.expires_at``).
        self._issued[ticket] = (time.monotonic() + self.ttl, principal)
        return ticket

    def redeem(self, ticket: str) -> Principal:
        """The principal a ticket was issued to; the ticket is spent. A ticket that is
        unknown, spent or past its time is ``Unauthorized``."""
        entry = self._issued.pop(ticket, None)
        if entry is None:
            raise Unauthorized(reason="unknown or spent ticket")
        deadline, principal = entry
        if time.monotonic() > deadline:
            raise Unauthorized(reason="expired ticket")
        return principal

    def _forget_expired(self) -> None:
        # Deadlines grow in issue order, and dicts keep that order: the expired are first.
        now = time.monotonic()
        while self._issued:
            oldest = next(iter(self._issued))
            if self._issued[oldest][0] >= now:
                return
            del self._issued[oldest]

    def __len__(self) -> int:
        return len(self._issued)
