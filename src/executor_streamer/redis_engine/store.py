"""The Redis engine assembled (docs/multi-node.md).

``RedisHistory`` is the :class:`~executor_streamer.history.shared.SharedHistory` that
lets any number of hub processes act as one. It owns the connections and their lifetime
and is made of small parts, one narrow interface each, which the hub and the app hand to
the code that needs them:

- ``event_log.RedisEventLog``: events and screenshots, read, written and trimmed;
- ``publisher.RedisPublisher``: the publish script, with safe retries;
- ``follower.ChannelFollower``: each hub's live feed of the streams it watches;
- ``registry``: which streams exist (a :class:`StreamRegistry`);
- ``tickets``: values taken once (an :class:`OnceStore`);
- ``reports``: each hub's figures for the cluster-wide views (:class:`HubReports`);
- ``connection_caps``: ``maxConnectionsPerSubject`` across hubs (:class:`ConnectionCaps`);
- :meth:`rate_limit_storage`: where ``limits`` counts requests and events.

Reads are idempotent and retried by redis-py as usual; publishing and the pub/sub
connections use connections that never retry by themselves (``publisher.py``,
``follower.py``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from limits.aio.storage import Storage
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..errors import StorageUnavailable
from ..history.base import HistoryPage, ResumeRead, StoredScreenshot, StreamState, StreamWrite
from ..history.records import EventRecord, Predicate
from ..history.search import SearchBatch, SearchQuery
from ..history.shared import EventParts, FollowTarget, IdempotencyKey, Published
from ..types.filters import HistoryFilter
from ..types.streams import StreamConfig
from .batcher import ScriptBatcher
from .calls import call
from .connect import Client, RedisTarget
from .connection_caps import RedisConnectionCaps
from .event_log import RedisEventLog
from .follower import ChannelFollower
from .internals import verify as verify_internals
from .publisher import RedisPublisher
from .rate_limits import RedisRateLimitStorages
from .registry import RedisRegistry
from .reports import RedisReports
from .routing import ClusterNodes, SingleServer
from .scripts import Scripts
from .tickets import RedisOnceStore


def node_name() -> str:
    """Host and process, and a suffix: two hubs in one process are two nodes too."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


class RedisHistory:
    """A :class:`~executor_streamer.history.shared.SharedHistory` on one Redis server or
    a Redis Cluster (``connect.py``)."""

    streams_in_memory = False

    def __init__(self, url: str, *, probe_interval: float = 1.0) -> None:
        self.url = url
        self.target = RedisTarget.parse(url)
        self.node = node_name()
        timeouts: dict[str, Any] = {"socket_timeout": 5.0, "socket_connect_timeout": 2.0}
        self._redis = self.target.client(
            retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), 2),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
            **timeouts,
        )
        no_retry = {"retry": Retry(NoBackoff(), 0), **timeouts}
        self._publisher_client = self.target.client(**no_retry)
        self._publish_routes = self._routes(self._publisher_client, no_retry)
        self.log = RedisEventLog(self._redis, Scripts(self._redis))
        self.publisher = RedisPublisher(
            ScriptBatcher(
                self._publisher_client,
                Scripts(self._publisher_client).publish,
                self._publish_routes,
            ),
            self._redis,
            self.log,
        )
        listeners = self._routes(self._redis, no_retry) or SingleServer(
            Redis.from_url(url, **no_retry)
        )
        self.follower = ChannelFollower(self._redis, listeners, self.node, self.log, probe_interval)
        self.registry = RedisRegistry(self._redis, self.node, self.follower)
        self.tickets = RedisOnceStore(self._redis)
        self.reports = RedisReports(self._redis, self.node)
        self.connection_caps = RedisConnectionCaps(self._redis, self.node)
        self._rate_limits = RedisRateLimitStorages(self.target, self._redis)

    def _routes(self, client: Client, options: dict[str, Any]) -> ClusterNodes | None:
        """On a Cluster, plain connections to its primaries, found by ``client``'s map."""
        if not isinstance(client, RedisCluster):
            return None
        return ClusterNodes(
            client, lambda host, port: self.target.node_client(host, port, **options)
        )

    def rate_limit_storage(self) -> Storage:
        return self._rate_limits.storage()

    # -- lifetime ----------------------------------------------------------------------

    async def start(self) -> None:
        if self.target.cluster:
            verify_internals()  # loud now, rather than a follower that cannot recover later
        await self.ping()
        # A Cluster client reads the slot map at its first command: the publisher's
        # pipelines go by that map (``batcher.py``).
        await call(self._publisher_client.ping())
        await self.follower.start()

    async def ping(self) -> None:
        await call(self._redis.ping())

    async def close(self) -> None:
        await self.follower.stop()
        await self.connection_caps.close()
        with contextlib.suppress(StorageUnavailable):  # gone: no more report from here
            await self.reports.drop_reports([self.node])
        await self._rate_limits.aclose()
        if self._publish_routes is not None:
            await self._publish_routes.aclose()
        await self._redis.aclose()
        await self._publisher_client.aclose()

    # -- streams -----------------------------------------------------------------------

    async def open_stream(self, stream_id: str, config: StreamConfig) -> None:
        self.log.open(stream_id, config.max_history_size)

    async def save_stream(self, state: StreamState) -> None:
        await self.registry.save(state)

    async def load_streams(self) -> list[StreamState]:
        return await self.registry.load()

    async def drop_stream(self, stream_id: str) -> None:
        await self.registry.forget(stream_id)
        await self.log.delete(stream_id)

    # -- publishing and following ------------------------------------------------------

    async def publish(
        self,
        state: StreamState,
        parts: Sequence[EventParts],
        timestamp: str,
        idempotency: IdempotencyKey | None,
    ) -> Published:
        return await self.publisher.publish(state, parts, timestamp, idempotency)

    async def follow(self, stream_id: str, target: FollowTarget) -> None:
        await self.follower.follow(stream_id, target)

    async def caught_up(self, stream_id: str) -> None:
        await self.follower.caught_up(stream_id)

    async def counts(self, stream_ids: Sequence[str]) -> dict[str, tuple[str, int, int]]:
        return await self.log.counts(stream_ids)

    # -- history (the event log's) -----------------------------------------------------

    async def write(self, writes: Sequence[StreamWrite]) -> None:
        await self.log.write(writes)

    async def query(self, stream_id: str, spec: HistoryFilter) -> HistoryPage:
        return await self.log.query(stream_id, spec)

    async def search(self, query: SearchQuery) -> SearchBatch:
        return await self.log.search(query)

    async def read_range(
        self, stream_id: str, after: int, until: int, predicate: Predicate | None
    ) -> ResumeRead:
        return await self.log.read_range(stream_id, after, until, predicate)

    async def read_after(self, stream_id: str, after: int, until: int | None) -> list[EventRecord]:
        return await self.log.read_after(stream_id, after, until)

    async def read_tail(self, stream_id: str, count: int) -> list[EventRecord]:
        return await self.log.read_tail(stream_id, count)

    async def get_screenshot(self, stream_id: str, screenshot_id: str) -> StoredScreenshot | None:
        return await self.log.get_screenshot(stream_id, screenshot_id)

    async def usage_bytes(self, stream_id: str) -> int:
        return await self.log.usage_bytes(stream_id)

    def held_in_memory(self) -> int:
        return 0  # history lives in Redis; nothing is cached in the hub

    async def evict(self, stream_id: str) -> int:
        return 0

    async def clear(self, stream_id: str) -> int:
        return await self.log.clear(stream_id)

    async def compact(self, stream_id: str, keep_count: int) -> int:
        return await self.log.compact(stream_id, keep_count)

    async def expire(self, stream_id: str, older_than: datetime) -> int:
        return await self.log.expire(stream_id, older_than)
