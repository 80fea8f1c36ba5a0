"""The WebSocket connection under uvicorn: a lean stand-in for its websockets-sansio protocol.

``runner.build_server`` hands this class to uvicorn (``ws=``); uvicorn's HTTP protocol
upgrades to it as it would to its own. The websockets library's sans-I/O
``ServerProtocol`` still does the handshake checks, framing, the closing handshake and
extensions, exactly as under uvicorn. What differs is what a connection holds while it
sits idle, which for 10,000 subscribers is most of the server's memory:

- ``__slots__`` instead of an instance dict (uvicorn's has ~35 attributes, too many for
  CPython's shared-key dicts: ~1.6 KiB each);
- messages for the app in a list, with a future only while the app waits (uvicorn keeps
  an ``asyncio.Queue``: three deques, ~2.3 KiB);
- a future only while the socket buffer is full, instead of an ``asyncio.Event``;
- the handshake's request and response (two header multidicts) dropped once answered;
- one timer per server pinging every connection (``ServerShared.pinged``), instead of a
  timer per connection.

The ASGI side is the ``websocket`` scope and messages of the ASGI spec 2.4, with the
``websocket.http.response`` extension: the hub refuses an upgrade without a credential
(401), from a foreign origin (403) or over a connection cap (429) with an HTTP answer.
:meth:`HubWebSocketProtocol.write_text_frames` lets ``writers.FrameWriter`` write
several frames in one transport write, without an ASGI message per frame.
"""

from __future__ import annotations

import asyncio
import logging
import random
import struct
from collections.abc import MutableMapping, Sequence
from http import HTTPStatus
from typing import Any, cast
from urllib.parse import unquote

from uvicorn import Config
from websockets.datastructures import Headers
from websockets.exceptions import InvalidState
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol

from .internals import (
    ClientDisconnected,
    ServerState,
    expects_continuation,
    get_local_addr,
    get_remote_addr,
    is_ssl,
    parser_failed,
)
from .ws_shared import ServerShared

ASGIReceiveEvent = dict[str, Any]
ASGISendEvent = MutableMapping[str, Any]
WebSocketScope = dict[str, Any]

_log = logging.getLogger("executor_streamer.ws_protocol")

MAX_PINGS_PER_SECOND = 100
"""Pings a peer may send in a second before it is closed with 1008: clients ping every
few seconds; answering a flood cost the attack benchmark's hub seconds of CPU."""
CLOSE_HANDSHAKE_TIMEOUT = 10.0
"""How long a connection waits for the peer's answer to its close frame (as uvicorn)."""


class HubWebSocketProtocol(asyncio.Protocol):
    __slots__ = (
        "_app_state",
        "_close_timer",
        "_config",
        "_denial",
        "_fragments",
        "_fragments_text",
        "_inbox",
        "_loop",
        "_ping",
        "_ping_sent",
        "_pings",
        "_pings_since",
        "_read_held",
        "_read_paused",
        "_receiver",
        "_response",
        "_server_state",
        "_shared",
        "_writable",
        "close_sent",
        "conn",
        "disconnected",
        "handshake_complete",
        "scope",
        "transport",
    )

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not config.loaded:
            config.load()
        self._loop = _loop or asyncio.get_event_loop()
        self._config = config
        self._server_state = server_state
        self._app_state = app_state
        self._shared = ServerShared.of(config)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.conn = ServerProtocol(
            extensions=self._shared.extensions, max_size=config.ws_max_size, logger=_log
        )
        self.scope: WebSocketScope = None  # type: ignore[assignment]
        self._response: Response | None = None  # the handshake answer, until the app accepts
        self._denial: tuple[int, list[tuple[str, str]], bytes] | None = None  # being sent
        self._inbox: list[ASGIReceiveEvent] = []
        self._receiver: asyncio.Future[None] | None = None  # while the app waits for a message
        self._writable: asyncio.Future[None] | None = None  # while the socket buffer is full
        self._read_paused = False
        self._read_held = False  # reading stopped until the peer takes what we wrote
        self._fragments: list[bytes] = []  # the message being received, frame by frame
        self._fragments_text = False
        self.handshake_complete = False
        self.close_sent = False
        self.disconnected = False
        self._close_timer: asyncio.TimerHandle | None = None
        self._ping: bytes | None = None  # the keepalive ping awaiting its pong
        self._pings = 0  # pings from the peer since _pings_since (MAX_PINGS_PER_SECOND)
        self._pings_since = 0.0
        self._ping_sent = 0.0

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self._server_state.connections.add(self)  # type: ignore[arg-type]

    def connection_lost(self, exc: Exception | None) -> None:
        self._shared.unwatch(self)
        code = 1005 if self.handshake_complete else 1006
        self._deliver({"type": "websocket.disconnect", "code": code})
        self._server_state.connections.discard(self)
        self.handshake_complete = True
        self.disconnected = True
        self._response = None
        self.resume_writing()  # asyncio never resumes a transport lost while paused
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        if exc is None:
            self.transport.close()

    def eof_received(self) -> None:
        pass

    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = self._loop.create_future()

    def resume_writing(self) -> None:
        writable, self._writable = self._writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)
        if self._read_held:
            self._read_held = False
            if not self._read_paused and not self.transport.is_closing():
                self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        conn.receive_data(data)
        if parser_failed(conn):
            self._fail_on_parse_error()
            return
        for event in conn.events_received():
            if isinstance(event, Request):
                self._handshake(event)
            elif isinstance(event, Frame) and self._frame(event):
                return  # it failed the connection: nothing after it is read

    def shutdown(self) -> None:
        """uvicorn's server shutdown: close with 1012 (service restart)."""
        self._shared.unwatch(self)
        if self.close_sent:
            if self._close_timer is not None:
                self._close_timer.cancel()
                self._close_timer = None
        elif self.handshake_complete:
            self._deliver({"type": "websocket.disconnect", "code": 1012})
            self.conn.send_close(1012)
            self._write_pending()
        else:
            self._send_500()
        self.transport.close()

    # -- receiving -----------------------------------------------------------------------

    def _handshake(self, request: Request) -> None:
        response = self.conn.accept(request)
        if response.status_code != 101:
            self.handshake_complete = True
            self.close_sent = True
            self.conn.send_response(response)
            self._write_pending()
            self.transport.close()
            return
        self._response = response
        raw_path, _, query = request.path.partition("?")
        root = self._config.root_path
        subprotocols = [
            token.strip()
            for header in request.headers.get_all("Sec-WebSocket-Protocol")
            for token in header.split(",")
        ]
        self.scope = {
            "type": "websocket",
            "asgi": {"version": self._config.asgi_version, "spec_version": "2.4"},
            "http_version": "1.1",
            "scheme": "wss" if is_ssl(self.transport) else "ws",
            "server": get_local_addr(self.transport),
            "client": get_remote_addr(self.transport),
            "root_path": root,
            "path": root + unquote(raw_path),
            "raw_path": root.encode("ascii") + raw_path.encode("ascii"),
            "query_string": query.encode("ascii"),
            # websockets decodes header values as ISO-8859-1 (its documented behaviour)
            "headers": [
                (name.lower().encode("ascii"), value.encode("latin-1"))
                for name, value in request.headers.raw_items()
            ],
            "subprotocols": subprotocols,
            "state": self._app_state.copy(),
            "extensions": {"websocket.http.response": {}},
        }
        # The connection's parser keeps the request for the connection's whole life (a
        # local of its generator): empty its header multidict, now copied into the scope.
        request.headers.clear()
        self._deliver({"type": "websocket.connect"})
        task = self._loop.create_task(self._run_asgi())
        tasks = self._server_state.tasks
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def _frame(self, frame: Frame) -> bool:
        """Act on one frame; True when it failed the connection."""
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY or opcode is Opcode.CONT:
            self._data_frame(frame)
        elif opcode is Opcode.PING:
            now = self._loop.time()
            if now - self._pings_since >= 1.0:
                self._pings_since, self._pings = now, 0
            self._pings += 1
            if self._pings > MAX_PINGS_PER_SECOND:
                self.conn.fail(1008, "too many pings")
                self._fail_on_parse_error()
                return True
            self._write_pending()  # the pong the connection queued
            if self._writable is not None and not self._read_held:
                # A peer that pings and does not read would have us queue pongs without
                # end, authenticated or not: read on once it has taken what we wrote.
                self._read_held = True
                if not self._read_paused:
                    self.transport.pause_reading()
        elif opcode is Opcode.PONG:
            if self._ping is not None and bytes(frame.data) == self._ping:
                self._ping = None
        elif opcode is Opcode.CLOSE:
            self._close_frame()
        return False

    def _data_frame(self, frame: Frame) -> None:
        # (The connection has already refused a continuation that continues nothing.)
        if frame.opcode is not Opcode.CONT:
            self._fragments_text = frame.opcode is Opcode.TEXT
        if not frame.fin:
            self._fragments.append(bytes(frame.data))
            return
        data = b"".join((*self._fragments, frame.data)) if self._fragments else bytes(frame.data)
        self._fragments = []
        if self.close_sent:
            # Past the app's close: drop it; reading goes on until the peer's close frame.
            return
        if self._fragments_text:
            try:
                self._deliver({"type": "websocket.receive", "text": data.decode()})
            except UnicodeDecodeError:
                self.conn.fail(1007)
                self._fail_on_parse_error()
                return
        else:
            self._deliver({"type": "websocket.receive", "bytes": data})
        # One message at a time: read on once the app has taken it (see receive()).
        if not self._read_paused:
            self._read_paused = True
            self.transport.pause_reading()

    def _close_frame(self) -> None:
        if self.close_sent:
            # The peer answered our close frame: the closing handshake is complete.
            if self._close_timer is not None:
                self._close_timer.cancel()
                self._close_timer = None
                self.transport.close()
            return
        if not self.transport.is_closing():
            received = self.conn.close_rcvd
            assert received is not None
            self._deliver(
                {"type": "websocket.disconnect", "code": received.code, "reason": received.reason}
            )
            self._write_pending()  # the connection's answering close frame
            self.transport.close()

    def _fail_on_parse_error(self) -> None:
        """The peer broke the protocol: the connection has queued a close frame."""
        sent = self.conn.close_sent
        code, reason = (sent.code, sent.reason) if sent is not None else (1002, "")
        self._deliver({"type": "websocket.disconnect", "code": code, "reason": reason})
        self._write_pending()
        self.close_sent = True
        self.transport.close()

    def _deliver(self, message: ASGIReceiveEvent) -> None:
        self._inbox.append(message)
        receiver = self._receiver
        if receiver is not None and not receiver.done():
            receiver.set_result(None)

    # -- the ASGI app ----------------------------------------------------------------------

    async def _run_asgi(self) -> None:
        try:
            result = await self._config.loaded_app(self.scope, self.receive, self.send)
        except ClientDisconnected:
            pass
        except BaseException:
            _log.exception("Exception in ASGI application")
            self._send_500()
        else:
            if not self.handshake_complete:
                _log.error("ASGI callable returned without completing the handshake")
                self._send_500()
            elif result is not None:
                _log.error("ASGI callable should return None, but returned %r", result)
        if self._close_timer is None:
            self.transport.close()

    async def receive(self) -> ASGIReceiveEvent:
        inbox = self._inbox
        if not inbox:
            receiver = self._receiver = self._loop.create_future()
            try:
                await receiver
            finally:
                self._receiver = None
        message = inbox.pop(0)
        if self._read_paused and not inbox and not self.disconnected:
            self._read_paused = False
            if not self._read_held:
                self.transport.resume_reading()
        return message

    async def send(self, message: ASGISendEvent) -> None:
        kind = message["type"]
        if self._denial is not None:
            if kind != "websocket.http.response.body":
                raise RuntimeError(f"Expected 'websocket.http.response.body', got {kind!r}.")
            self._deny_more(cast(dict[str, Any], message))
            return
        if not self.handshake_complete:
            if kind == "websocket.accept":
                self._accept(cast(dict[str, Any], message))
            elif kind == "websocket.close":
                self._reject()
            elif kind == "websocket.http.response.start":
                self._denial = (
                    int(message["status"]),
                    [
                        (name.decode("latin-1"), value.decode("latin-1"))
                        for name, value in message.get("headers", [])
                    ],
                    b"",
                )
            else:
                raise RuntimeError(
                    f"Expected ASGI message 'websocket.accept', 'websocket.close' or "
                    f"'websocket.http.response.start', but got {kind!r}."
                )
            return
        if self.disconnected:
            raise ClientDisconnected
        if self.close_sent:
            raise RuntimeError(f"Unexpected ASGI message {kind!r} after 'websocket.close'.")
        try:
            if kind == "websocket.send":
                await self.wait_writable()
                if self.disconnected:
                    raise ClientDisconnected
                data: Any = message.get("bytes")
                if data is not None:
                    self.conn.send_binary(data)
                else:
                    self.conn.send_text(cast(str, message.get("text") or "").encode())
                self._write_pending()
            elif kind == "websocket.close":
                fields = cast(dict[str, Any], message)
                self._close(int(fields.get("code") or 1000), str(fields.get("reason") or ""))
            else:
                raise RuntimeError(
                    f"Expected ASGI message 'websocket.send' or 'websocket.close', "
                    f"but got {kind!r}."
                )
        except InvalidState:
            raise ClientDisconnected from None

    def _accept(self, message: dict[str, Any]) -> None:
        response = self._response
        assert response is not None
        self._response = None
        headers = [
            (name.decode("latin-1").lower(), value.decode("latin-1"))
            for name, value in [*self._server_state.default_headers, *message.get("headers", [])]
        ]
        if message.get("subprotocol"):
            headers.append(("Sec-WebSocket-Protocol", message["subprotocol"]))
        del response.headers["Date"]
        response.headers.update(headers)
        if self.transport.is_closing():
            return
        self.handshake_complete = True
        self.conn.send_response(response)
        self._write_pending()
        self._ping_sent = self._loop.time()
        self._shared.watch(self)

    def _deny_more(self, message: dict[str, Any]) -> None:
        """A part of the app's HTTP answer instead of the upgrade; sent when complete."""
        assert self._denial is not None
        status, headers, body = self._denial
        body += bytes(message.get("body", b""))
        if message.get("more_body", False):
            self._denial = (status, headers, body)
            return
        self._denial = None
        fields = Headers(headers)
        fields.setdefault("Content-Length", str(len(body)))
        fields.setdefault("Connection", "close")
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = ""
        self._refuse_upgrade(Response(status, reason, fields, body))

    def _reject(self) -> None:
        """The app closed before accepting: 403, as the ASGI spec asks."""
        self._refuse_upgrade(self.conn.reject(403, ""))

    def _refuse_upgrade(self, response: Response) -> None:
        """Answer the handshake with ``response`` instead of the upgrade, and close."""
        self._response = None
        self._deliver({"type": "websocket.disconnect", "code": 1006})
        self.conn.send_response(response)
        self.close_sent = True
        self.handshake_complete = True
        self._write_pending()
        self.transport.close()

    def _close(self, code: int, reason: str) -> None:
        """The app's close. Never waits for a full socket buffer: a close frame is a few
        bytes, and a slow consumer must not hold its connection open."""
        if self.transport.is_closing():
            return
        self._shared.unwatch(self)
        self._deliver({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.conn.send_close(code, reason)
        self._write_pending()
        self.close_sent = True
        if self._read_paused:
            self._read_paused = False
            if not self._read_held:
                self.transport.resume_reading()
        # Abort, not close: close would wait to flush what a peer that stopped reading
        # never takes, holding its buffer for good.
        self._close_timer = self._loop.call_later(CLOSE_HANDSHAKE_TIMEOUT, self.transport.abort)

    def _send_500(self) -> None:
        if self.handshake_complete:
            return
        self.conn.send_response(self.conn.reject(500, "Internal Server Error"))
        self._write_pending()

    # -- writing -------------------------------------------------------------------------

    def ready(self) -> bool:
        """Whether frames can be written at once: open, and the socket buffer not full."""
        return (
            self._writable is None
            and self.handshake_complete
            and not self.close_sent
            and not self.disconnected
            and not self.transport.is_closing()
        )

    async def wait_writable(self) -> None:
        """Until the socket buffer has drained below its low-water mark."""
        writable = self._writable
        if writable is not None:
            # Shielded: a cancelled waiter must not cancel the future others wait on.
            await asyncio.shield(writable)

    def write_text_frames(self, frames: Sequence[bytes]) -> None:
        """Send UTF-8 ``frames`` as text messages, in one transport write; only when
        :meth:`ready`. Raises ``InvalidState`` if the connection is no longer open."""
        conn = self.conn
        if conn.state is State.OPEN and not conn.extensions and not expects_continuation(conn):
            # An unfragmented, unextended server frame is a header and the payload: no
            # Frame object per frame. Control frames the connection queued go first.
            parts = conn.data_to_send()
            for frame in frames:
                parts.append(_text_header(len(frame)))
                parts.append(frame)
        else:
            for frame in frames:
                conn.send_text(frame)
            parts = conn.data_to_send()
        self.transport.write(b"".join(parts))

    def _write_pending(self) -> None:
        output = self.conn.data_to_send()
        if output:
            self.transport.write(b"".join(output))

    # -- keepalive -----------------------------------------------------------------------

    def keepalive(self, interval: float, timeout: float | None) -> None:
        """A round of the server's pinger (``ServerShared.pinged``): ping if due; close the
        connection if the last ping went unanswered for ``timeout``."""
        now = self._loop.time()
        if self.close_sent or self.transport.is_closing():
            return
        if self._ping is not None:
            if timeout is not None and now - self._ping_sent >= timeout - _SLACK:
                self._ping = None
                self.conn.fail(1011, "keepalive ping timeout")
                self._write_pending()
                self.close_sent = True
                self.transport.close()
            return
        if now - self._ping_sent >= interval - _SLACK:
            self._ping = struct.pack("!I", random.getrandbits(32))
            self._ping_sent = now
            self.conn.send_ping(self._ping)
            self._write_pending()


_SLACK = 0.05
"""Seconds a keepalive tick may come early and still count (timers are not exact)."""


def _text_header(length: int) -> bytes:
    """An unmasked, final text frame's header (RFC 6455 §5.2), as a server sends it."""
    if length < 126:
        return bytes((0x81, length))
    if length < 1 << 16:
        return b"\x81\x7e" + length.to_bytes(2, "big")
    return b"\x81\x7f" + length.to_bytes(8, "big")
