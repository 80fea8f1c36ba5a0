"""The WebSocket protocol: ``GET /ws`` (docs/protocol.md).

One task per connection: it reads client messages (``ws_messages``), turns them into core calls
and queues the replies (``ws_outbox``). Everything goes out through
:meth:`WebSocketSession.flush`, which writes the queued replies first and then what every
subscription of the connection has queued, so a ``subscribed`` always precedes that
subscription's events and a ``replay_done`` follows its replay. The reader flushes after each
message; the server's flush pass (``flush.Flusher``) flushes when events arrive. Only a write
that has to wait (the peer's socket buffer is full, or the server offers nothing but ASGI sends)
gets a writer task, for as long as it waits: an idle connection holds no task but its reader.
Credentials (docs/security.md) are checked before the upgrade when they come in the header or a
ticket, else the first message must be ``auth``; then once per subscription, never per event.
Protocol-level pings are the server's (``ws_protocol``; a peer that stops answering is closed
within the idle timeout), so a connection that is still open has shown a sign of life.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import structlog
from starlette.websockets import WebSocket

from ..core.clients import ClientSession
from ..core.hub import ExecutorStreamer
from ..core.subscription import CloseReason, Subscription
from ..errors import (
    ClientNotFound,
    Forbidden,
    InvalidInput,
    NotSubscribed,
    RateLimited,
    StreamerError,
    StreamNotFound,
    TooManyClients,
    Unauthorized,
)
from ..history.records import EventRecord
from ..security import Principal
from ..types.base import format_timestamp, utc_now
from ..types.enums import ClientType
from ..types.filters import HistoryFilter, StreamFilter
from .auth import Gate
from .connections import LiveConnections
from .errors import (
    CLOSE_FOR_REASON,
    CLOSE_FORBIDDEN,
    CLOSE_RATE_LIMITED,
    CLOSE_SHUTDOWN,
    CLOSE_STREAM_NOT_FOUND,
    CLOSE_TOO_MANY_CLIENTS,
    CLOSE_UNAUTHORIZED,
    deny_upgrade,
    fit_close_reason,
)
from .frames import ws_message
from .internals import asgi_send_of
from .metrics import ServerMetrics
from .query import filters_from_query, parse_seq
from .writers import FrameWriter, PeerGone
from .ws_messages import (
    Auth,
    ClientMessage,
    Filter,
    Invalid,
    Ping,
    Replay,
    Subscribe,
    Unsubscribe,
    parse_message,
)
from .ws_outbox import ENDS_CONNECTION, Outbox, Subscribed

PROTOCOL_VERSION = 1
CLOSING_WRITE_TIMEOUT = 2.0
"""Seconds a closing session gives the replies it still holds, and then its close frame,
to reach the socket; the close handshake itself is ``ws_protocol.CLOSE_HANDSHAKE_TIMEOUT``."""
AUTH_TIMEOUT = 10.0
"""Seconds a connection without a credential has to send its ``auth`` message."""
EXPIRY_GRACE = 25.0
"""Seconds past its credential's expiry a connection has to refresh it (docs/security.md)."""
RATE_LIMITED_MESSAGES_BEFORE_CLOSE = 10
"""Messages refused for the rate limit, one after another, before the connection is
closed with 4029: a client that heeds the first errors keeps its connection."""
_log = structlog.get_logger("executor_streamer.websocket")


class WebSocketSession:
    def __init__(
        self,
        websocket: WebSocket,
        hub: ExecutorStreamer,
        metrics: ServerMetrics,
        connections: LiveConnections,
        gate: Gate,
    ) -> None:
        self.ws = websocket
        self.gate = gate
        self.principal: Principal | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self._refused_in_a_row = 0  # messages over the rate limit, one after another
        self._frames = FrameWriter(asgi_send_of(websocket))
        self.hub = hub
        self.metrics = metrics
        self.connections = connections
        self.client: ClientSession | None = None
        self.subs: dict[str, Subscribed] = {}
        self.outbox = Outbox(connections.flusher)
        self._budget = hub.config.limits.max_queued_bytes
        self.close_with: tuple[int, str] | None = None
        self._reader: asyncio.Task[Any] | None = None  # the task running the session
        self._receiving = False  # the reader is waiting for a message
        self._cancelled = False  # _end_reading cancelled the reader
        self._writer: asyncio.Task[None] | None = None  # only while a write has to wait

    # -- connection lifetime -----------------------------------------------------------

    async def run(self) -> None:
        release = None
        try:
            # Checked before the upgrade, answered with an HTTP status: the origin, and a
            # credential sent in the header or as a ticket (else it must come first thing).
            self.gate.check_origin(self.ws)
            params = self.ws.query_params
            if not self.gate.required or "authorization" in self.ws.headers or "ticket" in params:
                self.principal = await self.gate.principal(self.ws, ticket=True)
                release = await self._hold_connection()
        except StreamerError as exc:
            await deny_upgrade(self.ws, exc)
            return
        try:
            await self._run()
        finally:
            if release is not None:
                release()
            if self._expiry is not None:
                self._expiry.cancel()

    async def _hold_connection(self) -> Callable[[], None] | None:
        assert self.principal is not None
        rate = self.gate.rate
        if rate is None:
            return None
        return await rate.hold_connection(self.gate.subject_key(self.principal))

    async def _run(self) -> None:
        await self.ws.accept()
        if self.connections.closing:
            await self._close_now(CLOSE_SHUTDOWN, "server shutting down")
            return
        release = None
        if self.principal is None:
            try:
                self.principal = await self._first_auth()
                release = await self._hold_connection()
            except RateLimited as exc:
                await self._close_now(CLOSE_RATE_LIMITED, exc.message)
                return
            except Unauthorized as exc:
                await self._close_now(CLOSE_UNAUTHORIZED, exc.message)
                return
        try:
            await self._serve()
        finally:
            if release is not None:
                release()

    async def _first_auth(self) -> Principal:
        """Wait up to ``AUTH_TIMEOUT`` for ``{type: "auth", token}``, answering pings (other
        messages get an ``UNAUTHORIZED`` error); leaving, a bad token or no time: refused."""
        try:
            async with asyncio.timeout(AUTH_TIMEOUT) as deadline:
                with self.connections.awaiting_auth(self, deadline):
                    token = await self._auth_message()
                return await self.gate.credential(self.ws, token)  # sent: no longer waiting
        except TimeoutError:
            raise Unauthorized(reason="no auth message in time") from None

    async def _auth_message(self) -> str:
        """The token of the first ``auth`` message (see :meth:`_first_auth`)."""
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                raise Unauthorized(reason="left before authenticating")
            await self.gate.count_anonymous(self.ws)
            parsed = parse_message(message.get("text"))
            if isinstance(parsed, Auth):
                return parsed.token
            if isinstance(parsed, Ping):
                reply = ws_message("pong", {"serverTime": format_timestamp(utc_now())})
            else:
                reply = ws_message(
                    "error",
                    None if parsed.request_id is None else {"requestId": parsed.request_id},
                    error={
                        "code": "UNAUTHORIZED",
                        "message": 'send {"type": "auth", "token": ...} first',
                    },
                )
            with contextlib.suppress(PeerGone):
                await self._frames.send([reply])

    async def _serve(self) -> None:
        try:
            self.client = self.hub.connect(ClientType.WEBSOCKET)
        except TooManyClients as exc:
            await self._close_now(CLOSE_TOO_MANY_CLIENTS, exc.message)
            return
        self._schedule_expiry()
        self.client.on_disconnect = self._on_client_ended
        heartbeat = self.hub.config.default_stream_config.heartbeat_interval
        self._reader = asyncio.current_task()
        # The server pings and closes a peer that stops answering (see ws_protocol), so
        # a connection that is still open is alive.
        self.connections.kept_alive.add(self.client)
        with self.connections.track():
            try:
                self.outbox.queue(
                    "connection_ack",
                    {
                        "clientId": self.client.id,
                        "serverTime": format_timestamp(utc_now()),
                        "heartbeatInterval": heartbeat,
                        "protocolVersion": PROTOCOL_VERSION,
                        **self._expires_at(),
                    },
                )
                if await self._subscribe_from_query():
                    self.flush()
                    await self._read()
                if self.close_with is not None:
                    await self._close_now(*self.close_with)
            finally:
                self.connections.kept_alive.discard(self.client)
                self.hub.disconnect(self.client.id, CloseReason.UNSUBSCRIBED)
                await self._stop_writer()
                self._release()

    def _release(self) -> None:
        """Break the session's reference cycles (tasks, callbacks, subscriptions) so
        reference counting frees it, its queues and its socket buffers at once rather
        than at the garbage collector's next full pass."""
        for entry in self.subs.values():
            entry.sub.on_ready = None
        self.subs.clear()
        self.outbox.take_replies()
        self._reader = None

    async def _subscribe_from_query(self) -> bool:
        """``/ws?streamId=`` subscribes at once; an unknown stream closes with 4004."""
        params = self.ws.query_params
        stream_ref = params.get("streamId")
        if not stream_ref:
            return True
        try:
            filters = filters_from_query(params.get("types"), params.get("filter"))
            since = parse_seq(params.get("since"), "query.since")
            await self._open(stream_ref, filters, since, None, batch=False, from_query=True)
        except StreamNotFound as exc:
            self.close_with = (CLOSE_STREAM_NOT_FOUND, exc.message)
            return False
        except Forbidden as exc:
            self.close_with = (CLOSE_FORBIDDEN, exc.message)
            return False
        except TooManyClients as exc:
            self.close_with = (CLOSE_TOO_MANY_CLIENTS, exc.message)
            return False
        except StreamerError as exc:
            self.outbox.queue_error(exc.code, exc.message, None, exc.details)
        return True

    def _on_client_ended(self, reason: CloseReason) -> None:
        """The hub ended this client (operator, idle, shutdown): close the socket."""
        if self.close_with is None:
            self.close_with = CLOSE_FOR_REASON.get(reason, (CLOSE_SHUTDOWN, reason.value))
        self._end_reading()

    def _on_ready(self, sub: Subscription) -> None:
        if sub.close_reason in ENDS_CONNECTION:
            self.close_with = CLOSE_FOR_REASON[sub.close_reason]
            self._end_reading()
            return
        self.connections.flusher.request(self)

    def _end_reading(self) -> None:
        """Stop reading so that the reader closes the connection (``close_with``): a
        reader waiting for a message is cancelled; one handling a message stops after
        it. A writer waiting on a full socket buffer is cancelled."""
        if self._receiving and self._reader is not None and not self._cancelled:
            self._cancelled = True
            self._reader.cancel()
        if self._writer is not None:
            self._writer.cancel()

    async def _close_now(self, code: int, reason: str) -> None:
        """Close with ``code``, after the replies already queued (given
        ``CLOSING_WRITE_TIMEOUT`` if they have to wait)."""
        frames = self.outbox.take_replies()
        if frames:
            with contextlib.suppress(PeerGone, TimeoutError):
                await asyncio.wait_for(self._frames.send(frames), CLOSING_WRITE_TIMEOUT)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                self.ws.close(code, fit_close_reason(reason)), CLOSING_WRITE_TIMEOUT
            )

    # -- reading -----------------------------------------------------------------------

    async def _read(self) -> None:
        """Read and handle messages until the peer leaves or ``close_with`` is set."""
        assert self.client is not None
        while self.close_with is None:
            self._receiving = True
            try:
                message = await self.ws.receive()
            except asyncio.CancelledError:
                # Cancelled by _end_reading: go on to close. From outside: propagate.
                task = self._reader
                if not self._cancelled or task is None or task.uncancel() > 0:
                    raise
                return
            finally:
                self._receiving = False
            if message["type"] == "websocket.disconnect":
                return
            self.client.touch()
            if await self._within_rate():
                text = message.get("text")
                if text is None:
                    self.outbox.queue_error("INVALID_MESSAGE", "messages must be JSON text frames")
                else:
                    await self._handle(text)
            self.flush()

    async def _within_rate(self) -> bool:
        """Count a message against the subject's requests: over the limit it gets an
        ``error`` RATE_LIMITED, and a client that keeps going is closed with 4029."""
        rate = self.gate.rate
        if rate is None:
            return True
        assert self.principal is not None
        try:
            await rate.request(self.gate.subject_key(self.principal))
        except RateLimited as exc:
            self._refused_in_a_row += 1
            if self._refused_in_a_row > RATE_LIMITED_MESSAGES_BEFORE_CLOSE:
                self.close_with = (CLOSE_RATE_LIMITED, exc.message)
            else:
                self.outbox.queue_error(exc.code, exc.message, None, exc.details)
            return False
        self._refused_in_a_row = 0
        return True

    async def _handle(self, text: str) -> None:
        message = parse_message(text)
        if isinstance(message, Invalid):
            self.outbox.queue_error(
                "INVALID_MESSAGE", message.message, message.request_id, message.details
            )
            return
        request_id = message.request_id
        try:
            await self._dispatch(message)
        except StreamerError as exc:
            self.outbox.queue_error(exc.code, exc.message, request_id, exc.details)

    async def _dispatch(self, message: ClientMessage) -> None:
        echo = {} if message.request_id is None else {"requestId": message.request_id}
        if isinstance(message, Auth):
            await self._refresh(message.token, echo)
        elif isinstance(message, Ping):
            self.outbox.queue("pong", {"serverTime": format_timestamp(utc_now()), **echo})
        elif isinstance(message, Subscribe):
            sub = await self._open(
                message.stream_id,
                message.filters,
                message.since,
                message.epoch,
                batch=message.batch,
                from_query=False,
                echo=echo,
            )
            if message.replay_options is not None:
                await self._replay(sub.stream_id, message.replay_options, message.request_id)
        elif isinstance(message, Unsubscribe):
            entry = self._find(message.stream_id)
            del self.subs[entry.sub.stream_id]
            entry.sub.close(CloseReason.UNSUBSCRIBED)
            self.outbox.queue("unsubscribed", {"streamId": entry.sub.stream_id, **echo})
        elif isinstance(message, Replay):
            entry = self._find(message.stream_id)
            await self._replay(entry.sub.stream_id, message.replay_options, message.request_id)
        elif isinstance(message, Filter):
            entry = self._find(message.stream_id)
            entry.sub.set_filters(self.hub.check_filters(message.filters))
            self.outbox.queue(
                "filter_ack",
                {
                    "streamId": entry.sub.stream_id,
                    "filters": [f.to_wire() for f in entry.sub.filters],
                    **echo,
                },
            )

    async def _open(
        self,
        stream_ref: str,
        filters: list[StreamFilter] | None,
        since: int | None,
        epoch: str | None,
        *,
        batch: bool,
        from_query: bool,
        echo: dict[str, Any] | None = None,
    ) -> Subscription:
        assert self.principal is not None
        await self.hub.streams.discover(stream_ref)  # made on another hub, perhaps
        Gate.may_subscribe(self.principal, self.hub, stream_ref)
        sub = await self.hub.open_subscription(
            stream_ref, filters=filters, since=since, epoch=epoch, client=self.client
        )
        # Queue the reply before the subscription can have events flushed (the reader
        # flushes both once the message is handled).
        self.outbox.queue(
            "subscribed",
            {
                "streamId": sub.stream_id,
                "lastSeq": sub.last_seq,
                "epoch": sub.epoch,
                "recovered": sub.recovered,
                **self._expires_at(),
                **(echo or {}),
            },
        )
        self.subs[sub.stream_id] = Subscribed(sub, batch, from_query)
        sub.on_ready = self._on_ready
        return sub

    async def _replay(
        self, stream_id: str, spec: HistoryFilter, request_id: str | int | None
    ) -> None:
        assert self.client is not None
        tag = None if request_id is None else str(request_id)
        try:
            await self.hub.replay_to_client(stream_id, self.client.id, spec, tag)
        except ClientNotFound:
            raise NotSubscribed(stream_id) from None

    # -- credentials -----------------------------------------------------------------------

    async def _refresh(self, token: str, echo: dict[str, Any]) -> None:
        """A new credential for the same subject: it sets the new expiry, and ends the
        subscriptions its scope no longer covers. Another subject, or a bad token, ends
        the connection (4001)."""
        assert self.principal is not None
        if not self.gate.required:
            raise InvalidInput.single("token", "this hub does not use credentials")
        try:
            principal = await self.gate.credential(self.ws, token)
            if principal.subject != self.principal.subject:
                raise Unauthorized(reason="a refresh must keep the subject")
        except Unauthorized as exc:
            self.close_with = (CLOSE_UNAUTHORIZED, exc.message)
            return
        self.principal = principal
        self._schedule_expiry()
        self.outbox.queue("auth_ack", {**self._expires_at(), **echo})
        for stream_id, entry in list(self.subs.items()):
            if principal.scope.may_subscribe(entry.sub.workflow_session_id):
                continue
            del self.subs[stream_id]
            entry.sub.close(CloseReason.UNSUBSCRIBED)
            self.outbox.put(
                ws_message(
                    "error",
                    {"streamId": stream_id},
                    error={"code": "FORBIDDEN", "message": "the new credential does not cover it"},
                )
            )
            if entry.from_query:
                self.close_with = (CLOSE_FORBIDDEN, "the new credential does not cover the stream")

    def _expires_at(self) -> dict[str, str]:
        expires = self.principal.expires_at if self.principal is not None else None
        return {} if expires is None else {"expiresAt": format_timestamp(expires)}

    def _schedule_expiry(self) -> None:
        """Close with 4001 ``EXPIRY_GRACE`` seconds after the credential expires, unless a
        refresh comes first."""
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        expires = self.principal.expires_at if self.principal is not None else None
        if expires is None or self.client is None:
            return
        seconds = (expires - utc_now()).total_seconds() + EXPIRY_GRACE
        self._expiry = asyncio.get_running_loop().call_later(
            max(0.0, seconds), self.hub.disconnect, self.client.id, CloseReason.EXPIRED
        )

    def _find(self, stream_ref: str) -> Subscribed:
        stream = self.hub.streams.find(stream_ref)
        entry = None if stream is None else self.subs.get(stream.id)
        if entry is None:
            raise NotSubscribed(stream_ref)
        return entry

    # -- writing -----------------------------------------------------------------------

    def _over_budget(self) -> bool:
        """Whether more than ``limits.maxQueuedBytes`` waits for this client: unwritten
        replies, what its socket has not taken, its subscriptions' queues (each alone held
        to it by ``Subscription.push``: with one and nothing else waiting, nothing to add
        up). A client that sends requests and never reads their answers gets here."""
        buffered = self._frames.buffered()
        if not (buffered or self.outbox.bytes or self._writer) and len(self.subs) <= 1:
            return False
        waiting = self.outbox.bytes + buffered
        for entry in self.subs.values():
            waiting += entry.sub.queued_bytes
        return waiting > self._budget

    def flush(self) -> None:
        """Write the queued replies, then every subscription's queued events, now; if
        that would have to wait, a writer task does it (see ``flush.Flusher``). A client
        over its byte budget is closed as a slow consumer instead."""
        if self.close_with is None and self._over_budget():
            self.close_with = CLOSE_FOR_REASON[CloseReason.SLOW_CONSUMER]
            self.outbox.take_replies()  # it would not read them anyway
            _log.info("websocket_over_budget", client_id=self.client and self.client.id)
            self._end_reading()  # a writer waiting on its full socket is cancelled too
            return
        if self._writer is not None:
            return  # it takes what is queued on its next round
        if self.close_with is not None:
            self._end_reading()
            return
        if not self._frames.ready():
            # (A closed subscription still has its ending to report.)
            if self.outbox.replies or any(
                e.sub.pending or e.sub.closed for e in self.subs.values()
            ):
                self._writer = asyncio.create_task(self._write())
            return
        frames, delivered = self._take_ready()
        if frames:
            # A peer that is gone ends the session through its reader.
            with contextlib.suppress(PeerGone):
                self._frames.write_now(frames)
                self.metrics.record_delivered(delivered)
        if self.close_with is not None:
            self._end_reading()

    async def _write(self) -> None:
        """Send while writes have to wait, until nothing is left: what is queued
        meanwhile goes out on the next round, then writes go straight out again."""
        try:
            while self.close_with is None:
                frames, delivered = self._take_ready()
                if not frames:
                    return
                await self._frames.send(frames)
                self.metrics.record_delivered(delivered)
        except PeerGone:
            pass  # the reader sees the disconnect
        finally:
            self._writer = None
            if self.close_with is not None:
                self._end_reading()

    async def _stop_writer(self) -> None:
        writer = self._writer
        if writer is not None:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)

    def _take_ready(self) -> tuple[list[bytes], list[EventRecord]]:
        """The queued replies, then frames for every subscription's queued events
        (none once the connection is closing)."""
        if self.close_with is not None:
            return self.outbox.take_replies(), []
        taken = self.outbox.take(self.subs)
        if taken.close_with is not None:
            self.close_with = taken.close_with
        return taken.frames, taken.delivered
