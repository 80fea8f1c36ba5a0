"""The server's live connections (WebSocket, SSE): who must be closed before exit, and
how often they ping and count as alive."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from ..core.clients import ClientSession
from ..core.hub import ExecutorStreamer
from ..core.subscription import CloseReason
from .flush import Flusher
from .timers import Rounds

MAX_UNAUTHENTICATED = 256
"""WebSockets waiting for their first ``auth`` message; past it, each new one ends the
longest-waiting one that has waited :data:`PATIENCE_SECONDS` or more (an honest client
sends its credential at once, even in a reconnect storm)."""
PATIENCE_SECONDS = 1.0


class LiveConnections:
    """Streaming connections (WebSocket, SSE) the server must close before it exits."""

    def __init__(self, liveness: float) -> None:
        self._tasks: set[asyncio.Task[object]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self.closing = False
        self.flusher = Flusher()
        self._unauthenticated: dict[object, tuple[float, asyncio.Timeout]] = {}
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

    @contextlib.contextmanager
    def awaiting_auth(self, session: object, deadline: asyncio.Timeout) -> Iterator[None]:
        """``session`` waits for its credential until ``deadline``; unauthenticated
        connections stay few (docs/security.md, "Connections and memory")."""
        now = asyncio.get_running_loop().time()
        if len(self._unauthenticated) >= MAX_UNAUTHENTICATED:
            oldest, (since, its_deadline) = next(iter(self._unauthenticated.items()))
            if now - since >= PATIENCE_SECONDS:
                del self._unauthenticated[oldest]
                if not its_deadline.expired():  # (its own time may be up already)
                    its_deadline.reschedule(now)  # it times out now: close 4001
        self._unauthenticated[session] = (now, deadline)
        try:
            yield
        finally:
            self._unauthenticated.pop(session, None)

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
