"""Every use of a dependency's private parts, in one place.

The hot paths write to sockets more directly than the libraries' public APIs allow (each
step measured in bench/README.md): a publish's answer in one write, SSE chunks straight to
the transport, several WebSocket frames in one write under the hub's own WebSocket
protocol (``ws_protocol``), which itself stands in for uvicorn's. The parts they use are:

- uvicorn: the httptools protocol's ``RequestResponseCycle`` (its response state, flow
  control, transport and the ``STATUS_LINE`` table); ``protocols.utils`` (addresses,
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
from typing import Any

import uvicorn
from starlette.responses import Response
from starlette.types import Send
from starlette.websockets import WebSocket
from starlette_compress import remove_compress_type
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, RequestResponseCycle
from uvicorn.protocols.utils import ClientDisconnected, get_local_addr, get_remote_addr, is_ssl
from uvicorn.server import ServerState
from websockets.server import ServerProtocol

__all__ = [
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
    need(cycle.flow, ("write_paused",), "uvicorn FlowControl")
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
