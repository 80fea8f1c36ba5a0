"""The flush pass: one callback writes to every connection with new events, paced under load."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable, Sequence
from typing import Protocol

import structlog

from ..history.records import EventRecord

_log = structlog.get_logger("executor_streamer.flush")


COALESCE_SECONDS = 0.005
"""While events keep coming, a client that takes several per frame (SSE, batched
WebSocket) gets at most one write per this interval: under load each write carries
several events, which is what lets one process feed hundreds of clients thousands of
events a second, and an idle stream's first event still goes out at once."""


class Pacer:
    """Spaces a writer's sends at least ``COALESCE_SECONDS`` apart (see there)."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._last = 0.0

    async def pace(self) -> None:
        """Wait until the next send may go; call right before taking what is queued."""
        wait = self._last + COALESCE_SECONDS - self._loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        self._last = self._loop.time()


class Flushable(Protocol):
    def flush(self) -> None:
        """Write what is queued now, without waiting; hand anything that would have to
        wait to the connection's own writer task."""


class Flusher:
    """Writes for every connection with new events in one pass, at most once per
    ``COALESCE_SECONDS``.

    Fan-out used to wake each subscriber's writer task for each event: a task switch per
    client per event, which at 100 clients was most of what the server did. Now a
    subscription that gets events asks for a flush; one callback then writes to every
    such connection in turn (a few microseconds each, no task switch), and the first
    event on a quiet stream still leaves on the next loop iteration.
    """

    def __init__(self) -> None:
        self._dirty: set[Flushable] = set()
        self._handle: asyncio.Handle | None = None
        self._last = 0.0
        self._cache: FrameCache | None = None  # only during a pass

    def frames(
        self,
        kind: Hashable,
        records: Sequence[EventRecord],
        build: Callable[[Sequence[EventRecord]], list[bytes]],
    ) -> list[bytes]:
        """``build(records)``, built once per pass for every client that takes the same
        records in the same ``kind`` of frame (see :class:`FrameCache`)."""
        cache = self._cache
        return build(records) if cache is None else cache.frames(kind, records, build)

    @property
    def in_pass(self) -> bool:
        return self._cache is not None

    def request(self, target: Flushable) -> None:
        self._dirty.add(target)
        if self._handle is None:
            loop = asyncio.get_running_loop()
            wait = self._last + COALESCE_SECONDS - loop.time()
            if wait > 0:
                self._handle = loop.call_later(wait, self._run, loop)
            else:
                self._handle = loop.call_soon(self._run, loop)

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        self._handle = None
        self._last = loop.time()
        dirty, self._dirty = self._dirty, set()
        self._cache = FrameCache()
        try:
            for target in dirty:
                try:
                    target.flush()
                except Exception:  # one broken connection must not stall the others
                    _log.exception("flush_failed")
        finally:
            self._cache = None


class FrameCache:
    """Frames built during one flush pass, reused only for *the same records*.

    The subscribers of a stream mostly drain the same new records in a pass, so a frame is
    built once, not once per client. The key is the whole input: the kind of frame and the
    identity of every record, in order. A shorter key is wrong: clients with different
    filters drain runs of one batch that can start with the same record and have the same
    length (a key of first record and length once sent one client another's events). The
    records are held with their frames, so no id is reused while the cache lives.
    """

    __slots__ = ("_built",)

    def __init__(self) -> None:
        self._built: dict[tuple[object, ...], tuple[tuple[EventRecord, ...], list[bytes]]] = {}

    def frames(
        self,
        kind: Hashable,
        records: Sequence[EventRecord],
        build: Callable[[Sequence[EventRecord]], list[bytes]],
    ) -> list[bytes]:
        key = (kind, *map(id, records))
        hit = self._built.get(key)
        if hit is None:
            hit = self._built[key] = (tuple(records), build(records))
        return hit[1]
