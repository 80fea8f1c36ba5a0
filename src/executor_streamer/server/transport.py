"""What every transport shares: query parsing, live connections, writer timing."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from typing import Generic, Protocol, TypeVar

import structlog

from ..core.clients import ClientSession
from ..core.hub import ExecutorStreamer
from ..core.subscription import CloseReason
from ..errors import InvalidInput
from ..types.enums import StreamEventType
from ..types.filters import StreamFilter

_log = structlog.get_logger("executor_streamer.transport")
T = TypeVar("T")


def parse_event_types(types: str, path: str = "query.types") -> list[StreamEventType]:
    """``REASONING,STATUS`` as event types; unknown or missing names are an error."""
    names = [name.strip() for name in types.split(",") if name.strip()]
    unknown = [n for n in names if n not in StreamEventType.__members__]
    if unknown or not names:
        raise InvalidInput.single(
            path, f"unknown event types: {', '.join(unknown) or '(none given)'}"
        )
    return [StreamEventType(n) for n in names]


def filters_from_types(types: str | None, path: str = "query.types") -> list[StreamFilter] | None:
    """The ``types=`` shorthand as a filter list; None when not given."""
    if types is None:
        return None
    return [StreamFilter(event_types=parse_event_types(types, path))]


def parse_seq(value: str | None, path: str) -> int | None:
    """A resume position from a query string or header."""
    if value is None or value == "":
        return None
    if not value.isdigit():
        raise InvalidInput.single(path, "must be a non-negative integer")
    return int(value)


class LiveConnections:
    """Streaming connections (WebSocket, SSE) the server must close before it exits."""

    def __init__(self, liveness: float) -> None:
        self._tasks: set[asyncio.Task[object]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self.closing = False
        self.flusher = Flusher()
        self.kept_alive: Rounds[ClientSession] = Rounds(liveness, ClientSession.touch)
        """Clients counted alive every ``liveness`` seconds while they are in it: those of
        transports that watch liveness themselves (``ws_protocol`` pings WebSockets and
        closes a peer that stops answering)."""

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._idle.clear()
        try:
            yield
        finally:
            self._tasks.discard(task)
            if not self._tasks:
                self._idle.set()

    def __len__(self) -> int:
        return len(self._tasks)

    async def drain(self, hub: ExecutorStreamer, grace_seconds: float) -> None:
        """End every client (WebSockets close 1001, SSE streams end) and wait for their
        connections to finish, at most ``grace_seconds``."""
        self.closing = True
        for client in hub.clients:
            hub.disconnect(client.id, CloseReason.SHUTDOWN)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), grace_seconds)


def ping_settings(hub: ExecutorStreamer) -> tuple[float, float]:
    """WebSocket (ping interval, ping timeout) in seconds, as uvicorn's ``ws_ping_*``
    settings hand them to ``ws_protocol``: a ping at least every heartbeatInterval, and a
    silent peer closed within about the idle timeout."""
    idle = hub.config.server.idle_client_timeout / 1000
    heartbeat = hub.config.default_stream_config.heartbeat_interval / 1000
    return min(heartbeat, idle / 2), idle / 2


def liveness_interval(hub: ExecutorStreamer) -> float:
    """How often an open connection counts as a sign of life: well inside the idle
    timeout, so the hub's idle sweep never races it."""
    interval, _ = ping_settings(hub)
    return min(interval, hub.config.server.idle_client_timeout / 3000)


COALESCE_SECONDS = 0.005
"""While events keep coming, a client that takes several per frame (SSE, batched
WebSocket) gets at most one write per this interval: under load each write carries
several events, which is what lets one process feed hundreds of clients thousands of
events a second, and an idle stream's first event still goes out at once."""


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
