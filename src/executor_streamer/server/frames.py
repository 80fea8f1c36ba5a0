"""Writing to live connections without an ASGI ``send`` per write, when the server allows.

WebSocket text frames, several in one write. Through ASGI every frame is its own
``send``: a message dict, the payload decoded to ``str`` and encoded back, and one socket
write each. Under uvicorn's websockets-sansio
protocol (the one ``runner.build_server`` configures) the ASGI ``send`` handed to the app
is a method of the connection's protocol object; then frames go through that protocol's
own ``websockets`` connection (which keeps framing, state and extensions right) and the
whole drain leaves in one transport write. With any other server, plain ASGI sends.

SSE chunks: under uvicorn's httptools protocol the ``send`` is a method of the request's
response cycle; a chunk that needs no waiting is written to its transport directly,
chunk-encoded as the cycle would.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.types import Send
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState
from websockets.protocol import State


class PeerGone(Exception):
    """A send failed because the peer went away; the session ends."""


class FrameWriter:
    def __init__(self, send: Send) -> None:
        self._send = send
        protocol: Any = getattr(send, "__self__", None)
        self._protocol = protocol if isinstance(protocol, WebSocketsSansIOProtocol) else None

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
        await protocol.writable.wait()  # uvicorn's flow control, as its own send does
        if protocol.disconnected or protocol.close_sent:
            raise PeerGone
        self.write_now(frames)

    def ready(self) -> bool:
        """Whether :meth:`write_now` can write at once: under uvicorn's websockets-sansio
        protocol, with the connection open and its socket buffer not full."""
        protocol = self._protocol
        return (
            protocol is not None
            and protocol.writable.is_set()
            and not protocol.disconnected
            and not protocol.close_sent
            and not protocol.transport.is_closing()
        )

    def write_now(self, frames: Sequence[bytes]) -> None:
        """Write ``frames`` in one transport write; only when :meth:`ready`."""
        protocol = self._protocol
        assert protocol is not None
        connection = protocol.conn
        if (
            connection.state is State.OPEN
            and not connection.extensions
            and not connection.expect_continuation_frame
        ):
            # Plain text frames need no more than a header: what ``send_text`` would
            # build, without a Frame object per frame. Control frames the connection
            # queued (a pong) go first, as they would have.
            parts = connection.data_to_send()
            for frame in frames:
                parts.append(_text_header(len(frame)))
                parts.append(frame)
        else:
            try:
                for frame in frames:
                    connection.send_text(frame)
            except InvalidState:
                raise PeerGone from None
            parts = connection.data_to_send()
        protocol.transport.write(b"".join(parts))

    async def _asgi_send(self, frame: bytes) -> None:
        try:
            await self._send({"type": "websocket.send", "text": frame.decode()})
        except (RuntimeError, OSError) as exc:
            raise PeerGone from exc


def _text_header(length: int) -> bytes:
    """An unmasked, final text frame's header (RFC 6455 §5.2), as a server sends it."""
    if length < 126:
        return bytes((0x81, length))
    if length < 1 << 16:
        return b"\x81\x7e" + length.to_bytes(2, "big")
    return b"\x81\x7f" + length.to_bytes(8, "big")


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
