"""A fixed-capacity ring of events with contiguous seqs.

Because seqs in the ring are contiguous, the event with a given seq is found by
arithmetic, and events are stamped in non-decreasing time, so a time bound is found
by bisection: no scan is needed to start a resume or a time-range query.

The ring holds :data:`StoredEvent` tuples rather than records: see there why.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import cast

from ..types.enums import StreamEventType
from .records import EventRecord

StoredEvent = tuple[int, datetime, str, bytes, str | None]
"""seq, timestamp, type, payload and screenshot id of one retained event.

A plain tuple of immutable values on purpose. CPython's cyclic collector stops tracking
such a tuple the first time it meets it, so history, however long, adds nothing to what
each collection walks. A record holding its parsed event is six tracked objects: with
200,000 retained events a full collection took 366 ms, stalling every client.
"""


def stored(record: EventRecord, screenshot_id: str | None) -> StoredEvent:
    return (record.seq, record.event.timestamp, record.type.value, record.payload, screenshot_id)


def record_of(entry: StoredEvent) -> EventRecord:
    """The record for ``entry``; its event is parsed only if someone asks for it."""
    seq, _, type_, payload, _ = entry
    return EventRecord.stored(seq, StreamEventType(type_), payload)


class EventRing:
    __slots__ = ("_capacity", "_head", "_items", "_size")

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._items: list[StoredEvent | None] = []  # grown on demand: see _grow
        self._head = 0
        self._size = 0

    def __len__(self) -> int:
        return self._size

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def first_seq(self) -> int | None:
        return self._at(0)[0] if self._size else None

    @property
    def last_seq(self) -> int | None:
        return self._at(self._size - 1)[0] if self._size else None

    def append(self, entry: StoredEvent) -> StoredEvent | None:
        """Add the newest event; returns the oldest one if it had to be evicted."""
        last = self.last_seq
        seq = entry[0]
        if last is not None and seq != last + 1:
            raise ValueError(f"seq {seq} does not follow {last}")
        evicted = None
        if self._size == self._capacity:
            evicted = self._at(0)
            self._items[self._head] = None
            self._head = (self._head + 1) % len(self._items)
            self._size -= 1
        if self._size == len(self._items):
            self._grow()
        self._items[(self._head + self._size) % len(self._items)] = entry
        self._size += 1
        return evicted

    def pop_oldest(self) -> StoredEvent:
        entry = self._at(0)
        self._items[self._head] = None
        self._head = (self._head + 1) % len(self._items)
        self._size -= 1
        return entry

    def resize(self, capacity: int) -> list[StoredEvent]:
        """Change the capacity; returns the oldest events that no longer fit."""
        evicted = [self.pop_oldest() for _ in range(max(0, self._size - capacity))]
        self._capacity = capacity
        return evicted

    def index_of_seq(self, seq: int) -> int:
        """Position of the first event with seq >= ``seq`` (``len`` if none)."""
        first = self.first_seq
        if first is None:
            return 0
        return min(max(seq - first, 0), self._size)

    def index_of_time(self, moment: datetime) -> int:
        """Position of the first event stamped at or after ``moment``."""
        lo, hi = 0, self._size
        while lo < hi:
            mid = (lo + hi) // 2
            if self._at(mid)[1] < moment:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def slice(self, start: int, stop: int | None = None) -> Iterator[StoredEvent]:
        stop = self._size if stop is None else min(stop, self._size)
        for i in range(max(start, 0), stop):
            yield self._at(i)

    def copy(self, start: int, stop: int) -> list[StoredEvent]:
        """Positions ``start`` to ``stop`` as a list, copied at C speed (a search works
        on a copy, for the ring may move while it yields to other tasks)."""
        start, stop = max(start, 0), min(stop, self._size)
        if start >= stop:
            return []
        items, size = self._items, len(self._items)
        first, last = (self._head + start) % size, (self._head + stop) % size
        held = items[first:last] if first < last else items[first:] + items[:last]
        return cast("list[StoredEvent]", held)  # every position in range holds an event

    def __iter__(self) -> Iterator[StoredEvent]:
        return self.slice(0)

    def _at(self, index: int) -> StoredEvent:
        entry = self._items[(self._head + index) % len(self._items)]
        assert entry is not None
        return entry

    def _grow(self) -> None:
        # Storage grows on demand up to the capacity, so a stream configured for
        # 10,000 events that holds 10 does not reserve 10,000 slots, and one whose
        # history was evicted (or never had any) holds none.
        ordered = list(self.slice(0))
        size = min(self._capacity, max(len(self._items) * 2, 16))
        self._items = [*ordered, *([None] * (size - len(ordered)))]
        self._head = 0
