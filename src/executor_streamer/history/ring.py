"""A fixed-capacity ring of events with contiguous seqs.

Because seqs in the ring are contiguous, the record with a given seq is found by
arithmetic, and events are stamped in non-decreasing time, so a time bound is found
by bisection: no scan is needed to start a resume or a time-range query.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from ..core.records import EventRecord


class EventRing:
    __slots__ = ("_capacity", "_head", "_items", "_size")

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._items: list[EventRecord | None] = [None] * min(capacity, 1024)
        self._head = 0
        self._size = 0

    def __len__(self) -> int:
        return self._size

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def first_seq(self) -> int | None:
        return self._at(0).seq if self._size else None

    @property
    def last_seq(self) -> int | None:
        return self._at(self._size - 1).seq if self._size else None

    def append(self, record: EventRecord) -> EventRecord | None:
        """Add the newest record; returns the oldest one if it had to be evicted."""
        last = self.last_seq
        if last is not None and record.seq != last + 1:
            raise ValueError(f"seq {record.seq} does not follow {last}")
        evicted = None
        if self._size == self._capacity:
            evicted = self._at(0)
            self._items[self._head] = None
            self._head = (self._head + 1) % len(self._items)
            self._size -= 1
        if self._size == len(self._items):
            self._grow()
        self._items[(self._head + self._size) % len(self._items)] = record
        self._size += 1
        return evicted

    def pop_oldest(self) -> EventRecord:
        record = self._at(0)
        self._items[self._head] = None
        self._head = (self._head + 1) % len(self._items)
        self._size -= 1
        return record

    def resize(self, capacity: int) -> list[EventRecord]:
        """Change the capacity; returns the oldest records that no longer fit."""
        evicted = [self.pop_oldest() for _ in range(max(0, self._size - capacity))]
        self._capacity = capacity
        return evicted

    def index_of_seq(self, seq: int) -> int:
        """Position of the first record with seq >= ``seq`` (``len`` if none)."""
        first = self.first_seq
        if first is None:
            return 0
        return min(max(seq - first, 0), self._size)

    def index_of_time(self, moment: datetime) -> int:
        """Position of the first record stamped at or after ``moment``."""
        lo, hi = 0, self._size
        while lo < hi:
            mid = (lo + hi) // 2
            if self._at(mid).event.timestamp < moment:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def slice(self, start: int, stop: int | None = None) -> Iterator[EventRecord]:
        stop = self._size if stop is None else min(stop, self._size)
        for i in range(max(start, 0), stop):
            yield self._at(i)

    def __iter__(self) -> Iterator[EventRecord]:
        return self.slice(0)

    def _at(self, index: int) -> EventRecord:
        record = self._items[(self._head + index) % len(self._items)]
        assert record is not None
        return record

    def _grow(self) -> None:
        # Storage grows on demand up to the capacity, so a stream configured for
        # 10,000 events that holds 10 does not reserve 10,000 slots.
        ordered = list(self.slice(0))
        size = min(self._capacity, max(len(self._items) * 2, 16))
        self._items = [*ordered, *([None] * (size - len(ordered)))]
        self._head = 0
