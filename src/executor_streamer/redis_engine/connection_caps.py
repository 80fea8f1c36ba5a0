"""``maxConnectionsPerSubject`` across hubs (docs/multi-node.md): caps on a subject's
open connections, each connection holding one slot of its subject's cap (not to be
confused with a Redis Cluster's hash slots, which ``routing.py`` follows).

A subject's open connections are a sorted set in Redis, one member per connection, scored
by when it lapses unless renewed. Each hub renews its own members every
:data:`RENEW_SECONDS`; a hub that dies stops renewing, and its connections stop counting
within :data:`LAPSE_SECONDS`. Taking a slot is one script: count the live members, add
one if there is room.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import defaultdict

from ..errors import StorageUnavailable
from .calls import call
from .connect import Client
from .keys import PREFIX
from .scripts import Scripts

LAPSE_SECONDS = 30.0
RENEW_SECONDS = 10.0
CONNECTIONS = PREFIX + "conns:"


class RedisConnectionCaps:
    """A :class:`~executor_streamer.security.rate_limits.ConnectionCaps` shared by every
    hub on the Redis."""

    def __init__(self, client: Client, node: str) -> None:
        self._client = client
        self._node = node
        self._take = Scripts(client).connection_caps
        self._held: defaultdict[str, set[str]] = defaultdict(set)
        self._numbers = itertools.count()
        self._renewer: asyncio.Task[None] | None = None
        self._releases: set[asyncio.Task[None]] = set()

    async def take(self, subject: str, limit: int) -> str | None:
        slot = f"{self._node}:{next(self._numbers)}"
        now = time.time()
        taken = await call(
            self._take(
                keys=[CONNECTIONS + subject],
                args=[int(now * 1000), int((now + LAPSE_SECONDS) * 1000), limit, slot],
            )
        )
        if not taken:
            return None
        self._held[subject].add(slot)
        if self._renewer is None:
            self._renewer = asyncio.create_task(
                self._renew(), name="executor-streamer-connection-caps"
            )
        return slot

    def give_back(self, subject: str, slot: str) -> None:
        held = self._held.get(subject)
        if held is not None:
            held.discard(slot)
            if not held:
                del self._held[subject]
        task = asyncio.create_task(self._remove(subject, slot))
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def _remove(self, subject: str, slot: str) -> None:
        with contextlib.suppress(StorageUnavailable):  # then it lapses by itself
            await call(self._client.zrem(CONNECTIONS + subject, slot))

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(RENEW_SECONDS)
            lapse = time.time() + LAPSE_SECONDS
            with contextlib.suppress(StorageUnavailable):
                async with self._client.pipeline(transaction=False) as pipe:
                    for subject, slots in self._held.items():
                        # xx: a slot given back meanwhile is not added again.
                        pipe.zadd(
                            CONNECTIONS + subject, dict.fromkeys(slots, lapse * 1000), xx=True
                        )
                        pipe.pexpireat(CONNECTIONS + subject, int(lapse * 1000))
                    await call(pipe.execute())

    async def close(self) -> None:
        tasks = {t for t in (self._renewer, *self._releases) if t is not None}
        if self._renewer is not None:
            self._renewer.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
