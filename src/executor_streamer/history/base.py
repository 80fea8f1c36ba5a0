"""What a history backend must provide (docs/architecture.md).

The memory and SQL backends implement it and pass the same contract tests. Every
method takes the hub's stream id. New events arrive only through :meth:`HistoryStore.write`,
one call at a time from the hub's group committer, each carrying the writes of any number
of publishes; within a stream their seqs are contiguous and ascending, and a backend may
rely on both.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from ..types.events import StreamEvent
from ..types.filters import HistoryFilter
from ..types.streams import StreamConfig
from .records import EventRecord, Predicate
from .search import SearchBatch, SearchQuery


@dataclass(frozen=True, slots=True)
class HistoryPage:
    records: list[EventRecord]
    total: int
    """Every retained event that matches, ignoring limit and offset."""

    @property
    def events(self) -> list[StreamEvent]:
        return [r.event for r in self.records]


def page_of(
    records: Iterable[EventRecord], spec: HistoryFilter, predicate: Predicate | None
) -> HistoryPage:
    """The page ``spec`` asks for (offset, limit) of the ``records`` that match, and how
    many match in all. The caller has applied the time bounds."""
    total = 0
    page: list[EventRecord] = []
    for record in records:
        if predicate is not None and not predicate(record):
            continue
        if spec.offset <= total < spec.offset + spec.limit:
            page.append(record)
        total += 1
    return HistoryPage(page, total)


SLICE_BYTES = 256 << 10
SLICE_RECORDS = 2_000
"""A search over what a backend holds in the hub (memory, or read back from Redis) gives
the event loop a turn after this many bytes of events or this many events, whichever
comes first: a search over 100 MiB once held every client up for 130 ms."""


async def page_in_slices(
    records: Iterable[EventRecord], spec: HistoryFilter, predicate: Predicate | None
) -> HistoryPage:
    """:func:`page_of`, in slices, letting other tasks run between them. ``records`` must
    not change meanwhile (a copy, not a live view of a ring)."""
    total = 0
    page: list[EventRecord] = []
    work = count = 0
    first, last = spec.offset, spec.offset + spec.limit
    for record in records:
        work += len(record.payload)
        count += 1
        if work >= SLICE_BYTES or count >= SLICE_RECORDS:
            await asyncio.sleep(0)
            work = count = 0
        if predicate is not None and not predicate(record):
            continue
        if first <= total < last:
            page.append(record)
        total += 1
    return HistoryPage(page, total)


@dataclass(frozen=True, slots=True)
class ResumeRead:
    """Events with ``after < seq <= until`` that match, and where retention now starts."""

    records: list[EventRecord]
    first_retained_seq: int
    """Seq of the oldest event still held; ``until + 1`` when nothing is held."""


@dataclass(frozen=True, slots=True)
class StreamState:
    """What must outlive the process about a stream, its events aside.

    ``last_seq`` is kept here, not derived from the events, so a seq is never reused
    even when trimming or clearing has removed every event."""

    stream_id: str
    workflow_session_id: str
    status: str
    config: dict[str, Any]
    metadata: dict[str, Any]
    epoch: str
    created_at: datetime
    last_activity: datetime
    last_seq: int
    running_commands: dict[str, str]


@dataclass(frozen=True, slots=True)
class StoredScreenshot:
    data: bytes
    mime_type: str
    sha256: str


@dataclass(frozen=True, slots=True)
class StreamWrite:
    """One publish as it is stored: its events, the screenshots they carry, and the
    stream's state after them."""

    stream_id: str
    records: Sequence[EventRecord]
    state: StreamState | None = None
    screenshots: Sequence[tuple[str, StoredScreenshot]] = ()
    """(screenshot id, image) for each screenshot event in ``records``."""


class HistoryStore(Protocol):
    async def start(self) -> None:
        """Connect, and create or migrate whatever the backend keeps; called by hub.start()."""

    async def ping(self) -> None:
        """Raise :class:`~executor_streamer.errors.StorageUnavailable` if the backend
        cannot answer now (readiness)."""

    async def open_stream(self, stream_id: str, config: StreamConfig) -> None:
        """Prepare storage for a stream; called on create and on reactivation."""

    async def write(self, writes: Sequence[StreamWrite]) -> None:
        """Store every write, in order, atomically: all of them, or nothing and an
        exception. Storing a screenshot id a stream already holds is a no-op."""

    async def save_stream(self, state: StreamState) -> None:
        """Create or update a stream's registry entry."""

    async def load_streams(self) -> list[StreamState]:
        """Every stream in the registry, for the hub to resume at start."""

    async def query(self, stream_id: str, spec: HistoryFilter) -> HistoryPage: ...

    async def read_range(
        self, stream_id: str, after: int, until: int, predicate: Predicate | None
    ) -> ResumeRead: ...

    async def search(self, query: SearchQuery) -> SearchBatch:
        """Events of many streams, newest first (``history/search.py``): at most
        ``query.limit`` of those the query selects, and where the next batch starts."""

    async def read_tail(self, stream_id: str, count: int) -> list[EventRecord]:
        """The newest ``count`` events, ascending."""

    async def clear(self, stream_id: str) -> int:
        """Remove every event; returns how many."""

    async def compact(self, stream_id: str, keep_count: int) -> int:
        """Keep the newest ``keep_count`` events; returns how many were removed."""

    async def expire(self, stream_id: str, older_than: datetime) -> int:
        """Remove events stamped before ``older_than``; returns how many."""

    async def drop_stream(self, stream_id: str) -> None:
        """Forget the stream, its events and its screenshots entirely (purge)."""

    async def get_screenshot(
        self, stream_id: str, screenshot_id: str
    ) -> StoredScreenshot | None: ...

    async def usage_bytes(self, stream_id: str) -> int:
        """Bytes held for the stream: serialized events plus screenshots."""

    streams_in_memory: bool
    """True when the store keeps streams nowhere but in the hub's memory (the memory
    backend): forgetting a closed stream whose history was evicted (``drop_stream``) then
    loses nothing else, and the memory budget may do it. False for a durable backend,
    where ``drop_stream`` would delete what is kept."""

    def held_in_memory(self) -> int:
        """Bytes this store keeps in the hub's own memory, what ``limits.maxMemoryBytes``
        counts: the memory backend's history and streams; 0 for a backend that keeps
        history elsewhere and caches none."""

    async def evict(self, stream_id: str) -> int:
        """Give back the memory held for a CLOSED stream; returns the bytes freed. For the
        memory backend that is its history itself (gone: the hub gives the stream a new
        epoch); a durable backend would drop only caches, and holding none, frees 0."""

    async def close(self) -> None: ...


__all__ = [
    "HistoryPage",
    "HistoryStore",
    "ResumeRead",
    "StoredScreenshot",
    "StreamState",
    "StreamWrite",
    "page_in_slices",
    "page_of",
]
