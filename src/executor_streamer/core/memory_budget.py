"""``limits.maxMemoryBytes``: one budget for what the hub keeps in memory.

What counts: the history, screenshots and streams the storage backend keeps in the hub's
own memory (the memory backend's; a durable backend keeps none), the events queued for
subscribers, and the results of recent publishes kept for their idempotency keys. Past
:data:`EVICT_FROM` of the budget, the CLOSED streams whose history is held here are
evicted, least recently active first, until the use is back under :data:`EVICT_TO`; an
evicted stream gets a new epoch, so a client resuming it learns ``recovered: false``
rather than missing events silently. If that is not enough and the store keeps streams
only in memory (the memory backend), the closed streams themselves are forgotten next,
least recently active first, each ~4 KiB (``history.memory.STREAM_OVERHEAD``): runs that
come and go all day stay within the budget. Open streams are never evicted: with nothing
left to evict, a publish at the budget is refused (503 ``MEMORY_PRESSURE``), while
subscribers, history reads and health checks go on.

The publish path reads one integer and compares it (:meth:`MemoryBudget.admit`); queued
bytes are summed once a second by the maintenance loop, never per event.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog

from ..errors import MemoryPressure
from ..history.base import HistoryStore
from ..types.enums import SessionStatus
from ..types.ids import new_epoch
from .idempotency import RecentPublishes
from .streams import Stream, StreamManager

EVICT_FROM = 0.9
EVICT_TO = 0.8
RETRY_AFTER_SECONDS = 5

_log = structlog.get_logger("executor_streamer.memory")


class MemoryBudget:
    def __init__(
        self,
        limit: int,
        storage: HistoryStore,
        streams: StreamManager,
        recent: RecentPublishes,
    ) -> None:
        self.limit = limit
        self.recent = recent
        """Results kept for idempotency keys: the publisher's, counted here."""
        self._storage = storage
        # A store of the application's own may predate the methods: it holds nothing here.
        self._held = getattr(storage, "held_in_memory", lambda: 0)
        self._evict = getattr(storage, "evict", None)
        self._forgets = bool(getattr(storage, "streams_in_memory", False))
        self._streams = streams
        self.queued_bytes = 0
        """Bytes queued for subscribers at the last :meth:`maintain`."""
        self.evicted_streams = 0
        self.forgotten_streams = 0
        self.refused_publishes = 0
        self._searched_at_closings = -1
        """``streams.closings`` when a search last found nothing to evict: until another
        stream closes, a publish at the budget is refused without searching again (a
        refusal stays cheap under a flood)."""

    @property
    def history_bytes(self) -> int:
        return self._held()

    @property
    def used(self) -> int:
        return self._held() + self.queued_bytes + self.recent.held_bytes

    async def admit(self) -> None:
        """Before a publish: evict if the budget is spent, and refuse if that frees nothing."""
        if self.used < self.limit:
            return
        closings = self._streams.closings  # before: a stream closed meanwhile is searched
        if closings != self._searched_at_closings:
            await self.evict()
            if self.used < self.limit:
                return
            self._searched_at_closings = closings
        self.refused_publishes += 1
        raise MemoryPressure(
            f"the hub's memory budget ({self.limit} bytes, limits.maxMemoryBytes) is spent "
            "and no closed stream is left to evict: retry later",
            RETRY_AFTER_SECONDS,
        )

    async def maintain(self) -> None:
        """Once a second: count queued bytes, forget expired idempotency results, and
        evict past :data:`EVICT_FROM`."""
        self.recent.expire()
        # Subscribers of a stream queue the same records (one object each, shared with
        # the history): counted once per stream, as its longest queue.
        self.queued_bytes = sum(
            max((sub.queued_bytes for sub in stream.subscriptions), default=0)
            for stream in self._streams
        )
        if self.used > self.limit * EVICT_FROM:
            await self.evict()

    async def evict(self) -> None:
        """Evict CLOSED streams' history, least recently active first, down to
        :data:`EVICT_TO` of the budget; then, where the store allows, forget them."""
        target = int(self.limit * EVICT_TO)
        closed = sorted(
            (s for s in self._streams if s.status is SessionStatus.CLOSED),
            key=lambda s: s.last_activity,
        )
        await self._release(closed, target, self._evict_history)
        if self._forgets and self.used > target:
            # Every closed stream's history is gone by now (the pass above stops only
            # under the target): forget the streams, least recently active first.
            await self._release(closed, target, self._forget)

    async def _release(
        self, closed: list[Stream], target: int, release: Callable[[Stream], Awaitable[None]]
    ) -> None:
        """``release`` closed streams, in order, until the use is down to ``target``."""
        for stream in closed:
            if self.used <= target:
                break
            async with stream.exclusive():
                if stream.status is SessionStatus.CLOSED:  # not reopened meanwhile
                    await release(stream)

    async def _evict_history(self, stream: Stream) -> None:
        released = 0 if self._evict is None else await self._evict(stream.id)
        if not released:
            return
        # The history is gone: a new epoch tells a resuming client so.
        stream.epoch = new_epoch()
        await self._storage.save_stream(stream.state())
        self.evicted_streams += 1
        _log.info(
            "stream_history_evicted",
            session_id=stream.workflow_session_id,
            freed_bytes=released,
            used_bytes=self.used,
            limit_bytes=self.limit,
        )

    async def _forget(self, stream: Stream) -> None:
        if self._streams.find(stream.id) is not stream:
            return  # purged meanwhile
        self._streams.forget(stream)
        await self._storage.drop_stream(stream.id)
        self.forgotten_streams += 1
        _log.info("stream_forgotten", session_id=stream.workflow_session_id)
