"""Connected consumers: WebSocket, SSE and long-polling clients (docs/protocol.md, docs/rest.md).

A client is one connection. It may hold subscriptions on several streams and is
listed among each of those streams' clients. In-process subscribers that are not
clients (``hub.subscribe(...)`` without ``client=``) are not listed or limited.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime

import structlog

from ..errors import ClientNotFound, TooManyClients
from ..types.analytics import ClientActivityReport
from ..types.base import utc_now
from ..types.enums import ClientType
from ..types.ids import new_client_id
from ..types.streams import StreamClientInfo
from .subscription import CloseReason, Subscription

_log = structlog.get_logger("executor_streamer.clients")

# Disconnected clients stay in the activity report for a while, up to this many.
DISCONNECTED_HISTORY = 10_000


class ClientSession:
    """One connected consumer and its subscriptions, by stream id."""

    def __init__(self, client_type: ClientType, client_id: str | None = None) -> None:
        self.id = client_id or new_client_id()
        self.type = client_type
        self.connected_at = utc_now()
        self.last_ping = self.connected_at
        self._last_seen = time.monotonic()
        self.disconnected_at: datetime | None = None
        self.events_received = 0
        self.subscriptions: dict[str, Subscription] = {}
        self.stream_ids: set[str] = set()
        self.polls_in_progress = 0
        """Polls of this (long-polling) client being answered now."""
        self.subject: str | None = None
        """Who registered this client, when the transport records it (long polling: only
        that subject may poll with its id); None for anonymous callers."""
        self.on_disconnect: Callable[[CloseReason], None] | None = None
        """Set by the transport: called when the hub ends this client (idle, operator,
        shutdown, a failure), so the connection itself can be closed. It may run inside
        fan-out: it must not block, and if it raises the error is logged and nothing else
        is affected."""

    @property
    def is_active(self) -> bool:
        return self.disconnected_at is None

    @property
    def parked(self) -> bool:
        """A polling client between two polls: it holds a place (and its subscriptions
        keep events for its next poll) but no connection. When the hub is full it gives
        its place to a new client; its next poll then resumes from its ``since``."""
        return self.type is ClientType.HTTP_POLLING and not self.polls_in_progress

    def touch(self) -> None:
        """Record a sign of life (a pong, a message, a poll)."""
        self.last_ping = utc_now()
        self._last_seen = time.monotonic()

    @property
    def last_seen(self) -> float:
        """``time.monotonic()`` at the last sign of life."""
        return self._last_seen

    def idle_seconds(self, now: float | None = None) -> float:
        return (time.monotonic() if now is None else now) - self._last_seen

    def info(self, stream_id: str) -> StreamClientInfo:
        sub = self.subscriptions.get(stream_id)
        return StreamClientInfo(
            id=self.id,
            type=self.type,
            connected_at=self.connected_at,
            last_ping=self.last_ping,
            filters=sub.filters if sub is not None else [],
            is_active=self.is_active,
        )

    def report(self) -> ClientActivityReport:
        return ClientActivityReport(
            client_id=self.id,
            client_type=self.type,
            connect_time=self.connected_at,
            disconnect_time=self.disconnected_at,
            events_received=self.events_received,
            last_activity=self.last_ping,
            is_active=self.is_active,
            stream_ids=sorted(self.stream_ids),
        )


class ClientRegistry:
    """Every connected client, with the global ``server.maxConnections`` limit."""

    def __init__(self, max_connections: int) -> None:
        self.max_connections = max_connections
        self._clients: dict[str, ClientSession] = {}
        self._gone: deque[ClientSession] = deque(maxlen=DISCONNECTED_HISTORY)

    def __len__(self) -> int:
        return len(self._clients)

    def __iter__(self) -> Iterator[ClientSession]:
        return iter(list(self._clients.values()))

    def connect(self, client_type: ClientType, client_id: str | None = None) -> ClientSession:
        if len(self._clients) >= self.max_connections:
            parked = longest_parked(self._clients.values())
            if parked is None:
                raise TooManyClients(
                    f"the hub already has {self.max_connections} clients (server.maxConnections)"
                )
            self.disconnect(parked.id, CloseReason.EVICTED)
        client = ClientSession(client_type, client_id)
        self._clients[client.id] = client
        return client

    def get(self, client_id: str) -> ClientSession:
        client = self._clients.get(client_id)
        if client is None:
            raise ClientNotFound(client_id)
        return client

    def find(self, client_id: str) -> ClientSession | None:
        return self._clients.get(client_id)

    def disconnect(self, client_id: str, reason: CloseReason = CloseReason.DISCONNECTED) -> None:
        """Close every subscription of the client and forget it; unknown ids are ignored."""
        client = self._clients.pop(client_id, None)
        if client is None:
            return
        for sub in list(client.subscriptions.values()):
            sub.close(reason)
        client.disconnected_at = utc_now()
        # Kept for activity reports, so let go of the transport's callback: it holds the
        # whole connection (socket buffers included), and 10,000 of those added up to
        # a gigabyte in the soak benchmark.
        notify, client.on_disconnect = client.on_disconnect, None
        self._gone.append(client)
        if notify is not None:
            try:
                notify(reason)
            except Exception:  # transport code: contained (see on_disconnect)
                _log.exception("disconnect_callback_failed", client_id=client_id)

    def idle(self, timeout_seconds: float, now: float | None = None) -> list[ClientSession]:
        """Clients with no sign of life for longer than ``timeout_seconds``.

        ``now`` is a ``time.monotonic()`` reading; it defaults to the present."""
        now = time.monotonic() if now is None else now
        return [c for c in self._clients.values() if c.idle_seconds(now) > timeout_seconds]

    def counts_by_type(self) -> dict[ClientType, int]:
        counts = dict.fromkeys(ClientType, 0)
        for client in self._clients.values():
            counts[client.type] += 1
        return counts

    def activity(self, start: datetime, end: datetime) -> list[ClientActivityReport]:
        """Clients connected at any moment within ``[start, end]``, oldest first."""
        everyone = [*self._gone, *self._clients.values()]
        overlapping = [
            c
            for c in everyone
            if c.connected_at <= end and (c.disconnected_at is None or c.disconnected_at >= start)
        ]
        overlapping.sort(key=lambda c: c.connected_at)
        return [c.report() for c in overlapping]

    def forget_before(self, cutoff: datetime) -> None:
        """Drop reports of clients that left before ``cutoff``."""
        while self._gone and (self._gone[0].disconnected_at or cutoff) < cutoff:
            self._gone.popleft()


def longest_parked(clients: Iterable[ClientSession]) -> ClientSession | None:
    """Of ``clients``, the parked poller that has waited longest since its last poll."""
    parked = [client for client in clients if client.parked]
    return min(parked, key=lambda client: client.last_seen) if parked else None
