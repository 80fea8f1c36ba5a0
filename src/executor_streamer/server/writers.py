"""Writing to live connections without an ASGI ``send`` per write, when the server allows.

WebSocket text frames, several in one write. Through ASGI every frame is its own
``send``: a message dict, the payload decoded to ``str`` and encoded back, and one socket
write each. Under the hub's own WebSocket protocol (``ws_protocol``, which
``runner.build_server`` gives uvicorn) the ASGI ``send`` handed to the app is a method of
the connection's protocol object; then the whole drain leaves in one transport write.
With any other server, plain ASGI sends.

HTTP responses: under uvicorn's httptools protocol the ``send`` is a method of the
request's response cycle. An SSE chunk that needs no waiting is written to its transport
directly, chunk-encoded as the cycle would; a whole response known up front (the answer
to a publish) goes out as one write of head and body, where the cycle makes two.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.responses import Response
from starlette.types import Send
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, RequestResponseCycle
from websockets.exceptions import InvalidState

from .ws_protocol import HubWebSocketProtocol


class PeerGone(Exception):
    """A send failed because the peer went away; the session ends."""


class FrameWriter:
    def __init__(self, send: Send) -> None:
        self._send = send
        protocol: Any = getattr(send, "__self__", None)
        self._protocol = protocol if isinstance(protocol, HubWebSocketProtocol) else None

    async def send(self, frames: Sequence[bytes]) -> None:
        """Send ``frames`` (UTF-8 JSON) as text messages, in order; waits while the
        peer's socket buffer is full. Raises :class:`PeerGone` if the peer is gone."""
        protocol = self._protocol
        if not frames:
            return
        if protocol is None:
            for frame in frames:
                await self._asgi_send(frame)
            return
        await protocol.wait_writable()
        if not protocol.ready():
            raise PeerGone
        self.write_now(frames)

    def ready(self) -> bool:
        """Whether :meth:`write_now` can write at once: under the hub's protocol, with
        the connection open and its socket buffer not full."""
        return self._protocol is not None and self._protocol.ready()

    def buffered(self) -> int:
        """Bytes written that the peer's socket has not taken yet (0 if unknown)."""
        return 0 if self._protocol is None else self._protocol.transport.get_write_buffer_size()

    def write_now(self, frames: Sequence[bytes]) -> None:
        """Write ``frames`` in one transport write; only when :meth:`ready`."""
        assert self._protocol is not None
        try:
            self._protocol.write_text_frames(frames)
        except InvalidState:
            raise PeerGone from None

    async def _asgi_send(self, frame: bytes) -> None:
        try:
            await self._send({"type": "websocket.send", "text": frame.decode()})
        except (RuntimeError, OSError) as exc:
            raise PeerGone from exc


class ChunkWriter:
    """The fast path for a chunked HTTP response body (SSE)."""

    def __init__(self, send: Send) -> None:
        cycle: Any = getattr(send, "__self__", None)
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
    cycle: Any = getattr(send, "__self__", None)
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
