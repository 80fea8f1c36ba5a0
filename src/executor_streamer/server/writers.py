"""Writing to live connections without an ASGI ``send`` per write, when the server allows.

WebSocket text frames, several in one write. Through ASGI every frame is its own
``send``: a message dict, the payload decoded to ``str`` and encoded back, and one socket
write each. Under the hub's own WebSocket protocol (``ws_protocol``, which
``runner.build_server`` gives uvicorn) the ASGI ``send`` handed to the app is a method of
the connection's protocol object; then the whole drain leaves in one transport write.
With any other server, plain ASGI sends.

The HTTP responses' direct writes (SSE chunks, a publish's whole answer) reach into
uvicorn's private parts, and live with every other such access in ``internals``.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.types import Send
from websockets.exceptions import InvalidState

from .internals import owner_of_send
from .ws_protocol import HubWebSocketProtocol


class PeerGone(Exception):
    """A send failed because the peer went away; the session ends."""


class FrameWriter:
    def __init__(self, send: Send) -> None:
        self._send = send
        protocol = owner_of_send(send)
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
