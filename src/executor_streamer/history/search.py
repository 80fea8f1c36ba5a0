"""Cross-run search as a backend answers it: events of many streams, newest first.

An event's place in a search is its :data:`SearchKey`, ``(timestamp in ms, seq, stream
id)``, and results descend by it. Keys never change and a new event's key is above every
key its stream already has (stamps never decrease along seqs), so paging by "keys below
the last one seen" neither repeats nor skips an event while events are being published.

A backend answers what can be answered without reading an event: which streams, which
types, which times, which keys. Filter expressions are the hub's (``core/search.py``).
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ..types.enums import StreamEventType
from .records import EventRecord, stamp_text

SearchKey = tuple[int, int, str]
"""``(timestamp in milliseconds since the epoch, seq, stream id)``."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_MILLIS = 253_402_300_799_999
"""9999-12-31T23:59:59.999Z: the latest stamp a bound or a cursor may name."""
SEARCH_CHUNK = 1000
"""Events a backend that holds streams apart reads of one stream at a time."""


@dataclass(frozen=True, slots=True)
class SearchQuery:
    limit: int
    """At most this many events."""
    stream_ids: frozenset[str] = frozenset()
    """Only these streams."""
    all_streams: bool = False
    """``stream_ids`` is every stream and the caller may read any: a backend that can
    search without naming them (SQL) may ignore the set."""
    event_types: frozenset[StreamEventType] | None = None
    start_ms: int | None = None
    """Inclusive."""
    end_ms: int | None = None
    """Inclusive."""
    before: SearchKey | None = None
    """Only keys below this one (the last key of the previous page)."""


@dataclass(frozen=True, slots=True)
class Found:
    key: SearchKey
    record: EventRecord


@dataclass(frozen=True, slots=True)
class SearchBatch:
    found: list[Found]
    """Descending by key."""
    last: SearchKey | None
    """Where the next batch starts (exclusive); None when nothing below remains. It can
    lie below the last event found when the backend looked further without finding."""


def millis_of(moment: datetime) -> int:
    """Milliseconds since the epoch, in integers (floats would round .123 to .122)."""
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def moment_of(millis: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=millis)


def stamp_millis(payload: bytes) -> int:
    """An event's timestamp in milliseconds, read from its payload without parsing it."""
    return millis_of(datetime.fromisoformat(stamp_text(payload).decode()))


ChunksNewestFirst = Callable[[str], AsyncIterator[Sequence[EventRecord]]]
"""A stream's events in chunks, the newest first and each chunk descending by seq. The
chunks should start small and grow (:data:`FIRST_CHUNK` doubling to
:data:`SEARCH_CHUNK`): a search over many streams needs only the head of most."""
FIRST_CHUNK = 16


class _Head:
    """One stream's next event for the merge: the heap's order is newest first."""

    __slots__ = ("found", "reader")

    def __init__(self, found: Found, reader: _StreamReader) -> None:
        self.found = found
        self.reader = reader

    def __lt__(self, other: _Head) -> bool:
        return self.found.key > other.found.key


class _StreamReader:
    """A stream's events that ``query`` selects, newest first, read a chunk at a time."""

    __slots__ = ("_at", "_buffer", "_chunks", "_query", "_stream_id", "read")

    def __init__(
        self, stream_id: str, chunks: AsyncIterator[Sequence[EventRecord]], query: SearchQuery
    ):
        self._stream_id = stream_id
        self._chunks: AsyncIterator[Sequence[EventRecord]] | None = chunks
        self._query = query
        self._buffer: Sequence[EventRecord] = ()
        self._at = 0
        self.read = 0

    async def next(self) -> Found | None:
        query = self._query
        while True:
            if self._at == len(self._buffer):
                if self._chunks is None:
                    return None
                try:
                    self._buffer, self._at = await anext(self._chunks), 0
                except StopAsyncIteration:
                    self._chunks = None
                continue
            record = self._buffer[self._at]
            self._at += 1
            self.read += 1
            key = (stamp_millis(record.payload), record.seq, self._stream_id)
            if query.start_ms is not None and key[0] < query.start_ms:
                self._chunks, self._buffer = None, ()  # older ones are older still
                return None
            if (query.before is not None and key >= query.before) or (
                query.end_ms is not None and key[0] > query.end_ms
            ):
                continue
            if query.event_types is not None and record.type not in query.event_types:
                continue
            return Found(key, record)


async def search_streams(
    query: SearchQuery, stream_ids: Iterable[str], chunks: ChunksNewestFirst
) -> SearchBatch:
    """The answer of a backend that holds each stream apart (memory, Redis): every
    stream read from its newest event down, merged as it is read, so a batch reads the
    head of each stream and no more of any than the merge takes. Gives other tasks a turn
    every :data:`SEARCH_CHUNK` events read."""
    heads: list[_Head] = []
    read = 0
    for stream_id in stream_ids:
        reader = _StreamReader(stream_id, chunks(stream_id), query)
        found = await reader.next()
        if found is not None:
            heads.append(_Head(found, reader))
        read += reader.read
        if read >= SEARCH_CHUNK:
            read = 0
            await asyncio.sleep(0)
    heapq.heapify(heads)
    taken: list[Found] = []
    while heads and len(taken) < query.limit:
        head = heads[0]
        taken.append(head.found)
        before = head.reader.read
        following = await head.reader.next()
        if following is None:
            heapq.heappop(heads)
        else:
            head.found = following
            heapq.heapreplace(heads, head)
        read += head.reader.read - before
        if read >= SEARCH_CHUNK:
            read = 0
            await asyncio.sleep(0)
    return SearchBatch(taken, taken[-1].key if heads and taken else None)


def merged(found: list[Found], limit: int, any_full: bool) -> SearchBatch:
    """The newest ``limit`` of ``found``, gathered from parts that each gave all they hold
    below the cursor or ``limit`` of it (``any_full``: one gave ``limit``, so more may lie
    below what it gave)."""
    found.sort(key=lambda f: f.key, reverse=True)
    if len(found) > limit:
        del found[limit:]
        return SearchBatch(found, found[-1].key)
    return SearchBatch(found, found[-1].key if any_full and found else None)


__all__ = [
    "FIRST_CHUNK",
    "MAX_MILLIS",
    "SEARCH_CHUNK",
    "ChunksNewestFirst",
    "Found",
    "SearchBatch",
    "SearchKey",
    "SearchQuery",
    "merged",
    "millis_of",
    "moment_of",
    "search_streams",
    "stamp_millis",
]
