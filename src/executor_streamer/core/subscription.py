"""One subscriber's view of one stream (docs/protocol.md, docs/architecture.md).

A subscription is registered with its stream *before* the history it resumes from is
read, and the read is bounded by the stream's last delivered seq at that moment.
Live events after that seq queue up while the history is read, so the subscriber sees
history then live with no gap; a seq guard drops anything at or below what it has
already been given, so it sees no duplicate either.

Live events wait in a queue bounded by the stream's ``bufferSize`` (resumed history
waits apart and does not count: it is bounded by the history itself). When a live
event arrives and the queue is full, the subscription ends with ``SLOW_CONSUMER``: what was
queued is still handed out, then iteration raises :class:`SlowConsumer` carrying the
last seq delivered, from which the subscriber resumes without loss. One slow consumer
therefore never holds the stream or anyone else back.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Self, cast

import structlog

from ..errors import SlowConsumer
from ..history.records import EventRecord, Predicate
from ..types.events import StreamEvent
from ..types.filters import StreamFilter
from .filters import compile_filters

if TYPE_CHECKING:
    from .clients import ClientSession

_log = structlog.get_logger("executor_streamer.subscription")


class CloseReason(StrEnum):
    UNSUBSCRIBED = "UNSUBSCRIBED"
    """The subscriber (or its client) ended it."""
    STREAM_CLOSED = "STREAM_CLOSED"
    SLOW_CONSUMER = "SLOW_CONSUMER"
    DISCONNECTED = "DISCONNECTED"
    """An operator disconnected the client."""
    IDLE = "IDLE"
    """The client showed no sign of life for ``server.idleClientTimeout``."""
    SHUTDOWN = "SHUTDOWN"
    EVICTED = "EVICTED"
    """A polling client between polls gave its place to a new client (``maxClients``,
    ``maxConnections``); its next poll resumes from its ``since`` as usual."""
    EXPIRED = "EXPIRED"
    """The client's credential expired and was not refreshed (docs/security.md)."""
    RESET = "RESET"
    """The stream's history began again in a new epoch (a shared Redis lost its data):
    positions held mean nothing now, so the client resumes and learns ``recovered: false``."""
    FAILED = "FAILED"
    """The transport's code raised while the hub called it (``on_ready``, ``on_disconnect``):
    the hub ends that client rather than let the fault reach publishers or other clients."""


@dataclass(frozen=True, slots=True)
class ReplayBatch:
    """Events replayed on request; they may repeat seqs the subscriber already has."""

    records: list[EventRecord]
    request_id: str | None = None
    """Echoed by transports when they report the replay done."""

    @property
    def last_seq(self) -> int:
        return self.records[-1].seq if self.records else 0


SubscriptionItem = EventRecord | ReplayBatch


def _item_bytes(item: SubscriptionItem) -> int:
    if isinstance(item, EventRecord):
        return len(item.payload)
    return sum(len(r.payload) for r in item.records)


def flatten(items: Sequence[SubscriptionItem]) -> list[EventRecord]:
    """Queued items as records in order, replays expanded in place."""
    out: list[EventRecord] = []
    for item in items:
        if isinstance(item, EventRecord):
            out.append(item)
        else:
            out.extend(item.records)
    return out


class Subscription:
    """Iterate it (``async for event in sub``) to get StreamEvents, resumed then live.

    Transports use :meth:`next_item` and :meth:`drain` instead, to get records (with
    their serialized payload) and replay batches, and to coalesce what is queued into
    one write.
    """

    def __init__(
        self,
        stream_id: str,
        workflow_session_id: str,
        filters: Sequence[StreamFilter] | None,
        buffer_size: int,
        client: ClientSession | None = None,
        on_close: Callable[[Subscription], None] | None = None,
        max_queued_bytes: int | None = None,
    ) -> None:
        self.stream_id = stream_id
        self.workflow_session_id = workflow_session_id
        self.client = client
        self.filters: list[StreamFilter] = list(filters or [])
        self._predicate: Predicate | None = compile_filters(self.filters)
        self._buffer_size = buffer_size
        # Resumed history, handed out first; newest first, so the oldest pops off the end
        # (a list: most subscriptions never resume, and an empty deque is ~600 bytes).
        self._backlog: list[EventRecord] = []
        # Live events and replays, bounded by bufferSize. A list: it is drained whole,
        # and an empty deque costs ~600 bytes for each of thousands of idle subscribers.
        self._queue: list[SubscriptionItem] = []
        self._replays = 0  # replay batches in _queue: with none, it holds only records
        # No budget is a budget no queue reaches: one comparison per push either way.
        self._max_bytes = sys.maxsize if max_queued_bytes is None else max_queued_bytes
        self.queued_bytes = 0
        """Payload bytes of the live events and replays queued now (resumed history is
        bounded by the history itself and does not count). Past ``max_queued_bytes`` the
        subscription ends as a slow consumer, like one past ``bufferSize`` events."""
        self._position = 0  # highest seq offered to this subscriber: the duplicate guard
        # A replay batch being iterated; a list (reversed), not a deque: an empty deque
        # is ~600 bytes, and most subscriptions are never iterated at all.
        self._replaying: list[StreamEvent] = []
        self._waiter: asyncio.Future[None] | None = None
        self._on_close = on_close
        self.on_ready: Callable[[Subscription], None] | None = None
        """Called (synchronously) when items arrive with nothing queued before them, and
        when the subscription closes; lets one writer task watch several subscriptions.
        A consumer drains until ``pending`` is 0 before it waits again.

        It runs inside fan-out, in the middle of delivering a commit to every subscriber
        of the stream: it must not block, and it should not raise. If it raises, the
        error is logged, the callback is dropped and the subscription ends with
        ``FAILED`` (the hub then disconnects its client); publishing, acknowledgements
        and every other subscriber go on."""
        self.close_reason: CloseReason | None = None
        self.recovered = True
        """False when events this subscriber asked to resume from were no longer held."""
        self.epoch = ""
        self.last_seq = 0
        """The stream's last seq when this subscription started."""
        self.first_retained_seq = 1
        self.delivered_seq = 0
        """Seq of the last resumed or live event handed out: where to resume from."""

    # -- called by the hub -------------------------------------------------------------

    def begin(self, since: int, position: int) -> None:
        """Live delivery starts after ``position``; history in ``(since, position]`` is
        read separately and handed in through :meth:`add_backlog`."""
        self.delivered_seq = since
        self._position = position

    def add_backlog(self, records: Sequence[EventRecord]) -> None:
        """Queue resumed history ahead of live events (which are all newer)."""
        backlog = [r for r in reversed(records) if r.seq > self.delivered_seq]
        if backlog:
            self._backlog[:0] = backlog  # behind what is already queued: these are newer
            self._wake()

    def push(self, records: Sequence[EventRecord], size: int | None = None) -> None:
        """Offer newly published records; called synchronously by fan-out. ``size`` is
        their payloads' total length, when the caller has it (fan-out counts it once)."""
        if self.close_reason is not None:
            return
        predicate = self._predicate
        queue = self._queue
        # A consumer only ever waits with nothing queued, so only the first item after
        # that needs to wake it: under load the hundred subscribers of a stream take new
        # events without a wake-up each.
        was_empty = not queue and not self._backlog
        if (
            predicate is None
            and records
            and records[0].seq > self._position
            and len(queue) + len(records) <= self._buffer_size
        ):
            # Under load, nearly every push: all new, unfiltered, with room for all.
            if size is None:
                size = sum(len(r.payload) for r in records)
            queued = self.queued_bytes + size
            if queued > self._max_bytes:  # _room_for, inlined: this runs per delivery
                self.close(CloseReason.SLOW_CONSUMER)
                return
            queue.extend(records)
            self.queued_bytes = queued
            self._position = records[-1].seq
            if was_empty:
                self._wake()
            return
        added = False
        for record in records:
            seq = record.seq
            if seq <= self._position:
                continue
            self._position = seq
            if predicate is not None and not predicate(record):
                continue
            if len(queue) >= self._buffer_size or not self._room_for(len(record.payload)):
                self.close(CloseReason.SLOW_CONSUMER)
                return
            queue.append(record)
            self.queued_bytes += len(record.payload)
            added = True
        if added and was_empty:
            self._wake()

    def push_replay(self, records: list[EventRecord], request_id: str | None = None) -> None:
        """Queue a replay; it counts against ``max_queued_bytes`` like live events."""
        if self.close_reason is not None:
            return
        size = sum(len(r.payload) for r in records)
        if not self._room_for(size):
            return
        self._queue.append(ReplayBatch(records, request_id))
        self.queued_bytes += size
        self._replays += 1
        self._wake()

    def _room_for(self, size: int) -> bool:
        """Whether ``size`` more bytes fit the budget; if not, the subscription ends."""
        if self.queued_bytes + size > self._max_bytes:
            self.close(CloseReason.SLOW_CONSUMER)
            return False
        return True

    def close(self, reason: CloseReason) -> None:
        """End the subscription; queued items are still handed out, then iteration stops."""
        if self.close_reason is not None:
            return
        self.close_reason = reason
        self._wake()
        if self._on_close is not None:
            self._on_close(self)

    def set_filters(self, filters: Sequence[StreamFilter] | None) -> None:
        """Apply new filters to events published from now on."""
        self.filters = list(filters or [])
        self._predicate = compile_filters(self.filters)

    # -- called by the consumer --------------------------------------------------------

    @property
    def predicate(self) -> Predicate | None:
        """The compiled filters; None when every event matches."""
        return self._predicate

    @property
    def closed(self) -> bool:
        return self.close_reason is not None

    @property
    def pending(self) -> int:
        return len(self._backlog) + len(self._queue)

    def drain_live(self) -> list[EventRecord] | None:
        """Everything queued now, if it is all events (no replay batch among them), taken
        without looking at each one; None when a replay batch is queued (use
        :meth:`drain`). Transports call it for every client on every flush."""
        if self._replays:
            return None
        if self._backlog:
            items = self._backlog[::-1] + self._queue
            self._backlog = []
        else:
            items = self._queue
        self._queue = []
        self.queued_bytes = 0
        records = cast(list[EventRecord], items)
        if records:
            self._handed_out(records[-1].seq, len(records))
        return records

    def drain_records(self) -> list[EventRecord]:
        """Everything queued now as records, replay batches expanded in place."""
        live = self.drain_live()
        return live if live is not None else flatten(self.drain())

    def drain(self, limit: int | None = None) -> list[SubscriptionItem]:
        """What is queued now (at most ``limit`` items), without waiting."""
        items: list[SubscriptionItem] = []
        backlog = self._backlog
        while backlog and (limit is None or len(items) < limit):
            items.append(backlog.pop())
        room = None if limit is None else limit - len(items)
        if room is None or room >= len(self._queue):
            items += self._queue
            self._queue = []
            self.queued_bytes = 0
        elif room > 0:
            taken = self._queue[:room]
            del self._queue[:room]
            items += taken
            self.queued_bytes -= sum(map(_item_bytes, taken))
        if self._replays:
            self._replays = sum(isinstance(item, ReplayBatch) for item in self._queue)
        self._count(items)
        return items

    @property
    def resume_position(self) -> int:
        """Where a consumer that has taken everything handed out so far stands: past
        events the filters skipped too, once nothing is left queued."""
        if self._backlog or self._queue:
            return self.delivered_seq
        return max(self.delivered_seq, self._position)

    async def next_item(self) -> SubscriptionItem | None:
        """The next item, waiting for one; None once closed and empty."""
        while not (self._backlog or self._queue):
            if self.close_reason is not None:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self._backlog:
            item: SubscriptionItem = self._backlog.pop()
        else:
            item = self._queue.pop(0)
            self.queued_bytes -= _item_bytes(item)
        if isinstance(item, ReplayBatch):
            self._replays -= 1
        self._count((item,))
        return item

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> StreamEvent:
        """The next event. Ends when the subscription closes (see ``close_reason``);
        raises :class:`SlowConsumer` if it ended because the consumer fell behind."""
        while not self._replaying:
            item = await self.next_item()
            if item is None:
                if self.close_reason is CloseReason.SLOW_CONSUMER:
                    raise SlowConsumer(self.delivered_seq)
                raise StopAsyncIteration
            if isinstance(item, EventRecord):
                return item.event
            self._replaying.extend(r.event for r in reversed(item.records))
        return self._replaying.pop()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        callback = self.on_ready
        if callback is None:
            return
        try:
            callback(self)
        except Exception:
            # Transport code failed: contain it to its own client (see ``on_ready``).
            _log.exception("subscriber_callback_failed", stream_id=self.stream_id)
            self.on_ready = None
            self.close(CloseReason.FAILED)

    def _count(self, items: Sequence[SubscriptionItem]) -> None:
        last_live: int | None = None
        received = 0
        for item in items:
            if isinstance(item, EventRecord):
                last_live = item.seq
                received += 1
            else:
                received += len(item.records)
        self._handed_out(last_live, received)

    def _handed_out(self, last_live: int | None, received: int) -> None:
        """Book events handed to the consumer: resumed and live ones move the resume
        position (requested replays do not); all count as received by the client."""
        if last_live is not None:
            self.delivered_seq = last_live
        if self.client is not None:
            self.client.events_received += received
