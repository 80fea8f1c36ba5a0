"""Counters behind StreamMetrics, StreamStats and the event distribution.

Everything is counted as it happens, not recomputed from history, so the numbers
stay right after history is trimmed or a stream is purged. Time series are kept in
buckets: per second for the last minute (the publish rate), per minute for the last
hour per stream and for the last day by event type (the distribution, which therefore
has minute resolution).
"""

from __future__ import annotations

import os
import resource
import time
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime

from ..history.records import EventRecord
from ..types.enums import StreamEventType

DAY_MINUTES = 24 * 60


class RateWindow:
    """Counts per time bucket over a sliding window of ``buckets`` buckets."""

    __slots__ = ("_buckets", "_size", "_span")

    def __init__(self, bucket_seconds: int, buckets: int) -> None:
        self._span = bucket_seconds
        self._size = buckets
        self._buckets: deque[list[int]] = deque()  # [bucket index, count]

    def add(self, count: int, now: float | None = None) -> None:
        index = int((time.time() if now is None else now) // self._span)
        if self._buckets and self._buckets[-1][0] == index:
            self._buckets[-1][1] += count
        else:
            self._buckets.append([index, count])
        self._trim(index)

    def total(self, now: float | None = None) -> int:
        index = int((time.time() if now is None else now) // self._span)
        self._trim(index)
        return sum(count for _, count in self._buckets)

    def _trim(self, index: int) -> None:
        while self._buckets and self._buckets[0][0] <= index - self._size:
            self._buckets.popleft()


class StreamCounters:
    """What one stream has published since it was created."""

    __slots__ = ("created", "largest_event", "last_hour", "total_events")

    def __init__(self) -> None:
        self.created = time.monotonic()
        self.total_events = 0
        self.largest_event = 0
        self.last_hour = RateWindow(60, 60)

    def record(self, records: Sequence[EventRecord]) -> None:
        self.total_events += len(records)
        self.largest_event = max(self.largest_event, *(len(r.payload) for r in records))
        self.last_hour.add(len(records))

    def frequency(self) -> float:
        """Events per second since the stream was created."""
        return self.total_events / max(time.monotonic() - self.created, 1e-3)


class HubCounters:
    """Hub-wide counters."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.publish_attempts = 0
        self.publish_failures = 0
        self.events_published = 0
        self.bytes_published = 0
        self.slow_consumers = 0
        self.published_by_type = dict.fromkeys(StreamEventType, 0)
        self._last_minute = RateWindow(1, 60)
        self._by_minute: dict[int, dict[StreamEventType, int]] = {}

    def record_published(self, records: Sequence[EventRecord]) -> None:
        self.publish_attempts += 1
        self.events_published += len(records)
        self.bytes_published += sum(len(r.payload) for r in records)
        self._last_minute.add(len(records))
        minute = int(time.time() // 60)
        bucket = self._by_minute.get(minute)
        if bucket is None:
            bucket = self._by_minute[minute] = dict.fromkeys(StreamEventType, 0)
            self._forget_old_minutes(minute)
        for record in records:
            bucket[record.type] += 1
            self.published_by_type[record.type] += 1

    def record_rejected(self) -> None:
        self.publish_attempts += 1
        self.publish_failures += 1

    def events_per_second(self) -> float:
        return self._last_minute.total() / 60

    def average_event_size(self) -> float:
        return self.bytes_published / self.events_published if self.events_published else 0.0

    def error_rate(self) -> float:
        return self.publish_failures / self.publish_attempts if self.publish_attempts else 0.0

    def uptime(self) -> float:
        return time.monotonic() - self.started

    def distribution(self, start: datetime, end: datetime) -> dict[StreamEventType, int]:
        """Events by type published in the minutes that overlap ``[start, end]``."""
        first = int(start.astimezone(UTC).timestamp() // 60)
        last = int(end.astimezone(UTC).timestamp() // 60)
        totals = dict.fromkeys(StreamEventType, 0)
        for minute, counts in self._by_minute.items():
            if first <= minute <= last:
                for event_type, count in counts.items():
                    totals[event_type] += count
        return totals

    def _forget_old_minutes(self, now_minute: int) -> None:
        for minute in [m for m in self._by_minute if m <= now_minute - DAY_MINUTES]:
            del self._by_minute[minute]


def resident_memory_bytes() -> int:
    """The process's resident set size now (peak RSS where /proc is missing)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
