"""Reading and maintaining stream history (the original StreamHistory; docs/rest.md)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from ..errors import InvalidInput, ScreenshotNotFound
from ..history.base import HistoryPage, HistoryStore, StoredScreenshot
from ..types.base import utc_now
from ..types.enums import StreamEventType
from ..types.events import StreamEvent
from ..types.filters import MAX_HISTORY_LIMIT, HistoryFilter
from .streams import StreamManager


class StreamHistory:
    """History queries over whichever backend the hub has. Every ``ref`` is a stream id
    or a workflow session id; the history of a closed stream stays readable."""

    def __init__(self, streams: StreamManager, storage: HistoryStore) -> None:
        self._streams = streams
        self._storage = storage

    async def get_events(self, ref: str, spec: HistoryFilter | None = None) -> HistoryPage:
        """Matching events ascending by seq, one page of them, and how many match in all."""
        stream = await self._streams.located(ref)
        return await self._storage.query(stream.id, spec or HistoryFilter())

    async def get_all_events(
        self, ref: str, spec: HistoryFilter | None = None
    ) -> list[StreamEvent]:
        """Every matching event, however many pages that takes."""
        spec = spec or HistoryFilter()
        events: list[StreamEvent] = []
        offset = spec.offset
        while True:
            page = await self.get_events(
                ref, spec.model_copy(update={"offset": offset, "limit": MAX_HISTORY_LIMIT})
            )
            events.extend(page.events)
            offset += len(page.events)
            if not page.events or offset >= page.total:
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
