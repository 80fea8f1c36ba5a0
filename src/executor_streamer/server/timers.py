"""Timers shared by many connections: one timer for thousands of connections, not one each."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

import structlog

_log = structlog.get_logger("executor_streamer.timers")
T = TypeVar("T")


class Signal:
    """``asyncio.Event`` for one waiter, without the deque of waiters every Event keeps
    (about 600 bytes, for each of 10,000 idle connections): a future exists only while
    someone waits."""

    __slots__ = ("_set", "_waiter")

    def __init__(self) -> None:
        self._set = False
        self._waiter: asyncio.Future[None] | None = None

    def set(self) -> None:
        self._set = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    def is_set(self) -> bool:
        return self._set

    async def wait(self) -> None:
        if self._set:
            return
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None


class Ticker:
    """Calls ``tick`` every ``interval`` seconds until stopped.

    One timer per connection for heartbeats and write deadlines, instead of a timeout
    armed around every wait and every write (``asyncio.wait_for`` makes a task each
    time: at thousands of writes a second that was the writers' largest cost)."""

    def __init__(self, interval: float, tick: Callable[[], None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._interval = interval
        self._tick = tick
        self._handle = self._loop.call_later(interval, self._fire)

    def _fire(self) -> None:
        self._handle = self._loop.call_later(self._interval, self._fire)
        self._tick()

    def stop(self) -> None:
        self._handle.cancel()


class Rounds(Generic[T]):
    """Members visited together every ``interval`` seconds by one timer, which runs only
    while there are members: one timer for thousands of connections, not one each."""

    def __init__(self, interval: float, visit: Callable[[T], object]) -> None:
        self._interval = interval
        self._visit = visit
        self._members: set[T] = set()
        self._ticker: Ticker | None = None

    def add(self, member: T) -> None:
        self._members.add(member)
        if self._ticker is None:
            self._ticker = Ticker(self._interval, self._round)

    def discard(self, member: T) -> None:
        self._members.discard(member)
        if not self._members and self._ticker is not None:
            self._ticker.stop()
            self._ticker = None

    def __len__(self) -> int:
        return len(self._members)

    @property
    def running(self) -> bool:
        return self._ticker is not None

    def _round(self) -> None:
        for member in list(self._members):
            try:
                self._visit(member)
            except Exception:  # one broken member must not stop the others' rounds
                _log.exception("round_failed")
