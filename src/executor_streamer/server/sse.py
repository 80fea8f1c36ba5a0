"""Server-Sent Events: ``GET /api/streams/{id}/events`` (docs/protocol.md).

The response opens with ``event: subscribed`` (the stream's epoch and last seq, and
whether the resume asked for is complete). One writer per connection drains the client's
subscription and sends everything queued as one write (several frames in one chunk).
Events replayed on request (``POST /api/streams/{id}/replay/{clientId}``) go out as
``event: replay_event`` with no ``id:``, so the client's ``Last-Event-ID`` never moves
back. Heartbeats go out after ``heartbeatInterval`` without other writes. A write that
does not drain within the idle timeout means the client vanished; so does falling
``bufferSize`` events behind: either way the connection is cut, and the client resumes
with ``Last-Event-ID`` without losing anything.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import structlog
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ..core.clients import ClientSession
from ..core.hub import ExecutorStreamer
from ..core.subscription import CloseReason, Subscription
from ..history.records import EventRecord
from ..types.base import format_timestamp, utc_now
from .connections import LiveConnections, liveness_interval
from .flush import Pacer
from .frames import sse_event, sse_frame, sse_preamble, sse_replay_event
from .internals import ChunkWriter
from .metrics import ServerMetrics
from .timers import Signal, Ticker

_log = structlog.get_logger("executor_streamer.sse")

HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]

FINAL_WRITE_TIMEOUT = 2.0

# What the last frame says when the hub ends the stream for a client.
_FINAL_ERROR = {
    CloseReason.STREAM_CLOSED: ("STREAM_CLOSED", "the stream was closed"),
    CloseReason.SLOW_CONSUMER: ("SLOW_CONSUMER", "fell too far behind; reconnect to resume"),
    CloseReason.DISCONNECTED: ("DISCONNECTED", "disconnected by an operator"),
    CloseReason.IDLE: ("DISCONNECTED", "no sign of life within the idle timeout"),
    CloseReason.SHUTDOWN: ("SHUTTING_DOWN", "the server is shutting down"),
    CloseReason.FAILED: ("INTERNAL_ERROR", "the server failed; reconnect to resume"),
    CloseReason.EXPIRED: ("TOKEN_EXPIRED", "the credential expired; reconnect with a new one"),
    CloseReason.RESET: ("STREAM_RESET", "the stream began a new epoch; reconnect to resume"),
}


class _Aborted(Exception):
    """The connection is cut without finishing the response."""


class EventStreamResponse(Response):
    """A response that streams one subscription as SSE frames until it ends."""

    media_type = "text/event-stream"

    def __init__(
        self,
        hub: ExecutorStreamer,
        client: ClientSession,
        sub: Subscription,
        metrics: ServerMetrics,
        connections: LiveConnections,
        headers: list[tuple[bytes, bytes]],
        *,
        expires_at: datetime | None = None,
        release: Callable[[], None] | None = None,
    ) -> None:
        """The response ends with ``TOKEN_EXPIRED`` at ``expires_at`` (the client's
        credential's), and calls ``release`` when it ends however it does."""
        super().__init__(status_code=200)
        self.expires_at = expires_at
        self.release = release
        self.start_headers = HEADERS + headers
        self.hub = hub
        self.client = client
        self.sub = sub
        self.metrics = metrics
        self.connections = connections
        stream = hub.streams.resolve(sub.stream_id)
        # A draining write is an SSE client's only sign of life, so a quiet stream
        # heartbeats well inside the idle timeout even if heartbeatInterval is longer.
        self.heartbeat = min(stream.config.heartbeat_interval / 1000, liveness_interval(hub))
        self.write_timeout = hub.config.server.idle_client_timeout / 1000
        self._wake = Signal()
        self._sending = False
        self._writer: asyncio.Task[None] | None = None
        self._loop = asyncio.get_running_loop()
        self._last_write = self._loop.time()
        self._sending_since: float | None = None
        self._heartbeat_due = False
        self._started = False
        self._chunks: ChunkWriter | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._chunks = ChunkWriter(send)
        self.sub.on_ready = self._on_ready
        self.client.on_disconnect = self._on_client_ended
        # Ticks four times per heartbeat: a heartbeat goes out 1 to 1.25 intervals after
        # the last write, and a write stuck past the deadline is seen as quickly.
        ticker = Ticker(self.heartbeat / 4, self._tick)
        expiry = None
        if self.expires_at is not None:
            seconds = max(0.0, (self.expires_at - utc_now()).total_seconds())
            expiry = self._loop.call_later(
                seconds, self.hub.disconnect, self.client.id, CloseReason.EXPIRED
            )
        with self.connections.track():
            self._writer = asyncio.create_task(self._write(send))
            listener = asyncio.create_task(self._listen(receive))
            try:
                await asyncio.wait({self._writer, listener}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                ticker.stop()
                if expiry is not None:
                    expiry.cancel()
                if self.release is not None:
                    self.release()
                for task in (self._writer, listener):
                    task.cancel()
                results = await asyncio.gather(self._writer, listener, return_exceptions=True)
                self.hub.disconnect(self.client.id, CloseReason.UNSUBSCRIBED)
                # Break the cycles through the writer task and the subscription's
                # callback, so the response and its queue go at once (see WebSocket).
                self.sub.on_ready = None
                self._writer = None
        error = results[0]
        if isinstance(error, Exception) and not isinstance(error, _Aborted):
            raise error

    def _on_ready(self, sub: Subscription) -> None:
        if sub.close_reason is None:
            self.connections.flusher.request(self)
            return
        self._wake.set()
        if sub.close_reason is CloseReason.SLOW_CONSUMER:
            self._abort_if_stuck()

    def flush(self) -> None:
        """Write what the subscription has queued now, if that needs no waiting (see
        ``flush.Flusher``); otherwise the writer task takes over."""
        chunks = self._chunks
        if (
            chunks is None
            or self._sending
            or not self._started
            or self.sub.closed
            or not chunks.ready()
        ):
            self._wake.set()
            return
        body, records = self._take()
        if not records:
            return
        chunks.write_now(body)
        self.metrics.record_delivered(records)
        self._last_write = self._loop.time()
        self.client.touch()

    def _take(self) -> tuple[bytes, list[EventRecord]]:
        """Everything queued now: its frames, and the records they carry. Live and
        resumed events are ``stream_event`` frames with their ``id:``; a replay batch's
        are ``replay_event`` frames without one, in place among them."""
        live = self.sub.drain_live()
        if live is not None:  # no replay queued: the common case, frames shared per pass
            return (self._body(live) if live else b""), live
        parts: list[bytes] = []
        records: list[EventRecord] = []
        run: list[EventRecord] = []
        for item in self.sub.drain():
            if isinstance(item, EventRecord):
                run.append(item)
                continue
            if run:
                parts.append(self._body(run))
                records += run
                run = []
            parts.extend(sse_replay_event(record) for record in item.records)
            records += item.records
        if run:
            parts.append(self._body(run))
            records += run
        return b"".join(parts), records

    def _body(self, records: list[EventRecord]) -> bytes:
        """The frames of ``records``, built once per flush pass for every client that
        takes the same records (``flush.FrameCache``)."""
        return self.connections.flusher.frames("sse", records, _sse_chunk)[0]

    def _on_client_ended(self, reason: CloseReason) -> None:
        self._wake.set()
        self._abort_if_stuck()

    def _tick(self) -> None:
        now = self._loop.time()
        if self._sending_since is not None and now - self._sending_since > self.write_timeout:
            self._abort_if_stuck()  # the client stopped reading: it vanished
        elif now - self._last_write >= self.heartbeat:
            self._heartbeat_due = True
            self._wake.set()

    def _abort_if_stuck(self) -> None:
        # A writer blocked on a client that does not read would never see the news.
        if self._sending and self._writer is not None:
            self._writer.cancel()

    async def _listen(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    async def _write(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.start_headers})
        sub = self.sub
        opening = sse_preamble() + sse_frame(
            "subscribed",
            {
                "streamId": sub.stream_id,
                "lastSeq": sub.last_seq,
                "epoch": sub.epoch,
                "recovered": sub.recovered,
            },
        )
        if not sub.recovered:
            opening += sse_frame(
                "recovery",
                {"recovered": False, "epoch": sub.epoch, "firstSeq": sub.first_retained_seq},
            )
        await self._send(send, opening)
        self._started = True
        pacer = Pacer()
        while True:
            if self.sub.close_reason is CloseReason.SLOW_CONSUMER:
                await self._finish(send, CloseReason.SLOW_CONSUMER)
                return
            if self.sub.pending:
                await pacer.pace()
                body, records = self._take()
                if records:
                    await self._send(send, body)
                    self.metrics.record_delivered(records)
                continue
            if self.sub.closed:
                assert self.sub.close_reason is not None
                await self._finish(send, self.sub.close_reason)
                return
            if self._heartbeat_due:
                self._heartbeat_due = False
                await self._send(send, self._heartbeat())
                continue
            self._wake.clear()
            await self._wake.wait()

    def _heartbeat(self) -> bytes:
        stream = self.hub.streams.find(self.sub.stream_id)
        data: dict[str, Any] = {
            "timestamp": format_timestamp(utc_now()),
            "active_clients": len(stream.clients) if stream else 0,
        }
        return sse_frame("heartbeat", data)

    async def _finish(self, send: Send, reason: CloseReason) -> None:
        final = _FINAL_ERROR.get(reason)
        body = b"" if final is None else sse_frame("error", {"code": final[0], "message": final[1]})
        if reason is CloseReason.SLOW_CONSUMER:
            _log.info("sse_slow_consumer", client_id=self.client.id)
        # The last words get a short deadline: the client may be the reason we stop.
        await self._send(send, body, FINAL_WRITE_TIMEOUT)
        with contextlib.suppress(OSError):
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _send(self, send: Send, body: bytes, seconds: float | None = None) -> None:
        """Write ``body``; the ticker cuts a write that has not drained after the idle
        timeout (``seconds`` instead: a deadline of its own, for the last words)."""
        self._sending = True
        self._sending_since = self._loop.time()
        message = {"type": "http.response.body", "body": body, "more_body": True}
        try:
            if seconds is None:
                await send(message)
            else:
                async with asyncio.timeout(seconds):
                    await send(message)
        except (TimeoutError, asyncio.CancelledError, OSError):
            raise _Aborted from None
        finally:
            self._sending = False
            self._sending_since = None
        self._last_write = self._loop.time()
        self.client.touch()  # a write that drained is an SSE client's sign of life


def _sse_chunk(records: Sequence[EventRecord]) -> list[bytes]:
    return [b"".join(sse_event(r) for r in records)]
