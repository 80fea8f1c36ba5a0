"""Every use of a dependency's private parts, in one place.

The hot paths write to sockets more directly than the libraries' public APIs allow (each
step measured in bench/README.md): a publish's answer in one write, SSE chunks straight to
the transport, several WebSocket frames in one write under the hub's own WebSocket
protocol (``ws_protocol``), which itself stands in for uvicorn's. The parts they use are:

- uvicorn: the httptools protocol's ``RequestResponseCycle`` (its response state, flow
  control, transport and the ``STATUS_LINE`` table); ``HttpToolsProtocol``'s parser,
  pipeline, current cycle and keep-alive timer, which :class:`BoundedHttpProtocol` uses to
  bound what one connection can make the hub hold; ``protocols.utils`` (addresses,
  ``ClientDisconnected``); ``ServerState`` (what a custom WebSocket protocol is given);
  ``Server.shutdown`` and ``Server.capture_signals``, which :class:`DrainingServer`
  overrides to close live clients first and to exit 0 after a signal;
- Starlette: ``WebSocket._send``, the ASGI send behind a WebSocket;
- websockets: ``ServerProtocol.parser_exc`` and ``.expect_continuation_frame``;
- starlette-compress: ``remove_compress_type``, public but process-wide.

pyproject.toml bounds these dependencies to the versions the tests have run against.
:func:`verify` checks that every part is still there; the server calls it at start, and
``tests/server/test_internals.py`` fails with its message, so a dependency that moved a
part is a loud failure, not a silent fall back to a slower path.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import inspect
import signal
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, ClassVar

import httptools
import uvicorn
from starlette.responses import Response
from starlette.types import Send
from starlette.websockets import WebSocket
from starlette_compress import remove_compress_type
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.protocols.utils import ClientDisconnected, get_local_addr, get_remote_addr, is_ssl
from uvicorn.server import ServerState
from websockets.server import ServerProtocol

__all__ = [
    "BoundedHttpProtocol",
    "ChunkWriter",
    "ClientDisconnected",
    "DrainingServer",
    "ServerState",
    "asgi_send_of",
    "expects_continuation",
    "get_local_addr",
    "get_remote_addr",
    "is_ssl",
    "never_compress",
    "owner_of_send",
    "parser_failed",
    "verify",
    "write_whole_response",
]


def owner_of_send(send: Send) -> Any:
    """The object an ASGI ``send`` is a bound method of (a uvicorn response cycle, the
    hub's WebSocket protocol), or None."""
    return getattr(send, "__self__", None)


def asgi_send_of(websocket: WebSocket) -> Send:
    """The ASGI ``send`` behind a Starlette WebSocket, to reach the protocol's own writes."""
    return websocket._send


def parser_failed(conn: ServerProtocol) -> bool:
    """Whether the connection's frame parser stopped on a protocol error."""
    return conn.parser_exc is not None


def expects_continuation(conn: ServerProtocol) -> bool:
    """Whether a fragmented message is being received (the next frame continues it)."""
    return bool(conn.expect_continuation_frame)


def never_compress(content_type: str) -> None:
    """Exclude a content type from compression, process-wide (starlette-compress keeps
    its content types in module globals)."""
    remove_compress_type(content_type)


class DrainingServer(uvicorn.Server):
    """uvicorn, but on shutdown it first awaits ``before_shutdown`` (which closes every
    live client: WebSockets with 1001, SSE streams with an error frame; uvicorn would
    otherwise wait on those never-ending responses until its own timeout), and after a
    SIGINT or SIGTERM it does not raise the signal again, so a completed graceful
    shutdown exits 0."""

    def __init__(
        self, config: uvicorn.Config, before_shutdown: Callable[[], Awaitable[None]]
    ) -> None:
        super().__init__(config)
        self._before_shutdown = before_shutdown

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await self._before_shutdown()
        await super().shutdown(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        signals = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in signals}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


class ChunkWriter:
    """The fast path for a chunked HTTP response body (SSE)."""

    def __init__(self, send: Send) -> None:
        cycle = owner_of_send(send)
        self._cycle = cycle if isinstance(cycle, RequestResponseCycle) else None

    def ready(self) -> bool:
        """Whether :meth:`write_now` can write at once: the response started chunked,
        is not complete, the peer is there and its socket buffer is not full."""
        cycle = self._cycle
        return (
            cycle is not None
            and cycle.response_started
            and bool(cycle.chunked_encoding)
            and not cycle.response_complete
            and not cycle.disconnected
            and not cycle.flow.write_paused
            and not cycle.transport.is_closing()
        )

    def write_now(self, body: bytes) -> None:
        """Write ``body`` as one chunk; only when :meth:`ready`."""
        assert self._cycle is not None
        self._cycle.transport.write(b"%x\r\n%b\r\n" % (len(body), body))


def write_whole_response(send: Send, response: Response) -> bool:
    """Write ``response`` in one transport write, as uvicorn's cycle would in two; False
    when that cannot be done at once (a response that sends more than head and body, or a
    background task; another server, an access log to write, a full socket buffer), and
    the caller sends it through ASGI instead."""
    cycle = owner_of_send(send)
    if (
        not isinstance(cycle, RequestResponseCycle)
        or type(response).__call__ is not Response.__call__
        or response.background is not None
        or cycle.response_started
        or cycle.disconnected
        or cycle.access_log
        or cycle.flow.write_paused
        or cycle.transport.is_closing()
    ):
        return False
    parts = [STATUS_LINE[response.status_code]]
    for name, value in [*cycle.default_headers, *response.raw_headers]:
        parts += [name, b": ", value, b"\r\n"]
    if not cycle.keep_alive:
        parts.append(b"connection: close\r\n")
    parts += [b"\r\n", bytes(response.body)]
    cycle.response_started = True
    cycle.waiting_for_100_continue = False
    cycle.transport.write(b"".join(parts))
    cycle.response_complete = True
    cycle.message_event.set()
    if not cycle.keep_alive:
        cycle.transport.close()
    cycle.on_response()
    return True


MAX_HEADER_BYTES = 64 << 10
"""A request line and headers larger than this are refused with 431."""
HEADER_DEADLINE_SECONDS = 10.0
"""A request's line and headers must arrive within this long of its first byte (and a new
connection's first request within this long of the connection): slowloris."""
MAX_QUEUED_REQUESTS = 16
"""Pipelined requests read ahead of the one being answered; one more ends the connection."""
MAX_WAITING_CONNECTIONS = 256
"""Connections still waiting for a request's headers; past it, the longest-waiting one that
has waited a second or more is closed for each new connection."""
PATIENCE_SECONDS = 1.0
LINGER_SECONDS = 2.0
"""How long a refused connection's input is still read (and dropped) after the answer;
for a body answered early (a 413, a 401), how long it may pause."""
LINGER_MAX_BYTES = 64 << 20
LINGER_MAX_SECONDS = 30.0
"""How much, and how long in all, the rest of a body answered early is read and dropped
while it keeps coming (nginx's ``lingering_time``, bounded in bytes too): a client still
uploading a body over the cap reads its 413 rather than a reset, and an endless body costs
a bounded read."""


class _QueueFull(Exception):
    """Raised in a parser callback to stop reading the connection: its pipelined requests
    went past the queue, or a request's headers past their cap."""


class BoundedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, bounded as docs/security.md "Connections and memory"
    says: what one connection can make the hub hold does not depend on what it sends.

    - Headers: at most :data:`MAX_HEADER_BYTES` (then 431 and close), within
      :data:`HEADER_DEADLINE_SECONDS` of the request's first byte (then 408 and close).
    - Pipelining: uvicorn parses every request in what it read and resumes reading after
      each answer, so a client that pipelines without reading grew the hub without bound.
      Here reading resumes only when nothing is queued, and a read that queues more than
      :data:`MAX_QUEUED_REQUESTS` stops there: the queued requests are answered and the
      connection closes, so a pipelining client retries the rest on a new one (RFC 9112
      §9.3.2).
    - Connections waiting for headers are few: past :data:`MAX_WAITING_CONNECTIONS`, the
      longest-waiting one is closed for each new one (only one that has waited a second
      or more: an honest client sends its headers at once, even in a reconnect storm).
    - Bodies: the rest of one answered early (a 413, a 401) is read and dropped while it
      keeps coming (a pause of :data:`LINGER_SECONDS`, or :data:`LINGER_MAX_BYTES` or
      :data:`LINGER_MAX_SECONDS` in all, and the connection closes); a body whose
      chunking breaks off ends its request (its app sees the client gone) with a 400.

    :func:`bounded_http_protocol` gives a subclass per server, with its own list of
    connections waiting for headers.
    """

    waiting: ClassVar[dict[BoundedHttpProtocol, float]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_headers = True  # a request's line and headers are being read
        self._began = 0.0  # when they began (or the connection did, for its first)
        self._header_bytes = 0
        self._read = 0  # the size of the read being parsed
        self._began_in = 0  # the size of the read a request began in, if not counted above
        self._too_large = False
        self._unread: RequestResponseCycle | None = None  # answered before its body came
        self._unread_since = self._unread_read_at = 0.0
        self._unread_bytes = 0
        self._deadline: asyncio.TimerHandle | None = None
        self._finishing = False  # no more requests are read; close after the queued answers

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._close_the_longest_waiting()
        self._began = self.loop.time()
        self._await_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._finishing:
            return  # the rest of a pipeline that went too far: never read
        self._unset_keepalive_if_required()
        self._read = len(data)
        if self._unread is not None:
            self._unread_read_at = self.loop.time()
            self._unread_bytes += self._read
            if self._unread_bytes > LINGER_MAX_BYTES:
                self._close_if_unread(self._unread)
                return
        if self._in_headers:
            self._header_bytes += self._read
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            if self._finishing:
                self._finish_after_queued()
            elif self._too_large:
                self._refuse(431, "Request header fields too large.")
            else:
                self.logger.warning("Invalid HTTP request received.")
                self._bad_request()
            return
        if not self._in_headers:
            return
        if self._header_bytes > MAX_HEADER_BYTES:
            self._refuse(431, "Request header fields too large.")
        elif self._deadline is None:
            # A read ended inside a request's headers: only now is a deadline needed (a
            # request that arrives whole, nearly every one, costs no timer).
            self._await_headers()

    def on_message_begin(self) -> None:
        if len(self.pipeline) >= MAX_QUEUED_REQUESTS:
            self._finishing = True
            raise _QueueFull  # stops the parser here: nothing more of this read is kept
        super().on_message_begin()
        if not self._in_headers:
            # A request that begins in the middle of a read (keep-alive, pipelining): that
            # read was not counted, and some of it may be this request's headers.
            self._in_headers = True
            self._began = self.loop.time()
            self._header_bytes = 0
            self._began_in = self._read

    def on_headers_complete(self) -> None:
        # Exact only when it could matter: headers that took several reads or one large
        # read (a request that arrives whole in a small read cannot be over).
        if self._header_bytes + self._began_in + self._read > MAX_HEADER_BYTES and (
            len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
            > MAX_HEADER_BYTES
        ):
            self._too_large = True
            raise _QueueFull  # stops the parser; data_received answers 431
        self._in_headers = False
        if self._deadline is not None:
            self._stop_waiting()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        cycle = self.cycle
        unread = cycle is not None and cycle.more_body and not self.transport.is_closing()
        super().on_response_complete()
        if unread:
            # Answered before its body was read (a 413, a 401): the parser reads and drops
            # the rest, so the answer is not lost to a reset and the connection serves on;
            # but a body still coming after a moment is not read for ever.
            self._unread = cycle
            self._unread_since = self._unread_read_at = self.loop.time()
            self._unread_bytes = 0
            self.loop.call_later(LINGER_SECONDS, self._linger, cycle)
        elif self.pipeline:
            self.flow.pause_reading()  # read on only once every queued request is answered

    def on_message_complete(self) -> None:
        if self.cycle is self._unread:
            self._unread = None  # the rest of an answered request's body came and went
        super().on_message_complete()

    def _linger(self, cycle: RequestResponseCycle) -> None:
        """Close once the rest of ``cycle``'s body pauses, or has been read long enough."""
        if self._unread is not cycle:
            return
        now = self.loop.time()
        until = min(self._unread_read_at + LINGER_SECONDS, self._unread_since + LINGER_MAX_SECONDS)
        if now >= until:
            self._close_if_unread(cycle)
        else:
            self.loop.call_later(until - now, self._linger, cycle)

    def _close_if_unread(self, cycle: RequestResponseCycle) -> None:
        if self._unread is cycle:
            self._unread = None
            self._finishing = True
            self.transport.close()

    def _await_headers(self) -> None:
        """Arm the deadline :data:`HEADER_DEADLINE_SECONDS` after the headers began."""
        due = max(0.0, self._began + HEADER_DEADLINE_SECONDS - self.loop.time())
        self._deadline = self.loop.call_later(due, self._too_slow)
        self.waiting[self] = self._began

    def _stop_waiting(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self.waiting.pop(self, None)

    def _too_slow(self) -> None:
        self._deadline = None
        self.waiting.pop(self, None)
        self._refuse(408, "Request headers took too long.")

    def _bad_request(self) -> None:
        """The parser gave up. A request whose body was being read learns that its client
        is gone (its app stops waiting for the rest), and is answered 400 if nothing was
        answered yet; requests read whole before are answered first."""
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete and cycle.more_body:
            cycle.disconnected = True
            cycle.message_event.set()
            if cycle.response_started:
                self._finishing = True
                self.transport.close()
                return
            self._refuse(400, "Invalid HTTP request received.", in_flight=False)
            return
        self._refuse(400, "Invalid HTTP request received.")

    def _close_the_longest_waiting(self) -> None:
        if len(self.waiting) < MAX_WAITING_CONNECTIONS:
            return
        oldest, since = next(iter(self.waiting.items()))
        if self.loop.time() - since >= PATIENCE_SECONDS:
            oldest._refuse(408, "Request headers took too long.")

    def _refuse(self, status: int, message: str, in_flight: bool = True) -> None:
        """Answer ``status`` and close, or, with answers still to write, close after them
        (``in_flight`` False: the request in flight is not answered, and this is its answer)."""
        if self._finishing:
            return  # refused already
        self._stop_waiting()
        self._in_headers = False
        self._finishing = True
        if in_flight and self.cycle is not None and not self.cycle.response_complete:
            self._finish_after_queued()
            return
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        body = message.encode("ascii")
        head.append(b"content-type: text/plain; charset=utf-8\r\nconnection: close\r\n")
        head.append(b"content-length: %d\r\n\r\n%b" % (len(body), body))
        self.transport.write(b"".join(head))
        if self.transport.can_write_eof():
            # Closing now, with what the peer still sends unread, would reset the
            # connection and lose the answer: read (and drop) a little longer instead.
            self.transport.write_eof()
            self.loop.call_later(LINGER_SECONDS, self.transport.close)
        else:
            self.transport.close()

    def _finish_after_queued(self) -> None:
        """Stop reading; the last request read is answered with ``connection: close``."""
        self.flow.pause_reading()
        last = self.pipeline[0][0] if self.pipeline else self.cycle
        if last is None or last.response_complete:
            self.transport.close()
        else:
            last.keep_alive = False


def bounded_http_protocol() -> type[BoundedHttpProtocol]:
    """A :class:`BoundedHttpProtocol` for one server (its own waiting connections)."""
    return type("HubHttpProtocol", (BoundedHttpProtocol,), {"waiting": {}})


_CYCLE_PARTS = (
    "transport",
    "flow",
    "access_log",
    "default_headers",
    "message_event",
    "on_response",
    "disconnected",
    "keep_alive",
    "waiting_for_100_continue",
    "response_started",
    "response_complete",
    "chunked_encoding",
)


async def _no_app(scope: Any, receive: Any, send: Any) -> None:
    """An ASGI app for :func:`missing_parts` to build a protocol with."""


def missing_parts() -> list[str]:
    """The private parts above that the installed versions no longer have."""
    missing: list[str] = []

    def need(owner: object, names: tuple[str, ...], where: str) -> None:
        missing.extend(f"{where}.{name}" for name in names if not hasattr(owner, name))

    transport = asyncio.Transport()
    cycle = RequestResponseCycle(
        {"type": "http"},  # type: ignore[typeddict-item]
        transport,
        FlowControl(transport),
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        False,
        [],
        asyncio.Event(),
        False,
        True,
        lambda: None,
    )
    need(cycle, _CYCLE_PARTS, "uvicorn RequestResponseCycle")
    need(cycle.flow, ("write_paused", "pause_reading"), "uvicorn FlowControl")
    need(
        HttpToolsProtocol,
        (
            "_unset_keepalive_if_required",
            "_should_upgrade",
            "_unsupported_upgrade_warning",
            "handle_websocket_upgrade",
            "on_response_complete",
        ),
        "uvicorn HttpToolsProtocol",
    )
    loop = asyncio.new_event_loop()
    try:
        protocol = HttpToolsProtocol(
            uvicorn.Config(_no_app, log_config=None), ServerState(), {}, _loop=loop
        )
    finally:
        loop.close()
    need(
        protocol,
        ("parser", "pipeline", "cycle", "loop", "logger", "server_state"),
        "uvicorn HttpToolsProtocol",
    )
    if 200 not in STATUS_LINE:
        missing.append("uvicorn httptools_impl.STATUS_LINE")
    need(ServerState(), ("connections", "tasks", "default_headers"), "uvicorn ServerState")
    need(uvicorn.Server, ("handle_exit",), "uvicorn Server")
    for method, parameters in (("shutdown", ["self", "sockets"]), ("capture_signals", ["self"])):
        found = getattr(uvicorn.Server, method, None)
        if found is None or list(inspect.signature(found).parameters) != parameters:
            missing.append(f"uvicorn Server.{method}({', '.join(parameters[1:])})")
    need(ServerProtocol(), ("parser_exc", "expect_continuation_frame"), "websockets ServerProtocol")

    async def receive() -> Any:
        return {}

    async def send(message: Any) -> None:
        return None

    websocket = WebSocket({"type": "websocket"}, receive, send)
    need(websocket, ("_send",), "starlette WebSocket")
    return missing


def verify() -> None:
    """Raise, naming what is missing and the installed versions, if a part is gone."""
    missing = missing_parts()
    if missing:
        versions = ", ".join(
            f"{name} {importlib.metadata.version(name)}"
            for name in ("uvicorn", "starlette", "websockets", "starlette-compress")
        )
        raise RuntimeError(
            f"private parts the hub's fast paths use are gone ({', '.join(missing)}) "
            f"with {versions}: install the versions pyproject.toml allows, or adapt "
            "executor_streamer/server/internals.py"
        )
