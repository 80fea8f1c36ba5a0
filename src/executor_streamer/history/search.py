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
"""A stream's events in chunks, the newest first and each chunk descending by seq."""


async def search_streams(
    query: SearchQuery, stream_ids: Iterable[str], chunks: ChunksNewestFirst
) -> SearchBatch:
    """The answer of a backend that holds each stream apart (memory, Redis): each stream
    read from its newest event down, until it has given ``limit`` events or passed the
    start, then the streams' events merged. Gives other tasks a turn after each chunk."""
    types = query.event_types
    found: list[Found] = []
    for stream_id in stream_ids:
        taken = 0
        async for chunk in chunks(stream_id):
            done = False
            for record in chunk:
                key = (stamp_millis(record.payload), record.seq, stream_id)
                if query.start_ms is not None and key[0] < query.start_ms:
                    done = True  # older ones are older still
                    break
                if (query.before is not None and key >= query.before) or (
                    query.end_ms is not None and key[0] > query.end_ms
                ):
                    continue
                if types is not None and record.type not in types:
                    continue
                found.append(Found(key, record))
                taken += 1
                if taken == query.limit:
                    done = True
                    break
            await asyncio.sleep(0)
            if done:
                break
    return merged(found, query.limit, any_full=len(found) >= query.limit)


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
