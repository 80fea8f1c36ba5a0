"""Reading and maintaining stream history (the original StreamHistory; docs/rest.md)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta

from ..errors import InvalidInput, ScreenshotNotFound
from ..history.base import HistoryPage, HistoryStore, StoredScreenshot
from ..history.records import EventRecord
from ..types.base import utc_now
from ..types.enums import StreamEventType
from ..types.events import StreamEvent
from ..types.filters import MAX_HISTORY_LIMIT, HistoryFilter
from .expressions import MAX_EXPRESSION_LENGTH, compile_expression
from .streams import StreamManager

EVALUATED_PER_TURN = 256
"""Events an expression is evaluated on before other tasks get a turn (a few ms)."""


class StreamHistory:
    """History queries over whichever backend the hub has. Every ``ref`` is a stream id
    or a workflow session id; the history of a closed stream stays readable."""

    def __init__(
        self,
        streams: StreamManager,
        storage: HistoryStore,
        max_expression_length: int = MAX_EXPRESSION_LENGTH,
    ) -> None:
        self._streams = streams
        self._storage = storage
        self._max_expression_length = max_expression_length

    async def get_events(self, ref: str, spec: HistoryFilter | None = None) -> HistoryPage:
        """Matching events ascending by seq, one page of them, and how many match in all."""
        stream = await self._streams.located(ref)
        return await self.query(stream.id, spec or HistoryFilter())

    async def query(self, stream_id: str, spec: HistoryFilter) -> HistoryPage:
        """The backend's answer to ``spec``; with an expression, the backend answers the
        rest of the filter and the expression is evaluated on what it returns
        (:meth:`_matching`), to the end of the history, which ``total`` needs."""
        if spec.expression is None:
            return await self._storage.query(stream_id, spec)
        first, last = spec.offset, spec.offset + spec.limit
        page: list[EventRecord] = []
        total = 0
        async for record in self._matching(stream_id, spec):
            if first <= total < last:
                page.append(record)
            total += 1
        return HistoryPage(page, total)

    async def _matching(self, stream_id: str, spec: HistoryFilter) -> AsyncIterator[EventRecord]:
        """Events that match ``spec``, its expression included, ascending by seq from its
        ``after_seq``: read a page of :data:`MAX_HISTORY_LIMIT` at a time, other tasks
        getting a turn every :data:`EVALUATED_PER_TURN` evaluations. Ignores offset and
        limit. What the expression saw of each event is let go once it has answered."""
        test = None
        if spec.expression is not None:
            test = compile_expression(spec.expression, self._max_expression_length).matches
        rest = spec.model_copy(update={"expression": None, "offset": 0, "limit": MAX_HISTORY_LIMIT})
        after = spec.after_seq
        while True:
            window = rest.model_copy(update={"after_seq": after})
            read = await self._storage.query(stream_id, window)
            for index, record in enumerate(read.records, 1):
                if index % EVALUATED_PER_TURN == 0:
                    await asyncio.sleep(0)
                if test is not None:
                    matched = test(record)
                    record.view = None  # as drop_views: only the answer was needed
                    if not matched:
                        continue
                yield record
            if len(read.records) < MAX_HISTORY_LIMIT:
                return
            after = read.records[-1].seq

    async def get_all_events(
        self, ref: str, spec: HistoryFilter | None = None
    ) -> list[StreamEvent]:
        """Every matching event, however many pages that takes: read once from the start,
        page after page by seq (results ascend by seq), with no count of the rest."""
        spec = spec or HistoryFilter()
        stream = await self._streams.located(ref)
        events: list[StreamEvent] = []
        skip = spec.offset
        async for record in self._matching(stream.id, spec):
            if skip:
                skip -= 1
                continue
            events.append(record.event)
        return events

    async def get_events_by_time_range(
        self, ref: str, start: datetime, end: datetime
    ) -> list[StreamEvent]:
        """Events stamped within ``[start, end]`` (inclusive)."""
        try:
            spec = HistoryFilter(start_time=start, end_time=end)
        except ValueError as exc:
            raise InvalidInput.single("timeRange", str(exc)) from None
        return await self.get_all_events(ref, spec)

    async def get_events_by_type(
        self, ref: str, types: Sequence[StreamEventType | str]
    ) -> list[StreamEvent]:
        try:
            spec = HistoryFilter(event_types=[StreamEventType(t) for t in types])
        except ValueError as exc:
            raise InvalidInput.single("eventTypes", str(exc)) from None
        return await self.get_all_events(ref, spec)

    async def clear_history(self, ref: str) -> int:
        """Remove every event; seqs are never reused, so resuming clients learn of the gap."""
        stream = await self._streams.located(ref)
        async with stream.exclusive():
            return await self._storage.clear(stream.id)

    async def compact_history(self, ref: str, keep_count: int) -> int:
        """Keep the newest ``keep_count`` events; returns how many were removed."""
        if not isinstance(keep_count, int) or keep_count < 0:
            raise InvalidInput.single("keepCount", "must be a non-negative integer")
        stream = await self._streams.located(ref)
        async with stream.exclusive():
            return await self._storage.compact(stream.id, keep_count)

    async def apply_retention(self, now: datetime | None = None) -> int:
        """Remove, from every stream, events older than its ``retentionPeriod``."""
        now = now or utc_now()
        removed = 0
        for stream in self._streams:
            cutoff = now - timedelta(milliseconds=stream.config.persistence.retention_period)
            async with stream.exclusive():
                removed += await self._storage.expire(stream.id, cutoff)
        return removed

    async def get_screenshot(self, ref: str, screenshot_id: str) -> StoredScreenshot:
        stream = await self._streams.located(ref)
        image = await self._storage.get_screenshot(stream.id, screenshot_id)
        if image is None:
            raise ScreenshotNotFound(
                f"screenshot {screenshot_id!r} is not held for stream {ref!r}",
                {"screenshotId": screenshot_id},
            )
        return image

    async def usage_bytes(self, ref: str) -> int:
        return await self._storage.usage_bytes((await self._streams.located(ref)).id)
