"""Streams and the stream manager (the original specification's IExecutorStreamerManager).

One stream per workflow session. Any stream reference accepts either the stream id
(``str_…``) or the workflow session id.

Status lifecycle::

    INITIALIZING ──first event──▶ ACTIVE ◀──▶ ERROR
         │                          │           │
         └──────────── close ───────┴───────────┴──▶ CLOSED ──re-create──▶ ACTIVE

A closed stream keeps its history readable and refuses publishes; re-creating it
reactivates it with its seq continuing. Purging removes it and its history, so a
later create starts over: new id, new epoch, seq from 1.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog
from pydantic import TypeAdapter, ValidationError

from ..config import ExecutorStreamerConfig, stream_config_problems
from ..errors import (
    FieldError,
    HubNotRunning,
    InvalidInput,
    InvalidStatusTransition,
    StreamNotFound,
    TooManyClients,
    TooManyStreams,
)
from ..history.base import HistoryStore, StreamState
from ..history.records import EventRecord, drop_views
from ..history.shared import SharedHistory
from ..types.base import utc_now
from ..types.enums import SessionStatus
from ..types.events import ErrorContext
from ..types.ids import new_epoch, new_stream_id
from ..types.json_values import JsonObject
from ..types.streams import ModuleSessionInfo, StreamConfig, StreamSession
from .clients import ClientSession, longest_parked
from .commands import CommandTracker
from .counters import StreamCounters
from .filters import check_expressions
from .lifecycle import LifecycleNotifier
from .other_hubs import AnnouncedChanges
from .subscription import CloseReason, Subscription
from .validation import check_metadata, validate_workflow_session_id

if TYPE_CHECKING:
    from .committer import PendingPublish

_log = structlog.get_logger("executor_streamer.streams")

_metadata_adapter = TypeAdapter(JsonObject)
_OPEN = frozenset({SessionStatus.INITIALIZING, SessionStatus.ACTIVE, SessionStatus.ERROR})
_ALLOWED = {
    SessionStatus.INITIALIZING: {SessionStatus.ACTIVE, SessionStatus.ERROR, SessionStatus.CLOSED},
    SessionStatus.ACTIVE: {SessionStatus.ERROR, SessionStatus.CLOSED},
    SessionStatus.ERROR: {SessionStatus.ACTIVE, SessionStatus.CLOSED},
    SessionStatus.CLOSED: {SessionStatus.ACTIVE},
}


class Stream:
    """The live state of one stream.

    A publish holds ``lock`` while it takes seqs and builds its records, then queues them
    for the group committer (``staged``) and lets go; the stream's ``last_seq``, command
    state and subscribers see the records once they are committed. Anything that must
    see every publish settled (closing, status changes, compaction) holds
    :meth:`exclusive`.
    """

    def __init__(
        self,
        workflow_session_id: str,
        config: StreamConfig,
        metadata: dict[str, Any],
        stream_id: str | None = None,
    ) -> None:
        self.id = stream_id or new_stream_id()
        self.workflow_session_id = workflow_session_id
        self.config = config
        self.metadata = metadata
        self.status = SessionStatus.INITIALIZING
        self.created_at = utc_now()
        self.last_activity = self.created_at
        self.epoch = new_epoch()
        self.last_seq = 0
        """The newest seq stored and delivered to subscribers."""
        self.lock = asyncio.Lock()
        self.commands = CommandTracker()
        """Running commands as of ``last_seq``."""
        self.staged: deque[PendingPublish] = deque()
        """Publishes built and queued for commit, oldest first."""
        self._settled: asyncio.Future[None] | None = None
        self.counters = StreamCounters()
        self.subscriptions: set[Subscription] = set()
        self.clients: dict[str, ClientSession] = {}
        self.withdrawn = False
        """Set when the publish that auto-created this stream failed and took it back."""
        self._last_timestamp = self.created_at

    @property
    def config(self) -> StreamConfig:
        return self._config

    @config.setter
    def config(self, config: StreamConfig) -> None:
        self._config = config
        # Every publish stores the stream's state; dumping the config each time cost
        # about a quarter of an in-process publish.
        self._config_dump = config.model_dump(mode="json", by_alias=False)

    @property
    def is_open(self) -> bool:
        return self.status in _OPEN

    @property
    def head_seq(self) -> int:
        """The newest seq taken: staged, or else stored."""
        return self.staged[-1].records[-1].seq if self.staged else self.last_seq

    @property
    def head_commands(self) -> CommandTracker:
        """Running commands once every staged publish is applied."""
        return self.staged[-1].commands if self.staged else self.commands

    async def settled(self) -> None:
        """Wait until every staged publish is committed or failed. With ``lock`` held,
        nothing is staged meanwhile, so afterwards ``staged`` is empty."""
        while self.staged:
            if self._settled is None or self._settled.done():
                self._settled = asyncio.get_running_loop().create_future()
            await self._settled

    def notify_settled(self) -> None:
        """Called by the committer when ``staged`` has become empty."""
        if self._settled is not None and not self._settled.done():
            self._settled.set_result(None)
        self._settled = None

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """Hold ``lock`` with no publish in flight."""
        async with self.lock:
            await self.settled()
            yield

    def next_timestamp(self) -> datetime:
        """Now, but never before the previous event: stamps in a stream never decrease."""
        self._last_timestamp = max(utc_now(), self._last_timestamp)
        return self._last_timestamp

    def deliver(self, records: Sequence[EventRecord], stamp: datetime | None = None) -> None:
        """Mark ``records`` stored and hand them to every subscriber, synchronously.
        ``stamp`` is the last one's timestamp, when the caller has it without parsing it."""
        self.last_seq = records[-1].seq
        self.last_activity = stamp or records[-1].event.timestamp
        if not self.subscriptions:
            return
        size = sum(len(r.payload) for r in records)  # once for every subscriber's budget
        for sub in list(self.subscriptions):
            sub.push(records, size)
        drop_views(records)

    def state(self, **changes: Any) -> StreamState:
        """What the backend keeps about this stream, with ``changes`` applied."""
        fields: dict[str, Any] = {
            "stream_id": self.id,
            "workflow_session_id": self.workflow_session_id,
            "status": self.status.value,
            "config": self._config_dump,
            "metadata": self.metadata,
            "epoch": self.epoch,
            "created_at": self.created_at,
            "last_activity": self.last_activity,
            "last_seq": self.last_seq,
        }
        fields.update(changes)
        if "running_commands" not in fields:
            fields["running_commands"] = self.commands.running()
        return StreamState(**fields)

    @classmethod
    def from_state(cls, state: StreamState) -> Stream:
        """A stream as it was when the backend last saved it (after a restart)."""
        stream = cls(
            state.workflow_session_id,
            StreamConfig.model_validate(state.config),
            state.metadata,
            state.stream_id,
        )
        stream.status = SessionStatus(state.status)
        stream.created_at = state.created_at
        stream.last_activity = state.last_activity
        stream.epoch = state.epoch
        stream.last_seq = state.last_seq
        stream.commands = CommandTracker(dict(state.running_commands))
        stream._last_timestamp = state.last_activity
        return stream

    def module_session(self) -> ModuleSessionInfo:
        return ModuleSessionInfo(**self._module_fields())

    def session(self) -> StreamSession:
        return StreamSession(
            **self._module_fields(),
            stream_id=self.id,
            is_active=self.is_open,
            clients=[c.info(self.id) for c in self.clients.values()],
            config=self.config,
            epoch=self.epoch,
            last_seq=self.last_seq,
        )

    def _module_fields(self) -> dict[str, Any]:
        return {
            "session_id": self.id,
            "linked_workflow_session_id": self.workflow_session_id,
            "status": self.status,
            "created_at": self.created_at,
            "last_activity": self.last_activity,
            "metadata": self.metadata,
        }


class StreamManager:
    """Creates, finds, closes and purges streams; attaches clients within limits."""

    def __init__(
        self, config: ExecutorStreamerConfig, storage: HistoryStore, notifier: LifecycleNotifier
    ) -> None:
        self._hub_config = config
        self.default_config = config.default_stream_config
        self._storage = storage
        self._notifier = notifier
        self._by_id: dict[str, Stream] = {}
        self._by_session: dict[str, Stream] = {}
        self._create_lock = asyncio.Lock()
        self.closings = 0
        """Streams closed so far: the memory budget looks for something to evict again
        only when this has changed."""
        self.running = False
        """Set by the hub between start() and stop(); nothing is accepted outside that."""
        self.shared: SharedHistory | None = storage if isinstance(storage, SharedHistory) else None
        """Set when other hub processes share the backend (docs/multi-node.md)."""
        self._remote = AnnouncedChanges(self) if self.shared is not None else None

    async def load(self) -> int:
        """Take up every stream the backend kept (a durable backend after a restart, or
        what other hubs registered on a shared one)."""
        if self._remote is not None:
            assert self.shared is not None
            self.shared.registry.watch_changes(self._remote)
        for state in await self._storage.load_streams():
            await self.adopt(state)
        return len(self._by_id)

    async def adopt(self, state: StreamState) -> Stream:
        """Hold ``state`` as a local stream (loaded, or made by another hub)."""
        known = self._by_id.get(state.stream_id)
        if known is not None:
            return known
        stream = Stream.from_state(state)
        await self._storage.open_stream(stream.id, stream.config)
        known = self._by_id.get(state.stream_id)  # adopted meanwhile
        if known is not None:
            return known
        previous = self._by_session.get(stream.workflow_session_id)
        if previous is not None:  # purged and made again elsewhere
            self.forget(previous)
        self._by_id[stream.id] = stream
        self._by_session[stream.workflow_session_id] = stream
        return stream

    async def discover(self, ref: str) -> Stream | None:
        """:meth:`find`, and on a shared backend also a stream another hub made."""
        stream = self.find(ref)
        if stream is not None or self.shared is None:
            return stream
        state = await self.shared.registry.lookup(ref)
        return None if state is None else await self.adopt(state)

    async def located(self, ref: str) -> Stream:
        """:meth:`resolve` after :meth:`discover`."""
        stream = await self.discover(ref)
        if stream is None:
            raise StreamNotFound(ref)
        return stream

    async def refreshed(self, ref: str) -> Stream:
        """:meth:`located`, its state read again from a shared backend (its top seq moves
        with every hub's publishes)."""
        stream = await self.located(ref)
        if self._remote is not None:
            assert self.shared is not None
            state = await self.shared.registry.lookup(stream.id)
            if state is not None:
                self._remote.refresh(stream, state)
        return stream

    async def sync_registry(self) -> None:
        """Bring the local registry up to the shared one: streams other hubs made, and
        the state of streams whose changes this hub did not hear (a lost message). And
        the other way: streams this hub knows that the shared registry lost are entered
        again (on a Redis Cluster, the registry and a stream live on different nodes,
        and one can lose its data without the other)."""
        if self._remote is None:
            return
        assert self.shared is not None
        listed = await self._storage.load_streams()
        for state in listed:
            stream = self._by_id.get(state.stream_id)
            if stream is None:
                await self.adopt(state)
            else:
                self._remote.refresh(stream, state)
        known = {state.stream_id for state in listed}
        lost = [(s.id, s.workflow_session_id) for s in self._by_id.values() if s.id not in known]
        if lost:
            await self.shared.registry.restore_registry(lost)

    async def follow(self, stream: Stream) -> None:
        """On a shared backend, have the stream's events delivered here (before a local
        subscriber takes its position); nothing to do otherwise."""
        if self._remote is not None:
            assert self.shared is not None
            await self.shared.follow(stream.id, self._remote.target(stream))

    def forget(self, stream: Stream) -> None:
        """Drop a stream another hub purged (or made again) from this hub's registry."""
        for sub in list(stream.subscriptions):
            sub.close(CloseReason.STREAM_CLOSED)
        self._by_id.pop(stream.id, None)
        if self._by_session.get(stream.workflow_session_id) is stream:
            del self._by_session[stream.workflow_session_id]

    def check_running(self) -> None:
        if not self.running:
            raise HubNotRunning("the hub is not running: call start() first")

    def __iter__(self) -> Iterator[Stream]:
        return iter(list(self._by_id.values()))

    def __len__(self) -> int:
        return len(self._by_id)

    def find(self, ref: str) -> Stream | None:
        return self._by_id.get(ref) or self._by_session.get(ref)

    def resolve(self, ref: str) -> Stream:
        stream = self.find(ref)
        if stream is None:
            raise StreamNotFound(ref)
        return stream

    async def ensure_stream(
        self,
        workflow_session_id: str,
        config: StreamConfig | dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
        stream_id: str | None = None,
    ) -> tuple[Stream, bool]:
        """The workflow session's stream, created if needed; True if it was created.

        Idempotent: an open stream is returned as it is; a CLOSED one is reactivated with
        its seq continuing (``config`` and ``metadata`` then apply to it). A new stream
        gets ``stream_id`` if given. On a shared backend, a stream another hub made for
        the session is the one returned.
        """
        validate_workflow_session_id(workflow_session_id)
        if metadata is not None:
            metadata = self._checked_metadata(metadata)
        stream = await self.discover(workflow_session_id)
        if stream is not None and stream.is_open:
            return stream, False
        resolved = self._resolve_config(config)
        # Opening storage may suspend; without the lock two first publishes to a new
        # session could each create a stream for it.
        async with self._create_lock:
            return await self._create_or_reopen(workflow_session_id, resolved, metadata, stream_id)

    async def _create_or_reopen(
        self,
        workflow_session_id: str,
        resolved: StreamConfig,
        metadata: dict[str, Any] | None,
        stream_id: str | None,
    ) -> tuple[Stream, bool]:
        stream = self._by_session.get(workflow_session_id)
        if stream is not None and stream.is_open:
            return stream, False
        self._check_room()
        if stream is not None:
            stream.config = resolved
            if metadata is not None:
                stream.metadata = dict(metadata)
            await self._storage.open_stream(stream.id, resolved)
            await self._storage.save_stream(stream.state(status=SessionStatus.ACTIVE.value))
            self._set_status(stream, SessionStatus.ACTIVE)
            await self._announce(stream, status=SessionStatus.ACTIVE.value)
            return stream, False
        stream = Stream(workflow_session_id, resolved, dict(metadata or {}), stream_id)
        await self._storage.open_stream(stream.id, resolved)
        if self.shared is not None:
            state = await self.shared.registry.register(stream.state())
            if state.stream_id != stream.id:  # another hub made it first
                return await self.adopt(state), False
        else:
            await self._storage.save_stream(stream.state())
        self._by_id[stream.id] = stream
        self._by_session[workflow_session_id] = stream
        self._notifier.created(workflow_session_id, stream.id)
        _log.info("stream_created", session_id=workflow_session_id, stream_id=stream.id)
        return stream, True

    def _check_room(self) -> None:
        """``limits.maxStreams``: one more ACTIVE stream must fit. Counted when a stream
        is made or reopened, never per publish (at most 10,000 streams by default; a
        shared backend's streams count once this hub holds them)."""
        limit = self._hub_config.limits.max_streams
        if sum(1 for s in self._by_id.values() if s.is_open) >= limit:
            raise TooManyStreams(
                f"the hub already holds {limit} active streams (limits.maxStreams): "
                "close or purge one first"
            )

    def get_stream(self, ref: str) -> StreamSession | None:
        stream = self.find(ref)
        return None if stream is None else stream.session()

    def stream_exists(self, ref: str) -> bool:
        return self.find(ref) is not None

    def list_active_streams(self) -> list[str]:
        """Ids of every open stream."""
        return [s.id for s in self._by_id.values() if s.is_open]

    async def destroy_stream(self, ref: str, purge: bool = False) -> None:
        """Close the stream (subscribers end with STREAM_CLOSED); ``purge`` also forgets it
        and its history entirely."""
        stream = await self.located(ref)
        async with stream.exclusive():  # let publishes in progress finish first
            if stream.status is not SessionStatus.CLOSED:
                if not purge:
                    await self._storage.save_stream(stream.state(status=SessionStatus.CLOSED.value))
                self._set_status(stream, SessionStatus.CLOSED)
            if self._remote is not None and not purge:
                await self._remote.caught_up(stream)  # others' last events reach local subscribers
            for sub in list(stream.subscriptions):
                sub.close(CloseReason.STREAM_CLOSED)
            if purge:
                del self._by_id[stream.id]
                del self._by_session[stream.workflow_session_id]
                await self._storage.drop_stream(stream.id)
                self._notifier.destroyed(stream.workflow_session_id)
                _log.info("stream_purged", session_id=stream.workflow_session_id)
                await self._announce(stream, purged=True)
            else:
                await self._announce(stream, status=SessionStatus.CLOSED.value)

    async def withdraw(self, stream: Stream) -> None:
        """Undo an auto-create whose first publish failed, if nothing uses the stream yet.

        The caller holds ``stream.lock``; a publisher waiting on it finds ``withdrawn``
        set and looks the session up again.
        """
        await stream.settled()  # another publisher may have staged into it meanwhile
        if stream.last_seq or stream.subscriptions or self._by_id.get(stream.id) is not stream:
            return
        del self._by_id[stream.id]
        del self._by_session[stream.workflow_session_id]
        stream.withdrawn = True
        await self._storage.drop_stream(stream.id)
        self._notifier.destroyed(stream.workflow_session_id)

    async def update_status(
        self, ref: str, status: SessionStatus, error: ErrorContext | None = None
    ) -> None:
        """Move a stream along the lifecycle; closing goes through :meth:`destroy_stream`."""
        stream = await self.located(ref)
        async with stream.exclusive():  # a staged publish carries the status it saw
            if status is SessionStatus.CLOSED or stream.status is SessionStatus.CLOSED:
                raise InvalidStatusTransition(
                    "streams are closed with destroy_stream and reopened with create_stream",
                    {"from": stream.status, "to": status},
                )
            if status is not stream.status:
                if status not in _ALLOWED[stream.status]:
                    raise InvalidStatusTransition(
                        f"a {stream.status} stream cannot become {status}",
                        {"from": stream.status, "to": status},
                    )
                await self._storage.save_stream(stream.state(status=status.value))
                self._set_status(stream, status)
                await self._announce(stream, status=status.value)
        if status is SessionStatus.ERROR and error is not None:
            self._notifier.errored(stream.workflow_session_id, error)

    async def _announce(self, stream: Stream, **change: Any) -> None:
        """Tell the other hubs sharing the backend; config and metadata go along."""
        if self.shared is not None:
            change.setdefault("config", stream.state().config)
            change.setdefault("metadata", stream.metadata)
            await self.shared.registry.announce(stream.id, change)

    def mark_active(self, stream: Stream) -> None:
        """The first event moves a new stream from INITIALIZING to ACTIVE."""
        if stream.status is SessionStatus.INITIALIZING:
            self._set_status(stream, SessionStatus.ACTIVE)

    def attach(self, stream: Stream, sub: Subscription) -> None:
        """Register a subscription; a client's counts against ``maxClients``."""
        client = sub.client
        if client is not None:
            if client.id not in stream.clients and len(stream.clients) >= stream.config.max_clients:
                parked = longest_parked(stream.clients.values())
                if parked is None:
                    raise TooManyClients(
                        f"stream {stream.workflow_session_id!r} already has "
                        f"{stream.config.max_clients} clients (maxClients)",
                        {"stream": stream.id},
                    )
                parked.subscriptions[stream.id].close(CloseReason.EVICTED)
            previous = client.subscriptions.get(stream.id)
            if previous is not None:
                previous.close(CloseReason.UNSUBSCRIBED)
            stream.clients[client.id] = client
            client.subscriptions[stream.id] = sub
            client.stream_ids.add(stream.id)
            self._notifier.client_attached(stream.id, client.info(stream.id))
        stream.subscriptions.add(sub)

    def detach(self, sub: Subscription) -> None:
        """Forget a closed subscription; called from ``Subscription.close``."""
        stream = self._by_id.get(sub.stream_id)
        if stream is not None:
            stream.subscriptions.discard(sub)
        client = sub.client
        if client is not None and client.subscriptions.get(sub.stream_id) is sub:
            del client.subscriptions[sub.stream_id]
            if stream is not None:
                stream.clients.pop(client.id, None)
            self._notifier.client_detached(sub.stream_id, client.id)

    def _resolve_config(self, config: StreamConfig | dict[str, Any] | None) -> StreamConfig:
        if isinstance(config, StreamConfig):
            resolved = config
        else:
            try:
                resolved = self.default_config.merged(config)
            except ValidationError as exc:
                raise InvalidInput.from_pydantic(exc, prefix="config") from None
        problems = stream_config_problems(self._hub_config, resolved)
        if problems:
            raise InvalidInput([FieldError(f"config.{key}", why) for key, why in problems])
        check_expressions(resolved.event_filters, max_length=None)  # INVALID_FILTER
        return resolved

    def _checked_metadata(self, metadata: dict[str, Any]) -> dict[str, Any]:
        try:
            checked: dict[str, Any] = _metadata_adapter.validate_python(metadata)
        except ValidationError as exc:
            raise InvalidInput.from_pydantic(exc, prefix="metadata") from None
        check_metadata(checked, self._hub_config.limits)
        return checked

    def _set_status(self, stream: Stream, status: SessionStatus) -> None:
        old = stream.status
        if status not in _ALLOWED[old]:
            raise InvalidStatusTransition(
                f"a {old} stream cannot become {status}", {"from": old, "to": status}
            )
        stream.status = status
        if status is SessionStatus.CLOSED:
            self.closings += 1
        stream.last_activity = utc_now()
        self._notifier.status_changed(stream.workflow_session_id, old, status)

    def record_activity(self, ref: str) -> None:
        self.resolve(ref).last_activity = utc_now()
