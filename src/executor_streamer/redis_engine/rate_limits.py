"""Where the ``limits`` library keeps rate-limit counters, shared by every hub."""

from __future__ import annotations

from limits.aio.storage import RedisClusterStorage, RedisStorage, Storage
from limits.aio.storage.redis.redispy import RedispyBridge
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from .connect import Client, RedisTarget
from .keys import PREFIX


class RedisRateLimitStorages:
    """Makes ``limits`` storages on the engine's Redis, and closes what they opened."""

    def __init__(self, target: RedisTarget, client: Client) -> None:
        self._target = target
        self._client = client
        self._made: list[RedisClusterStorage] = []

    def storage(self) -> Storage:
        if self._target.cluster:
            # limits makes its own Cluster client; :meth:`aclose` closes it.
            storage = RedisClusterStorage(
                self._target.limits_uri(),
                implementation="redispy",
                key_prefix=PREFIX + "limits",
                **({"ssl": True} if self._target.tls else {}),
            )
            self._made.append(storage)
            return storage
        assert isinstance(self._client, Redis)
        # On the engine's connection pool, so closing the engine closes its connections.
        return RedisStorage(
            self._target.limits_uri(),
            implementation="redispy",
            key_prefix=PREFIX + "limits",
            connection_pool=self._client.connection_pool,  # type: ignore[arg-type]
        )

    async def aclose(self) -> None:
        made, self._made = self._made, []
        for storage in made:
            # limits has no close of its own; its bridge holds the client it made.
            if isinstance(storage.bridge, RedispyBridge):
                client = storage.bridge.get_connection()
                if isinstance(client, RedisCluster):
                    await client.aclose()
