"""The embedded default backend: history in a ring per stream, screenshots in a dict.

Nothing survives a restart, which is why every stream gets a fresh epoch then.
A screenshot is kept while any retained event refers to it, so trimming history
also frees the images only trimmed events used: memory stays bounded by
``maxHistorySize`` over a long run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import islice

from ..types.enums import StreamEventType
from ..types.events import ScreenshotInfo
from ..types.filters import HistoryFilter
from ..types.streams import StreamConfig
from .base import (
    HistoryPage,
    ResumeRead,
    StoredScreenshot,
    StreamState,
    StreamWrite,
    page_in_slices,
)
from .records import EventRecord, Predicate, history_predicate
from .ring import EventRing, StoredEvent, record_of, stored
from .search import (
    FIRST_CHUNK,
    MAX_MILLIS,
    SEARCH_CHUNK,
    SearchBatch,
    SearchQuery,
    moment_of,
    search_streams,
)

EVENT_OVERHEAD = 200
"""Bytes a retained event costs besides its payload: its tuple, seq, timestamp, the
payload's bytes header and its slot in the ring (``ring.StoredEvent``; measured with
``sys.getsizeof``, in tests/history/test_memory.py). The memory budget counts it with the
payload (:meth:`MemoryHistory.held_in_memory`), so it is about the process's memory, not
only the events' text; ``usage_bytes`` stays the events and images, as on every backend."""

STREAM_OVERHEAD = 4096
"""Bytes a stream costs while the hub knows it, besides its events: its live state (lock,
command tracker, counters), its description and this store's entries for it (measured
with tracemalloc, in tests/core/test_memory_budget.py). Counted in
:meth:`MemoryHistory.held_in_memory`, so runs that come and go are bounded by the memory
budget even once their history is evicted: the budget then forgets the oldest closed
streams themselves (``streams_in_memory``)."""


@dataclass
class _StreamData:
    ring: EventRing
    screenshots: dict[str, StoredScreenshot] = field(default_factory=dict)
    references: dict[str, int] = field(default_factory=dict)  # screenshot id -> events using it
    event_bytes: int = 0


class MemoryHistory:
    """:class:`~executor_streamer.history.base.HistoryStore` in process memory."""

    streams_in_memory = True

    def __init__(self) -> None:
        self._streams: dict[str, _StreamData] = {}
        self._states: dict[str, StreamState] = {}
        self._held = 0
        """Every stream's event and screenshot bytes, kept as they change: read per
        publish by the memory budget, so never summed."""

    async def start(self) -> None:
        """Nothing to connect to."""

    async def ping(self) -> None:
        """Always answers."""

    async def open_stream(self, stream_id: str, config: StreamConfig) -> None:
        data = self._streams.get(stream_id)
        if data is None:
            self._streams[stream_id] = _StreamData(EventRing(config.max_history_size))
            self._held += STREAM_OVERHEAD
        elif data.ring.capacity != config.max_history_size:
            self._forget(data, data.ring.resize(config.max_history_size))

    async def save_stream(self, state: StreamState) -> None:
        self._states[state.stream_id] = state

    async def load_streams(self) -> list[StreamState]:
        return list(self._states.values())

    async def write(self, writes: Sequence[StreamWrite]) -> None:
        # Check every seq before touching a ring, so a bad batch changes nothing.
        expected: dict[str, int | None] = {}
        for write in writes:
            last = expected.get(write.stream_id, self._stream(write.stream_id).ring.last_seq)
            for record in write.records:
                if last is not None and record.seq != last + 1:
                    raise ValueError(f"seq {record.seq} does not follow {last}")
                last = record.seq
            expected[write.stream_id] = last
        for write in writes:
            self._append(write)

    def _append(self, write: StreamWrite) -> None:
        data = self._streams[write.stream_id]
        for screenshot_id, image in write.screenshots:
            if screenshot_id not in data.screenshots:
                data.screenshots[screenshot_id] = image
                self._held += len(image.data)
        for record in write.records:
            shot = _screenshot_id(record)
            evicted = data.ring.append(stored(record, shot))
            data.event_bytes += len(record.payload)
            self._held += len(record.payload) + EVENT_OVERHEAD
            if shot is not None:
                data.references[shot] = data.references.get(shot, 0) + 1
            if evicted is not None:
                self._forget(data, [evicted])
        if write.state is not None:
            self._states[write.stream_id] = write.state

    async def query(self, stream_id: str, spec: HistoryFilter) -> HistoryPage:
        data = self._streams.get(stream_id)
        if data is None:
            return HistoryPage([], 0)
        ring = data.ring
        start = 0 if spec.after_seq is None else ring.index_of_seq(spec.after_seq + 1)
        if spec.start_time is not None:
            start = max(start, ring.index_of_time(spec.start_time))
        stop = len(ring)
        if spec.end_time is not None:
            # Stamps never decrease and have microseconds: the first one past the end.
            stop = ring.index_of_time(spec.end_time + timedelta(microseconds=1))
        predicate = history_predicate(spec)
        if predicate is None:  # nothing to read: the page is a window of what is held
            first = start + spec.offset
            window = ring.copy(first, min(stop, first + spec.limit))
            return HistoryPage([record_of(e) for e in window], max(stop - start, 0))
        entries = ring.copy(start, stop)  # the ring may move while the search yields
        return await page_in_slices(map(record_of, entries), spec, predicate)

    async def search(self, query: SearchQuery) -> SearchBatch:
        return await search_streams(
            query, sorted(query.stream_ids), lambda s: self._newest_first(s, query)
        )

    async def _newest_first(
        self, stream_id: str, query: SearchQuery
    ) -> AsyncIterator[Sequence[EventRecord]]:
        """Chunks, newest first, growing from FIRST_CHUNK. Positions are found again by
        seq for each chunk: between chunks the ring may take events or drop its oldest."""
        data = self._streams.get(stream_id)
        if data is None or not len(data.ring):
            return
        ring = data.ring
        top = query.end_ms
        if query.before is not None:
            top = query.before[0] if top is None else min(top, query.before[0])
        high = (
            len(ring)
            if top is None or top >= MAX_MILLIS
            else ring.index_of_time(moment_of(top + 1))
        )
        first = ring.first_seq
        assert first is not None
        below = first + high  # the seqs below this one, the newest first
        size = FIRST_CHUNK
        while (data := self._streams.get(stream_id)) is not None:
            ring = data.ring  # (eviction gives the stream a new, empty ring)
            stop = ring.index_of_seq(below)
            entries = ring.copy(max(stop - size, 0), stop)
            if not entries:
                return
            yield [record_of(e) for e in reversed(entries)]
            below = entries[0][0]
            size = min(size * 2, SEARCH_CHUNK)

    async def read_range(
        self, stream_id: str, after: int, until: int, predicate: Predicate | None
    ) -> ResumeRead:
        data = self._streams.get(stream_id)
        if data is None or not len(data.ring):
            return ResumeRead([], until + 1)
        ring = data.ring
        first = ring.first_seq
        assert first is not None
        window = ring.slice(ring.index_of_seq(after + 1), ring.index_of_seq(until + 1))
        records = [record_of(entry) for entry in window]
        if predicate is not None:
            records = [r for r in records if predicate(r)]
        return ResumeRead(records, first)

    async def read_tail(self, stream_id: str, count: int) -> list[EventRecord]:
        data = self._streams.get(stream_id)
        if data is None:
            return []
        size = len(data.ring)
        return [record_of(entry) for entry in islice(data.ring, max(size - count, 0), None)]

    async def clear(self, stream_id: str) -> int:
        return await self.compact(stream_id, 0)

    async def compact(self, stream_id: str, keep_count: int) -> int:
        data = self._streams.get(stream_id)
        if data is None:
            return 0
        drop = max(len(data.ring) - keep_count, 0)
        self._forget(data, [data.ring.pop_oldest() for _ in range(drop)])
        return drop

    async def expire(self, stream_id: str, older_than: datetime) -> int:
        data = self._streams.get(stream_id)
        if data is None:
            return 0
        drop = data.ring.index_of_time(older_than)
        self._forget(data, [data.ring.pop_oldest() for _ in range(drop)])
        return drop

    async def drop_stream(self, stream_id: str) -> None:
        data = self._streams.pop(stream_id, None)
        if data is not None:
            self._held -= _bytes_of(data) + EVENT_OVERHEAD * len(data.ring) + STREAM_OVERHEAD
        self._states.pop(stream_id, None)

    async def get_screenshot(self, stream_id: str, screenshot_id: str) -> StoredScreenshot | None:
        data = self._streams.get(stream_id)
        return None if data is None else data.screenshots.get(screenshot_id)

    async def usage_bytes(self, stream_id: str) -> int:
        data = self._streams.get(stream_id)
        return 0 if data is None else _bytes_of(data)

    def held_in_memory(self) -> int:
        return self._held

    async def evict(self, stream_id: str) -> int:
        data = self._streams.get(stream_id)
        if data is None:
            return 0
        before = self._held
        await self.clear(stream_id)
        data.ring = EventRing(data.ring.capacity)  # its storage too, grown to the history
        return before - self._held

    async def close(self) -> None:
        """Nothing to release; what is held stays for a hub that reuses this store."""

    def _stream(self, stream_id: str) -> _StreamData:
        data = self._streams.get(stream_id)
        if data is None:
            raise KeyError(f"stream {stream_id} was not opened")
        return data

    def _forget(self, data: _StreamData, removed: Sequence[StoredEvent]) -> None:
        for _, _, _, payload, shot in removed:
            data.event_bytes -= len(payload)
            self._held -= len(payload) + EVENT_OVERHEAD
            if shot is None:
                continue
            left = data.references.get(shot, 0) - 1
            if left > 0:
                data.references[shot] = left
            else:
                data.references.pop(shot, None)
                image = data.screenshots.pop(shot, None)
                if image is not None:
                    self._held -= len(image.data)


def _bytes_of(data: _StreamData) -> int:
    return data.event_bytes + sum(len(s.data) for s in data.screenshots.values())


def _screenshot_id(record: EventRecord) -> str | None:
    event = record.event
    if event.type is StreamEventType.SCREENSHOT and isinstance(event.data, ScreenshotInfo):
        return event.data.screenshot_id
    return None
