"""Rate limits (docs/configuration.md, ``security.rateLimiting``), with the ``limits``
library's sliding-window counters: constant memory and time per key, whatever the rate.

- requests: ``maxRequestsPerMinute`` per subject (a credential's subject, or the client's
  IP without authentication) over every request and WebSocket message but publishes;
- events: ``maxEventsPerSecond`` per stream over published events, a batch counting each
  of its events. A stream may burst up to its ``bufferSize``: the window is as many
  seconds as that burst needs at the rate, so the average stays at the rate;
- connections: at most ``maxConnectionsPerSubject`` open WebSocket and SSE connections
  per subject (a count, not a rate), counted in this process or, with hubs sharing a
  Redis, across them (:class:`ConnectionCaps`).

Knows nothing of HTTP: the server says whose request it is and answers ``RateLimited``
with its ``retry_after``.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from functools import lru_cache
from typing import Protocol

from limits import RateLimitItem, RateLimitItemPerMinute, RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from ..errors import BatchTooLarge, RateLimited


class ConnectionCaps(Protocol):
    """Open connections per subject, counted against a limit."""

    async def take(self, subject: str, limit: int) -> str | None:
        """A slot for one more connection of ``subject``, or None if it holds ``limit``."""

    def give_back(self, subject: str, slot: str) -> None: ...


class LocalConnectionCaps:
    """This process's connections only."""

    def __init__(self) -> None:
        self._held: Counter[str] = Counter()

    async def take(self, subject: str, limit: int) -> str | None:
        if self._held[subject] >= limit:
            return None
        self._held[subject] += 1
        return ""

    def give_back(self, subject: str, slot: str) -> None:
        self._held[subject] -= 1
        if self._held[subject] <= 0:
            del self._held[subject]

    def held(self, subject: str) -> int:
        return self._held[subject]


class RateLimits:
    def __init__(
        self,
        *,
        requests_per_minute: int,
        events_per_second: int,
        connections_per_subject: int,
        storage: Storage | None = None,
        caps: ConnectionCaps | None = None,
    ) -> None:
        self._limiter = SlidingWindowCounterRateLimiter(storage or MemoryStorage())
        self._requests = RateLimitItemPerMinute(requests_per_minute, namespace="requests")
        self._events_per_second = events_per_second
        self._max_connections = connections_per_subject
        self._caps = caps or LocalConnectionCaps()

    async def request(self, subject: str) -> None:
        """Count one request of ``subject``; ``RateLimited`` if it is one too many."""
        if not await self._limiter.hit(self._requests, subject):
            raise RateLimited(
                "too many requests; slow down", await self._retry_after(self._requests, subject)
            )

    async def refuse_if_spent(self, subject: str) -> None:
        """``RateLimited`` if ``subject`` has no request left this minute; counts nothing."""
        if not await self._limiter.test(self._requests, subject):
            raise RateLimited(
                "too many requests; slow down", await self._retry_after(self._requests, subject)
            )

    async def events(self, stream: str, count: int, burst: int) -> None:
        """Count ``count`` events published into ``stream`` (its workflow session id),
        whose ``bufferSize`` is ``burst``; nothing is counted when they are refused."""
        item = events_window(self._events_per_second, burst)
        if count > item.amount:
            raise BatchTooLarge.single(
                "events",
                f"{count} events at once exceed this stream's burst of {item.amount} "
                "(security.rateLimiting.maxEventsPerSecond, bufferSize): split the batch",
            )
        if not await self._limiter.hit(item, stream, cost=count):
            raise RateLimited(
                f"more than {self._events_per_second} events per second into this stream",
                await self._retry_after(item, stream),
            )

    async def hold_connection(self, subject: str) -> Callable[[], None]:
        """Count one more open connection of ``subject``; ``RateLimited`` if it already
        holds ``maxConnectionsPerSubject``. Returns what gives it back (once)."""
        slot = await self._caps.take(subject, self._max_connections)
        if slot is None:
            raise RateLimited(f"more than {self._max_connections} open connections", 1)
        held = True

        def release() -> None:
            nonlocal held
            if held:
                held = False
                self._caps.give_back(subject, slot)

        return release

    async def _retry_after(self, item: RateLimitItem, key: str) -> int:
        stats = await self._limiter.get_window_stats(item, key)
        return max(1, math.ceil(stats.reset_time - time.time()))


@lru_cache(maxsize=256)
def events_window(events_per_second: int, burst: int) -> RateLimitItem:
    """``events_per_second`` over a window long enough to hold a ``burst``."""
    seconds = max(1, math.ceil(burst / events_per_second))
    return RateLimitItemPerSecond(
        events_per_second * seconds, multiples=seconds, namespace="events"
    )
