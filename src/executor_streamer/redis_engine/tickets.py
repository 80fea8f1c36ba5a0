"""Values any hub can take once (single-use tickets), each key with its own expiry."""

from __future__ import annotations

from .calls import call
from .connect import Client
from .keys import ONCE


class RedisOnceStore:
    """A :class:`~executor_streamer.security.tickets.OnceStore` on Redis: ``SET PX`` to
    put, ``GETDEL`` to take, so two hubs never both take one value."""

    def __init__(self, client: Client) -> None:
        self._client = client

    async def put_once(self, key: str, value: bytes, ttl_seconds: float) -> None:
        await call(self._client.set(ONCE + key, value, px=int(ttl_seconds * 1000)))

    async def take_once(self, key: str) -> bytes | None:
        value: bytes | None = await call(self._client.getdel(ONCE + key))
        return value
