"""The hub: every part of the core wired together, usable in-process (docs/rest.md).

    hub = ExecutorStreamer(ExecutorStreamerConfig())
    await hub.start()
    await hub.publisher.publish_reasoning("wf-1", "look for the login form", 0.8, "planning")
    async with hub.subscribe("wf-1", since=0) as sub:
        async for event in sub: ...
    await hub.stop()

The hub owns two background tasks, both cancelled by :meth:`stop`: the lifecycle
callback runner and the maintenance loop (idle clients, retention).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import structlog
from pydantic import TypeAdapter, ValidationError

from ..backends import storage_for
from ..config import ExecutorStreamerConfig
from ..errors import (
    ClientNotFound,
    HubNotRunning,
    InvalidInput,
    ReplayNotAllowed,
    StorageUnavailable,
)
from ..history.base import HistoryStore
from ..history.records import EventRecord, drop_views
from ..types.analytics import StreamMetrics, StreamStats
from ..types.base import utc_now
from ..types.enums import ClientType, SessionStatus
from ..types.events import ErrorContext
from ..types.filters import MAX_HISTORY_LIMIT, MAX_SEQ, HistoryFilter, StreamFilter
from ..types.internals import verify as verify_model_internals
from ..types.streams import (
    ManagerHealth,
    ModuleSessionInfo,
    StreamClientInfo,
    StreamConfig,
    StreamSession,
)
from .all_hubs import REPORT_SECONDS, AllHubsView
from .analytics import StreamAnalytics
from .clients import ClientRegistry, ClientSession
from .counters import HubCounters
from .filters import check_expressions
from .idempotency import RecentPublishes
from .lifecycle import LifecycleCallbacks, LifecycleNotifier
from .memory_budget import MemoryBudget
from .publisher import StreamPublisher
from .run_analytics import RunAnalytics
from .search import RunSearch
from .stream_history import StreamHistory
from .streams import Stream, StreamManager
from .subscription import CloseReason, Subscription

_log = structlog.get_logger("executor_streamer.hub")
_filters_adapter = TypeAdapter(list[StreamFilter])

RETENTION_EVERY_SECONDS = 60.0
REGISTRY_SYNC_SECONDS = 5.0
"""With a shared backend: how often the registry is read whole, for changes whose
announcement this hub missed."""
ACTIVITY_KEPT = timedelta(hours=24)


class ExecutorStreamer:
    def __init__(
        self,
        config: ExecutorStreamerConfig | None = None,
        *,
        storage: HistoryStore | None = None,
        callbacks: LifecycleCallbacks | None = None,
        maintenance_interval: float = 1.0,
    ) -> None:
        self.config = config or ExecutorStreamerConfig()
        self.storage = storage or storage_for(self.config)
        self.counters = HubCounters()
        self._notifier = LifecycleNotifier()
        if callbacks is not None:
            self._notifier.callbacks = callbacks
        self.streams = StreamManager(self.config, self.storage, self._notifier)
        self.clients = ClientRegistry(self.config.server.max_connections)
        self.memory = MemoryBudget(
            self.config.limits.max_memory_bytes, self.storage, self.streams, RecentPublishes()
        )
        """``limits.maxMemoryBytes`` (docs/configuration.md)."""
        self.publisher = StreamPublisher(
            self.config, self.streams, self.storage, self.counters, self.memory
        )
        self.history = StreamHistory(
            self.streams, self.storage, self.config.limits.max_expression_length
        )
        self.analytics = StreamAnalytics(self.streams, self.clients, self.counters, self.history)
        self.runs = RunSearch(self.streams, self.storage, self.config.limits.max_expression_length)
        """Search across runs (docs/query.md)."""
        self.run_analytics = RunAnalytics(self.runs, self.config.viewer.dashboard.widgets)
        """Run analytics and dashboard widgets (docs/query.md)."""
        shared = self.streams.shared
        self.all_hubs = (
            None
            if shared is None
            else AllHubsView(
                shared.reports, shared, self.streams, self.clients, self.counters, self.analytics
            )
        )
        """Views over every hub sharing the backend ("cluster-wide" in docs/multi-node.md)."""
        self._maintenance_interval = maintenance_interval
        self._maintenance: asyncio.Task[None] | None = None
        self._stopped = False

    # -- lifetime ----------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.streams.running

    async def start(self) -> None:
        if self.running:
            return
        if self._stopped:
            raise HubNotRunning("a stopped hub cannot be restarted: create a new one")
        verify_model_internals()  # loud now, rather than wrong events later
        await self.storage.start()
        loaded = await self.streams.load()
        self._notifier.start()
        self.streams.running = True
        self._maintenance = asyncio.create_task(self._maintain(), name="executor-streamer-maint")
        _log.info("hub_started", storage=self.config.persistence.storage_backend, streams=loaded)

    async def stop(self) -> None:
        """Refuse new work, let publishes in progress finish, end every subscription
        (reason SHUTDOWN), stop background work and close storage. Final."""
        if self._maintenance is None:
            return
        self.streams.running = False
        self._stopped = True
        task, self._maintenance = self._maintenance, None
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        for stream in self.streams:
            async with stream.lock:  # a publish building its records finishes staging
                pass
        await self.publisher.drain()  # and every staged publish is committed
        for client in self.clients:
            self.clients.disconnect(client.id, CloseReason.SHUTDOWN)
        for stream in self.streams:
            for sub in list(stream.subscriptions):
                sub.close(CloseReason.SHUTDOWN)
        await self._notifier.stop()
        await self.storage.close()
        _log.info("hub_stopped")

    async def __aenter__(self) -> ExecutorStreamer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def set_lifecycle_callbacks(self, callbacks: LifecycleCallbacks) -> None:
        self._notifier.callbacks = callbacks

    async def drain_callbacks(self) -> None:
        """Wait until every lifecycle callback emitted so far has run."""
        await self._notifier.drain()

    # -- streams (the original specification's IExecutorStreamerManager) ------------------

    async def create_stream(
        self,
        workflow_session_id: str,
        config: StreamConfig | dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> str:
        """The stream id, creating the stream or reactivating a closed one as needed."""
        self._check_running()
        stream, _ = await self.streams.ensure_stream(workflow_session_id, config, metadata)
        return stream.id

    def get_stream(self, ref: str) -> StreamSession | None:
        return self.streams.get_stream(ref)

    async def destroy_stream(self, ref: str, purge: bool = False) -> None:
        await self.streams.destroy_stream(ref, purge)

    def list_active_streams(self) -> list[str]:
        return self.streams.list_active_streams()

    def get_session(self, ref: str) -> ModuleSessionInfo | None:
        stream = self.streams.find(ref)
        return None if stream is None else stream.module_session()

    async def update_session_status(
        self, ref: str, status: SessionStatus, error: ErrorContext | None = None
    ) -> None:
        await self.streams.update_status(ref, status, error)

    def session_exists(self, ref: str) -> bool:
        return self.streams.stream_exists(ref)

    def get_session_status(self, ref: str) -> SessionStatus | None:
        stream = self.streams.find(ref)
        return None if stream is None else stream.status

    def record_activity(self, ref: str) -> None:
        self.streams.record_activity(ref)

    def get_last_activity(self, ref: str) -> datetime | None:
        stream = self.streams.find(ref)
        return None if stream is None else stream.last_activity

    def health_check(self) -> ManagerHealth:
        """Healthy while running; the errors say why not."""
        return ManagerHealth(
            is_healthy=self.running,
            active_sessions=len(self.list_active_streams()),
            total_sessions=len(self.streams),
            errors=[] if self.running else ["the hub is not running"],
            last_health_check=utc_now(),
        )

    async def ready(self) -> ManagerHealth:
        """Health, plus whether storage answers now (for readiness probes)."""
        health = self.health_check()
        if health.is_healthy:
            try:
                await self.storage.ping()
            except StorageUnavailable as exc:
                return health.model_copy(update={"is_healthy": False, "errors": [exc.message]})
        return health

    # -- views that span every hub sharing the backend ----------------------------------

    async def stream_clients(self, ref: str) -> list[StreamClientInfo]:
        """The stream's clients, on every hub."""
        stream = await self.streams.located(ref)
        if self.all_hubs is None:
            return [c.info(stream.id) for c in stream.clients.values()]
        return await self.all_hubs.clients(stream)

    async def stream_session(self, ref: str) -> StreamSession:
        """:meth:`get_stream`, with the state and clients every hub shares."""
        return (await self.stream_sessions([await self.streams.refreshed(ref)]))[0]

    async def stream_sessions(self, streams: list[Stream]) -> list[StreamSession]:
        """The streams' sessions, with the clients of every hub sharing the backend."""
        if self.all_hubs is None:
            return [stream.session() for stream in streams]
        return await self.all_hubs.sessions(streams)

    async def metrics(self) -> StreamMetrics:
        return (
            self.analytics.get_metrics() if self.all_hubs is None else await self.all_hubs.metrics()
        )

    async def stream_stats(self, ref: str) -> StreamStats:
        stream = await self.streams.located(ref)
        if self.all_hubs is None:
            return await self.analytics.get_stream_stats(stream.id)
        return await self.all_hubs.stream_stats(stream)

    # -- clients -----------------------------------------------------------------------

    def connect(self, client_type: ClientType, client_id: str | None = None) -> ClientSession:
        """Register a connection (limited by ``server.maxConnections``)."""
        self._check_running()
        return self.clients.connect(client_type, client_id)

    def disconnect(self, client_id: str, reason: CloseReason = CloseReason.DISCONNECTED) -> None:
        self.clients.disconnect(client_id, reason)

    async def attach_client(
        self,
        ref: str,
        client: ClientSession,
        filters: Sequence[StreamFilter | Mapping[str, Any]] | None = None,
    ) -> Subscription:
        """The original attachClient: a live-only subscription owned by ``client``."""
        return await self.open_subscription(ref, filters=filters, client=client)

    async def detach_client(self, ref: str, client_id: str) -> None:
        """The original detachClient: end the client's subscription on this stream."""
        stream = self.streams.resolve(ref)
        client = stream.clients.get(client_id)
        if client is None:
            raise ClientNotFound(client_id)
        client.subscriptions[stream.id].close(CloseReason.UNSUBSCRIBED)

    # -- subscribing -------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def subscribe(
        self,
        ref: str,
        *,
        filters: Sequence[StreamFilter | Mapping[str, Any]] | None = None,
        since: int | None = None,
        epoch: str | None = None,
        client: ClientSession | None = None,
    ) -> AsyncIterator[Subscription]:
        """A subscription for the ``async with`` block; see :meth:`open_subscription`."""
        sub = await self.open_subscription(
            ref, filters=filters, since=since, epoch=epoch, client=client
        )
        try:
            yield sub
        finally:
            sub.close(CloseReason.UNSUBSCRIBED)

    async def open_subscription(
        self,
        ref: str,
        *,
        filters: Sequence[StreamFilter | Mapping[str, Any]] | None = None,
        since: int | None = None,
        epoch: str | None = None,
        client: ClientSession | None = None,
    ) -> Subscription:
        """Subscribe to a stream; the caller closes the subscription when done.

        Without ``since`` the subscription is live-only. With it, every retained event
        with seq > since that matches the filters comes first, then live events, with
        no gap and no duplicate (docs/protocol.md). ``recovered`` is False when some of the
        events asked for are no longer held, or ``epoch`` names another epoch (then the
        whole retained history is replayed). Subscribing to a closed stream hands out
        the requested history and then ends.
        """
        self._check_running()
        checked = self.check_filters(filters)
        if since is not None and (
            not isinstance(since, int) or isinstance(since, bool) or not 0 <= since <= MAX_SEQ
        ):
            raise InvalidInput.single("since", f"must be an integer from 0 to {MAX_SEQ}")
        stream = await self.streams.located(ref)
        await self.streams.follow(stream)
        if checked is None and stream.config.event_filters:
            checked = list(stream.config.event_filters)
        sub = Subscription(
            stream.id,
            stream.workflow_session_id,
            checked,
            stream.config.buffer_size,
            client,
            on_close=self._subscription_closed,
            max_queued_bytes=self.config.limits.max_queued_bytes,
        )
        self.streams.attach(stream, sub)
        # From here, every event published is pushed to ``sub``; history is read only up
        # to the position taken now, in the same step, so the two neither gap nor overlap.
        position = stream.last_seq
        sub.epoch, sub.last_seq = stream.epoch, position
        if since is None:
            sub.begin(position, position)
        else:
            try:
                await self._resume(stream, sub, since, epoch, position)
            except BaseException:
                sub.close(CloseReason.UNSUBSCRIBED)
                raise
        if not stream.is_open:
            sub.close(CloseReason.STREAM_CLOSED)
        return sub

    async def _resume(
        self, stream: Stream, sub: Subscription, since: int, epoch: str | None, position: int
    ) -> None:
        foreign = (epoch is not None and epoch != stream.epoch) or since > position
        start = 0 if foreign else since
        sub.begin(start, position)
        read = await self.storage.read_range(stream.id, start, position, sub.predicate)
        drop_views(read.records)
        sub.first_retained_seq = read.first_retained_seq
        sub.recovered = not foreign and (position <= start or read.first_retained_seq <= start + 1)
        sub.add_backlog(read.records)

    def check_filters(
        self, filters: Sequence[StreamFilter | Mapping[str, Any]] | None
    ) -> list[StreamFilter] | None:
        """``filters`` validated within ``limits`` (how many, and their expressions:
        ``INVALID_FILTER`` for one that is too long or does not compile)."""
        if filters is None:
            return None
        limits = self.config.limits
        if len(filters) > limits.max_filters:
            raise InvalidInput.single("filters", f"at most {limits.max_filters} filters allowed")
        try:
            checked = _filters_adapter.validate_python(list(filters))
        except ValidationError as exc:
            raise InvalidInput.from_pydantic(exc, prefix="filters") from None
        check_expressions(checked, limits.max_expression_length)
        return checked

    def _subscription_closed(self, sub: Subscription) -> None:
        self.streams.detach(sub)
        if sub.close_reason is CloseReason.FAILED and sub.client is not None:
            # Its transport failed: end the whole connection, which the client notices
            # and resumes from, rather than leave it open and silently missing a stream.
            self.clients.disconnect(sub.client.id, CloseReason.FAILED)
        if sub.close_reason is CloseReason.SLOW_CONSUMER:
            self.counters.slow_consumers += 1
            _log.warning(
                "slow_consumer_dropped",
                stream_id=sub.stream_id,
                client_id=sub.client.id if sub.client else None,
                delivered_seq=sub.delivered_seq,
            )

    # -- replay (the original specification's StreamReplay) ------------------------------

    async def replay_to_client(
        self,
        ref: str,
        client_id: str,
        spec: HistoryFilter | None = None,
        request_id: str | None = None,
    ) -> int:
        """Send history matching ``spec`` (and the client's filters) to a live client."""
        stream, sub = self._replay_target(ref, client_id)
        page = await self.history.query(stream.id, spec or HistoryFilter())
        return self._send_replay(sub, page.records, request_id)

    async def replay_from_timestamp(self, ref: str, client_id: str, timestamp: datetime) -> int:
        spec = HistoryFilter(start_time=timestamp, limit=MAX_HISTORY_LIMIT)
        return await self.replay_to_client(ref, client_id, spec)

    async def replay_last_events(self, ref: str, client_id: str, count: int) -> int:
        if not isinstance(count, int) or not 1 <= count <= MAX_HISTORY_LIMIT:
            raise InvalidInput.single("count", f"must be between 1 and {MAX_HISTORY_LIMIT}")
        stream, sub = self._replay_target(ref, client_id)
        return self._send_replay(sub, await self.storage.read_tail(stream.id, count))

    def _replay_target(self, ref: str, client_id: str) -> tuple[Stream, Subscription]:
        stream = self.streams.resolve(ref)
        if not stream.config.enable_replay:
            raise ReplayNotAllowed(f"replay is disabled for stream {ref!r} (enableReplay)")
        client = self.clients.get(client_id)
        if client.type is ClientType.HTTP_POLLING:
            raise ReplayNotAllowed("a polling client reads history instead of being replayed to")
        sub = client.subscriptions.get(stream.id)
        if sub is None:
            raise ClientNotFound(client_id)
        return stream, sub

    @staticmethod
    def _send_replay(
        sub: Subscription, records: list[EventRecord], request_id: str | None = None
    ) -> int:
        predicate = sub.predicate
        if predicate is not None:
            records = [r for r in records if predicate(r)]
            drop_views(records)
        sub.push_replay(records, request_id)
        return len(records)

    # -- upkeep ------------------------------------------------------------------------

    def _check_running(self) -> None:
        self.streams.check_running()

    async def _maintain(self) -> None:
        loop = asyncio.get_running_loop()
        next_retention = loop.time()
        next_sync = next_report = loop.time()
        # Until stopped, not only until cancelled: a Redis call cancelled at the wrong
        # moment can swallow the cancellation (a hub stopped right after starting on
        # Redis then waited for this loop forever).
        while not self._stopped:
            try:
                self.expire_idle_clients()
                await self.memory.maintain()
                if loop.time() >= next_sync:
                    next_sync = loop.time() + REGISTRY_SYNC_SECONDS
                    await self.streams.sync_registry()
                if self.all_hubs is not None and loop.time() >= next_report:
                    next_report = loop.time() + REPORT_SECONDS
                    await self.all_hubs.publish_report()
                if loop.time() >= next_retention:
                    next_retention = loop.time() + RETENTION_EVERY_SECONDS
                    removed = await self.history.apply_retention()
                    self.clients.forget_before(utc_now() - ACTIVITY_KEPT)
                    if removed:
                        _log.info("retention_applied", removed=removed)
            except Exception:
                _log.exception("maintenance_failed")
            await asyncio.sleep(self._maintenance_interval)

    def expire_idle_clients(self, now: float | None = None) -> list[str]:
        """Disconnect clients with no sign of life for ``server.idleClientTimeout``.

        The maintenance loop calls this every ``maintenance_interval`` seconds; ``now``
        (a ``time.monotonic()`` reading) lets a caller ask about another moment."""
        timeout = self.config.server.idle_client_timeout / 1000
        expired = [c.id for c in self.clients.idle(timeout, now)]
        for client_id in expired:
            self.clients.disconnect(client_id, CloseReason.IDLE)
            _log.info("idle_client_removed", client_id=client_id)
        return expired
