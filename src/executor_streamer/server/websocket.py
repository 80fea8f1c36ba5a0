"""The WebSocket protocol: ``GET /ws`` (docs/protocol.md).

One task per connection: it reads client messages, turns them into core calls and queues
the replies. Everything goes out through :meth:`WebSocketSession.flush`, which writes the
queued replies first and then what every subscription of the connection has queued, so a
``subscribed`` always precedes that subscription's events and a ``replay_done`` follows
its replay. The reader flushes after each message; the server's flush pass
(``flush.Flusher``) flushes when events arrive. Only a write that has to wait (the
peer's socket buffer is full, or the server offers nothing but ASGI sends) gets a writer
task, for as long as it waits: an idle connection holds no task but its reader.
Credentials (docs/security.md) are checked before the upgrade when they come in the header
or a ticket, else the first message must be ``auth``; then once per subscription, never
per event. Protocol-level pings are the server's (``ws_protocol``; a peer that stops
answering is closed within the idle timeout), so a connection that is still open has
shown a sign of life.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import orjson
import structlog
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.alias_generators import to_camel
from starlette.websockets import WebSocket

from ..core.clients import ClientSession
from ..core.hub import ExecutorStreamer
from ..core.subscription import CloseReason, ReplayBatch, Subscription
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
    field_errors,
)
from ..history.records import EventRecord
from ..security import Principal
from ..security.authenticator import MAX_CREDENTIAL_CHARS
from ..types.base import format_timestamp, utc_now
from ..types.enums import ClientType
from ..types.filters import HistoryFilter, Seq, StreamFilter
from .auth import Gate
from .connections import LiveConnections
from .errors import (
    CLOSE_FOR_REASON,
    CLOSE_FORBIDDEN,
    CLOSE_RATE_LIMITED,
    CLOSE_SHUTDOWN,
    CLOSE_STREAM_CLOSED,
    CLOSE_STREAM_NOT_FOUND,
    CLOSE_TOO_MANY_CLIENTS,
    CLOSE_UNAUTHORIZED,
    error_response,
)
from .frames import ws_event, ws_events, ws_message
from .internals import asgi_send_of
from .metrics import ServerMetrics
from .query import filters_from_types, parse_seq
from .writers import FrameWriter, PeerGone

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


RequestId = Annotated[str, Field(max_length=128)] | Annotated[int, Field(ge=-(2**63), lt=2**63)]
"""Echoed in the reply: bounded, so that a small request cannot ask for a large answer."""


_request_ids: TypeAdapter[str | int] = TypeAdapter(RequestId)


def _echoable(value: object) -> str | int | None:
    """A malformed message's requestId, if it is one that may be echoed."""
    try:
        return _request_ids.validate_python(value, strict=True)
    except ValidationError:
        return None


_ENDS_CONNECTION = frozenset({CloseReason.SLOW_CONSUMER, CloseReason.RESET})
"""A subscription ended for these closes the whole connection: the client reconnects and
resumes every stream from its positions (and epochs)."""


class _Message(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True, extra="forbid")
    type: str
    request_id: RequestId | None = None


class _Subscribe(_Message):
    type: Literal["subscribe"]
    stream_id: str = Field(min_length=1)
    filters: list[StreamFilter] | None = None
    replay_options: HistoryFilter | None = None
    since: Seq | None = None
    epoch: str | None = None
    batch: bool = False


class _StreamMessage(_Message):
    type: Literal["unsubscribe"]
    stream_id: str = Field(min_length=1)


class _Replay(_Message):
    type: Literal["replay"]
    stream_id: str = Field(min_length=1)
    replay_options: HistoryFilter = Field(default_factory=HistoryFilter)


class _Filter(_Message):
    type: Literal["filter"]
    stream_id: str = Field(min_length=1)
    filters: list[StreamFilter] | None = None


class _Ping(_Message):
    type: Literal["ping"]


class _Auth(_Message):
    type: Literal["auth"]
    token: str = Field(min_length=1, max_length=MAX_CREDENTIAL_CHARS)


_MESSAGES: dict[str, type[_Message]] = {
    "subscribe": _Subscribe,
    "unsubscribe": _StreamMessage,
    "replay": _Replay,
    "filter": _Filter,
    "ping": _Ping,
    "auth": _Auth,
}


@dataclass
class _Sub:
    sub: Subscription
    batch: bool
    from_query: bool


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
        self.subs: dict[str, _Sub] = {}
        self.outbox: list[bytes] = []  # a list: an empty deque costs ~600 bytes per connection
        self._outbox_bytes = 0
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
            await self._deny(exc)
            return
        try:
            await self._run()
        finally:
            if release is not None:
                release()
            if self._expiry is not None:
                self._expiry.cancel()

    async def _deny(self, exc: StreamerError) -> None:
        """Refuse the upgrade with the HTTP answer to ``exc`` (401, 403, 429)."""
        if "websocket.http.response" in self.ws.scope.get("extensions", {}):
            await self.ws.send_denial_response(error_response(exc))
        else:
            await self.ws.close()  # 403 is all an ASGI server without the extension can say

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
        """Wait up to ``AUTH_TIMEOUT`` for ``{type: "auth", token}``, answering pings;
        any other message gets an ``UNAUTHORIZED`` error. The peer leaving, a bad token or
        the time running out is ``Unauthorized``."""
        try:
            async with asyncio.timeout(AUTH_TIMEOUT):
                while True:
                    message = await self.ws.receive()
                    if message["type"] == "websocket.disconnect":
                        raise Unauthorized(reason="left before authenticating")
                    await self.gate.count_anonymous(self.ws)
                    parsed = _parse(message.get("text"))
                    if isinstance(parsed, _Auth):
                        return await self.gate.credential(self.ws, parsed.token)
                    if isinstance(parsed, _Ping):
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
        except TimeoutError:
            raise Unauthorized(reason="no auth message in time") from None

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
                self._queue(
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
        self.outbox, self._outbox_bytes = [], 0
        self._reader = None

    async def _subscribe_from_query(self) -> bool:
        """``/ws?streamId=`` subscribes at once; an unknown stream closes with 4004."""
        params = self.ws.query_params
        stream_ref = params.get("streamId")
        if not stream_ref:
            return True
        try:
            filters = filters_from_types(params.get("types"))
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
            self._queue_error(exc.code, exc.message, None, exc.details)
        return True

    def _on_client_ended(self, reason: CloseReason) -> None:
        """The hub ended this client (operator, idle, shutdown): close the socket."""
        if self.close_with is None:
            self.close_with = CLOSE_FOR_REASON.get(reason, (CLOSE_SHUTDOWN, reason.value))
        self._end_reading()

    def _on_ready(self, sub: Subscription) -> None:
        if sub.close_reason in _ENDS_CONNECTION:
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
        if self.outbox:
            frames, self.outbox, self._outbox_bytes = self.outbox, [], 0
            with contextlib.suppress(PeerGone, TimeoutError):
                await asyncio.wait_for(self._frames.send(frames), CLOSING_WRITE_TIMEOUT)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(code, reason), CLOSING_WRITE_TIMEOUT)

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
                    self._queue_error("INVALID_MESSAGE", "messages must be JSON text frames")
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
                self._queue_error(exc.code, exc.message, None, exc.details)
            return False
        self._refused_in_a_row = 0
        return True

    async def _handle(self, text: str) -> None:
        message = _parse(text)
        if isinstance(message, _Invalid):
            self._queue_error(
                "INVALID_MESSAGE", message.message, message.request_id, message.details
            )
            return
        request_id = message.request_id
        try:
            await self._dispatch(message)
        except StreamerError as exc:
            self._queue_error(exc.code, exc.message, request_id, exc.details)

    async def _dispatch(self, message: _Message) -> None:
        echo = {} if message.request_id is None else {"requestId": message.request_id}
        if isinstance(message, _Auth):
            await self._refresh(message.token, echo)
        elif isinstance(message, _Ping):
            self._queue("pong", {"serverTime": format_timestamp(utc_now()), **echo})
        elif isinstance(message, _Subscribe):
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
        elif isinstance(message, _StreamMessage):
            entry = self._find(message.stream_id)
            del self.subs[entry.sub.stream_id]
            entry.sub.close(CloseReason.UNSUBSCRIBED)
            self._queue("unsubscribed", {"streamId": entry.sub.stream_id, **echo})
        elif isinstance(message, _Replay):
            entry = self._find(message.stream_id)
            await self._replay(entry.sub.stream_id, message.replay_options, message.request_id)
        elif isinstance(message, _Filter):
            entry = self._find(message.stream_id)
            if (
                message.filters is not None
                and len(message.filters) > self.hub.config.limits.max_filters
            ):
                raise InvalidInput.single("filters", "too many filters")
            entry.sub.set_filters(message.filters)
            self._queue(
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
        self._queue(
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
        self.subs[sub.stream_id] = _Sub(sub, batch, from_query)
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
        self._queue("auth_ack", {**self._expires_at(), **echo})
        for stream_id, entry in list(self.subs.items()):
            if principal.scope.may_subscribe(entry.sub.workflow_session_id):
                continue
            del self.subs[stream_id]
            entry.sub.close(CloseReason.UNSUBSCRIBED)
            self._put(
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

    def _find(self, stream_ref: str) -> _Sub:
        stream = self.hub.streams.find(stream_ref)
        entry = None if stream is None else self.subs.get(stream.id)
        if entry is None:
            raise NotSubscribed(stream_ref)
        return entry

    # -- writing -----------------------------------------------------------------------

    def _queue(self, kind: str, metadata: dict[str, Any]) -> None:
        self._put(ws_message(kind, metadata))

    def _queue_error(
        self,
        code: str,
        message: str,
        request_id: Any = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        error: dict[str, Any] = {"code": code, "message": message}
        if details:
            error["details"] = details
        metadata = None if request_id is None else {"requestId": request_id}
        self._put(ws_message("error", metadata, error=error))

    def _put(self, frame: bytes) -> None:
        self.outbox.append(frame)
        self._outbox_bytes += len(frame)

    def _over_budget(self) -> bool:
        """Whether more than ``limits.maxQueuedBytes`` waits for this client: replies not
        yet written, what its socket has not taken, events queued for its subscriptions.
        A client that sends requests and never reads their answers gets here."""
        waiting = self._outbox_bytes + self._frames.buffered()
        waiting += sum(entry.sub.queued_bytes for entry in self.subs.values())
        return waiting > self._budget

    def flush(self) -> None:
        """Write the queued replies, then every subscription's queued events, now; if
        that would have to wait, a writer task does it (see ``flush.Flusher``). A client
        over its byte budget is closed as a slow consumer instead."""
        if self.close_with is None and self._over_budget():
            self.close_with = CLOSE_FOR_REASON[CloseReason.SLOW_CONSUMER]
            self.outbox, self._outbox_bytes = [], 0  # it would not read them anyway
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
            if self.outbox or any(e.sub.pending or e.sub.closed for e in self.subs.values()):
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
        frames, self.outbox, self._outbox_bytes = self.outbox, [], 0
        delivered: list[EventRecord] = []
        if self.close_with is None:
            self._collect(frames, delivered)
        return frames, delivered

    def _collect(self, frames: list[bytes], delivered: list[EventRecord]) -> None:
        """Frames for what every subscription has queued, until one asks to close."""
        for entry in list(self.subs.values()):
            self._take_items(entry, frames, delivered)
            if self.close_with is not None:
                return

    def _take_items(self, entry: _Sub, frames: list[bytes], delivered: list[EventRecord]) -> None:
        """Turn what ``entry`` has queued into frames."""
        sub = entry.sub
        if sub.close_reason in _ENDS_CONNECTION:
            self.close_with = CLOSE_FOR_REASON[sub.close_reason]
            return
        live = sub.drain_live()
        if live is None:  # a replay batch is queued: frame what comes before and after it
            live = []
            for item in sub.drain():
                if isinstance(item, EventRecord):
                    live.append(item)
                    continue
                self._live_frames(live, entry.batch, frames)
                delivered += live
                live = []
                frames.extend(ws_event(record, replay=True) for record in item.records)
                delivered += item.records
                frames.append(ws_message("replay_done", self._replay_done(sub.stream_id, item)))
        self._live_frames(live, entry.batch, frames)
        delivered += live
        if sub.closed and not sub.pending and self.subs.get(sub.stream_id) is entry:
            del self.subs[sub.stream_id]
            if sub.close_reason is CloseReason.STREAM_CLOSED:
                frames.append(
                    ws_message(
                        "error",
                        {"streamId": sub.stream_id},
                        error={"code": "STREAM_CLOSED", "message": "the stream was closed"},
                    )
                )
                if entry.from_query:
                    self.close_with = (CLOSE_STREAM_CLOSED, "stream closed")

    def _live_frames(self, records: list[EventRecord], batch: bool, frames: list[bytes]) -> None:
        if records:
            build = _batch_frame if batch else _event_frames
            frames.extend(self.connections.flusher.frames(build, records, build))

    @staticmethod
    def _replay_done(stream_id: str, batch: ReplayBatch) -> dict[str, Any]:
        metadata: dict[str, Any] = {
            "streamId": stream_id,
            "count": len(batch.records),
            "lastSeq": batch.last_seq,
        }
        if batch.request_id is not None:
            metadata["requestId"] = batch.request_id
        return metadata


@dataclass(frozen=True, slots=True)
class _Invalid:
    message: str
    request_id: str | int | None = None
    details: dict[str, Any] | None = None


def _parse(text: str | None) -> _Message | _Invalid:
    """A client message, validated, or why it is not one."""
    if text is None:
        return _Invalid("messages must be JSON text frames")
    try:
        raw = orjson.loads(text)
    except orjson.JSONDecodeError:
        return _Invalid("not valid JSON")
    request_id = _echoable(raw.get("requestId")) if isinstance(raw, dict) else None
    kind = raw.get("type") if isinstance(raw, dict) else None
    model = _MESSAGES.get(kind) if isinstance(kind, str) else None
    if model is None:
        return _Invalid(f"type must be one of: {', '.join(_MESSAGES)}", request_id)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        error = InvalidInput(field_errors(exc))
        return _Invalid(error.message, request_id, error.details)


def _batch_frame(records: Sequence[EventRecord]) -> list[bytes]:
    return [ws_events(records)]


def _event_frames(records: Sequence[EventRecord]) -> list[bytes]:
    return [ws_event(record) for record in records]
