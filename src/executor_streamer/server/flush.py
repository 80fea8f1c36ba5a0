"""The flush pass: one callback writes to every connection with new events, paced under load."""

from __future__ import annotations

import asyncio
from typing import Protocol

import structlog

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
        self.frames: dict[tuple[int, int, object], list[bytes]] | None = None
        """During a pass, frames already built for a run of records, by (id of its first
        record, length, kind of frame): subscribers of one stream drain the same records in
        one pass, so each frame is built once, not once per client."""

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
        self.frames = {}
        try:
            for target in dirty:
                try:
                    target.flush()
                except Exception:  # one broken connection must not stall the others
                    _log.exception("flush_failed")
        finally:
            self.frames = None  # ids are only unique while the records are held
