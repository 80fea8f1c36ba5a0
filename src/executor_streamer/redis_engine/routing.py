"""Which Redis server a channel or a key lives on (docs/multi-node.md, "Redis Cluster").

On one Redis that is the one server. On a Cluster it is the primary that owns the slot,
as the Cluster client's map says. Two users take plain connections to it:
- The follower keeps one pub/sub connection per server it listens to. A stream's sharded
  channel must be subscribed on its owner. The control channel is an ordinary one, which
  a Cluster hands to every node, so it is heard on one of them.
- The publisher sends each primary's queued publish scripts as one pipeline (redis-py's
  Cluster pipelines refuse EVALSHA).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException, RedisError

from ..errors import StorageUnavailable
from .internals import reread_slot_map


class SingleServer:
    """Every channel on the one server."""

    def __init__(self, client: Redis) -> None:
        self._client = client

    def node_of(self, channel: str) -> str:
        return "redis"

    def client(self, node: str) -> Redis:
        return self._client

    async def relearn(self) -> None:
        """Nothing moves on one server."""

    async def aclose(self) -> None:
        await self._client.aclose()


class ClusterNodes:
    """Each channel or key on the primary that owns its slot, as the Cluster client
    knows it."""

    def __init__(self, cluster: RedisCluster, connect: Callable[[str, int], Redis]) -> None:
        self._cluster = cluster
        self._connect = connect
        self._where: dict[str, tuple[str, int]] = {}
        self._clients: dict[str, Redis] = {}
        self._relearning: asyncio.Task[None] | None = None

    def node_of(self, channel: str) -> str:
        try:
            node = self._cluster.get_node_from_key(channel)
        except (RedisClusterException, RedisError) as exc:
            raise StorageUnavailable(f"redis cluster: {exc}") from exc
        if node is None:
            raise StorageUnavailable(f"redis cluster: no node holds {channel!r}")
        self._where[node.name] = (node.host, int(node.port))
        return node.name

    def client(self, node: str) -> Redis:
        client = self._clients.get(node)
        if client is None:
            client = self._clients[node] = self._connect(*self._where[node])
        return client

    async def relearn(self) -> None:
        """Read the slot map again (after a lost connection, or a channel the server let
        go of). Callers at the same time share one read."""
        if self._relearning is None:
            self._relearning = asyncio.create_task(self._read_slots())
        task = self._relearning
        try:
            await asyncio.shield(task)
        finally:
            if task.done() and self._relearning is task:
                self._relearning = None

    async def _read_slots(self) -> None:
        try:
            await reread_slot_map(self._cluster)
        except (RedisClusterException, RedisError, OSError) as exc:
            raise StorageUnavailable(f"redis cluster: {exc}") from exc

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()


Listeners = SingleServer | ClusterNodes
