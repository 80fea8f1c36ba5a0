"""The hub's WebSocket protocol under uvicorn, with small ASGI apps and real clients:
``websockets`` for what a well-behaved peer does, a raw socket for what it must not."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import os
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Frame, Opcode
from websockets.protocol import Event

from executor_streamer.server import ws_protocol
from executor_streamer.server.ws_protocol import HubWebSocketProtocol
from executor_streamer.server.ws_shared import ServerShared

from ..waiting import eventually

Scope = dict[str, Any]
Message = dict[str, Any]


class Echo:
    """Accepts (first subprotocol offered, one extra header), tells the client what its
    scope said, then echoes every message; records what it received."""

    def __init__(self) -> None:
        self.received: list[Message] = []

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        assert scope["type"] == "websocket"
        self.received.append(await receive())
        offered = scope["subprotocols"]
        await send(
            {
                "type": "websocket.accept",
                "subprotocol": offered[0] if offered else None,
                "headers": [(b"x-app", b"echo")],
            }
        )
        headers = dict(scope["headers"])
        await send(
            {
                "type": "websocket.send",
                "text": f"{scope['path']}|{scope['query_string'].decode()}|"
                f"{headers.get(b'x-test', b'').decode()}",
            }
        )
        while True:
            message = await receive()
            self.received.append(message)
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") == "close please":
                await send({"type": "websocket.close", "code": 4321, "reason": "bye"})
                self.received.append(await receive())
                return
            await send({**message, "type": "websocket.send"})


@contextlib.asynccontextmanager
async def serving(app: Any, **options: Any) -> AsyncIterator[uvicorn.Server]:
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        ws=HubWebSocketProtocol,
        lifespan="off",
        log_config=None,
        **options,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    await eventually(lambda: server.started or task.done(), 30)
    if task.done():
        task.result()  # the server's own error, had it failed to start
    assert server.started, "the server did not start"
    try:
        yield server
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


def url(server: uvicorn.Server, path: str = "/") -> str:
    return f"ws://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}{path}"


class CountingPings(ClientConnection):
    """The ``websockets`` client (which answers every ping), counting the pings it got."""

    pings = 0

    def process_event(self, event: Event) -> None:
        if isinstance(event, Frame) and event.opcode is Opcode.PING:
            self.pings += 1
        super().process_event(event)


def protocols(server: uvicorn.Server) -> list[HubWebSocketProtocol]:
    return [c for c in server.server_state.connections if isinstance(c, HubWebSocketProtocol)]


def alive(kind: type) -> list[object]:
    """Every object of exactly ``kind`` (not isinstance: gc.get_objects() holds weak
    proxies too), whether or not the collector could free it."""
    return [o for o in gc.get_objects() if type(o) is kind]


class RawPeer:
    """A client speaking the wire format by hand."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def send(self, opcode: Opcode, payload: bytes, *, mask: bool = True) -> None:
        self.writer.write(Frame(opcode, payload).serialize(mask=mask, extensions=[]))

    async def frame(self, seconds: float = 5) -> tuple[Opcode, bytes]:
        first, second = await asyncio.wait_for(self.reader.readexactly(2), seconds)
        length = second & 0x7F
        if length == 126:
            length = int.from_bytes(await self.reader.readexactly(2), "big")
        elif length == 127:
            length = int.from_bytes(await self.reader.readexactly(8), "big")
        return Opcode(first & 0x0F), await self.reader.readexactly(length)

    async def close_code(self, seconds: float = 5) -> int:
        """Skip frames up to the server's close frame; its code. The server then hangs up."""
        while True:
            opcode, payload = await self.frame(seconds)
            if opcode is Opcode.CLOSE:
                assert await asyncio.wait_for(self.reader.read(), seconds) == b""
                return int.from_bytes(payload[:2], "big")


@contextlib.asynccontextmanager
async def raw_peer(
    server: uvicorn.Server, receive_buffer: int | None = None
) -> AsyncIterator[RawPeer]:
    """A raw client past the opening handshake (``receive_buffer``: its SO_RCVBUF)."""
    sock = socket.socket()
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.setblocking(False)
    address = server.servers[0].sockets[0].getsockname()
    await asyncio.get_running_loop().sock_connect(sock, address)
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET / HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101"), head
        yield RawPeer(reader, writer)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


class TestAsgi:
    async def test_handshake_scope_and_echo(self) -> None:
        """Subprotocol, app headers and the scope get through; text, bytes and a
        fragmented message are echoed whole."""
        async with (
            serving(Echo()) as server,
            connect(
                url(server, "/some%20where?x=1"),
                subprotocols=["first", "second"],  # type: ignore[list-item]
                additional_headers={"X-Test": "yes"},
            ) as ws,
        ):
            assert ws.subprotocol == "first"
            assert ws.response is not None and ws.response.headers["x-app"] == "echo"
            assert "server" in ws.response.headers  # uvicorn's default headers
            assert await ws.recv() == "/some where|x=1|yes"
            await ws.send("hello")
            assert await ws.recv() == "hello"
            await ws.send(b"\x00\x01")
            assert await ws.recv() == b"\x00\x01"
            await ws.send(["frag", "mented"])
            assert await ws.recv() == "fragmented"

    async def test_close_from_the_app(self) -> None:
        """The app's close code and reason reach the client; the app then receives a
        disconnect."""
        app = Echo()
        async with serving(app) as server, connect(url(server)) as ws:
            await ws.recv()
            await ws.send("close please")
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            assert (ws.close_code, ws.close_reason) == (4321, "bye")
        assert app.received[-1] == {"type": "websocket.disconnect", "code": 4321, "reason": "bye"}

    async def test_close_from_the_peer(self) -> None:
        app = Echo()
        async with serving(app) as server:
            async with connect(url(server)) as ws:
                await ws.recv()
                await ws.close(4000, "done")
            assert await eventually(lambda: app.received[-1]["type"] == "websocket.disconnect")
        assert app.received[0] == {"type": "websocket.connect"}
        assert app.received[-1] == {"type": "websocket.disconnect", "code": 4000, "reason": "done"}

    async def test_refusals(self) -> None:
        """Closing before accepting answers 403; failing before accepting, 500."""

        async def refuse(scope: Scope, receive: Any, send: Any) -> None:
            await receive()
            if scope["path"] == "/fail":
                raise RuntimeError("boom")
            await send({"type": "websocket.close"})

        async with serving(refuse) as server:
            for path, status in (("/", 403), ("/fail", 500)):
                with pytest.raises(InvalidStatus) as refused:
                    async with connect(url(server, path)):
                        pass
                assert refused.value.response.status_code == status

    async def test_server_shutdown_closes_1012(self) -> None:
        async with serving(Echo()) as server, connect(url(server)) as ws:
            await ws.recv()
            server.should_exit = True
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
            assert ws.close_code == 1012


class TestWire:
    async def test_protocol_error_closes_1002(self) -> None:
        """An unmasked frame from a client is a protocol error."""
        app = Echo()
        async with serving(app) as server, raw_peer(server) as peer:
            await peer.frame()  # the scope line
            peer.send(Opcode.TEXT, b"hello", mask=False)
            assert await peer.close_code() == 1002
        assert app.received[-1]["code"] == 1002

    async def test_invalid_utf8_closes_1007(self) -> None:
        async with serving(Echo()) as server, raw_peer(server) as peer:
            await peer.frame()
            peer.send(Opcode.TEXT, b"\xff\xfe")
            assert await peer.close_code() == 1007

    async def test_oversized_message_closes_1009(self) -> None:
        """A message over ``ws_max_size`` (the hub's limits.maxMessageBytes) is refused
        before it reaches the app."""
        app = Echo()
        async with serving(app, ws_max_size=1000) as server, raw_peer(server) as peer:
            await peer.frame()
            peer.send(Opcode.TEXT, b"x" * 1001)
            assert await peer.close_code() == 1009
        assert all(m.get("text") != "x" * 1001 for m in app.received)

    async def test_unanswered_pings_close_1011(self) -> None:
        """A peer that stops answering pings is closed once a ping goes unanswered for
        the timeout; one that answers (the websockets client does) stays; the shared
        timer stops with the last connection."""
        async with serving(Echo(), ws_ping_interval=0.2, ws_ping_timeout=0.4) as server:
            async with (
                connect(url(server), create_connection=CountingPings) as lively,
                raw_peer(server) as silent,
            ):
                assert isinstance(lively, CountingPings)
                await lively.recv()
                await silent.frame()
                opcode, _ = await silent.frame(seconds=1)
                assert opcode is Opcode.PING
                assert await silent.close_code(seconds=2) == 1011
                # Several ping rounds past the silent peer's timeout: the hub pings again
                # only once the last ping was answered, so three more pings are three
                # answered ones, 0.6 s of them, longer than the timeout.
                pings = lively.pings
                assert await eventually(lambda: lively.pings >= pings + 3), "no more pings"
                await lively.send("still here")
                assert await lively.recv() == "still here"
            assert server.config in ServerShared._by_config
            pinged = ServerShared.of(server.config).pinged
            assert pinged is not None
            # The last connection goes as the server sees the client's close.
            assert await eventually(lambda: not pinged.running and len(pinged) == 0)

    async def test_pings_are_answered(self) -> None:
        async with serving(Echo()) as server, raw_peer(server) as peer:
            await peer.frame()
            peer.send(Opcode.PING, b"are you there")
            assert await peer.frame() == (Opcode.PONG, b"are you there")

    async def test_a_ping_flood_that_reads_nothing_is_held_to_a_buffer(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A peer that pings and never reads (no credential needed: the protocol answers
        pings) fills the hub's write buffer with pongs once; then the hub reads no more
        from it until it takes what was written, so what waits for it stays bounded. Once
        it reads, the connection works on. (Past the ping rate, below, it would be
        closed first.)"""
        monkeypatch.setattr(ws_protocol, "MAX_PINGS_PER_SECOND", 1 << 30)
        pings = Frame(Opcode.PING, b"p" * 125).serialize(mask=True, extensions=[]) * 500
        async with serving(Echo()) as server, raw_peer(server, 65_536) as peer:
            await peer.frame()
            for _ in range(200):  # at most 13 MB of pings, 26,000 writes of 500 each
                peer.writer.write(pings)
                try:
                    await asyncio.wait_for(peer.writer.drain(), 0.5)
                except TimeoutError:
                    break  # the hub stopped reading: the rest waits in the kernel
            else:
                raise AssertionError("the hub read 13 MB of pings it could not answer")
            held = max(p.transport.get_write_buffer_size() for p in protocols(server))
            assert held < 1 << 20, held
            peer.send(Opcode.PING, b"still there?")
            while (frame := await peer.frame(10)) != (Opcode.PONG, b"still there?"):
                assert frame[0] is Opcode.PONG

    async def test_a_peer_pinging_past_the_rate_is_closed(self) -> None:
        """The attack benchmark: four peers' ping floods cost the hub seconds of CPU in
        pongs (the kernel's buffers take many before the hub's fills), stalling
        everyone. Past ``MAX_PINGS_PER_SECOND`` the peer is closed with 1008."""
        limit = ws_protocol.MAX_PINGS_PER_SECOND
        pings = Frame(Opcode.PING, b"p").serialize(mask=True, extensions=[]) * (limit + 50)
        async with serving(Echo()) as server, raw_peer(server) as peer:
            await peer.frame()
            peer.writer.write(pings)
            pongs = 0
            while (frame := await peer.frame(10))[0] is Opcode.PONG:
                pongs += 1
            assert frame[0] is Opcode.CLOSE and frame[1][:2] == (1008).to_bytes(2, "big")
            # what one read held is answered (the frame parser answers as it parses);
            # nothing after it is read
            assert pongs <= limit + 50

    async def test_a_full_socket_buffer_holds_sends_back(self) -> None:
        """While the peer reads nothing, the app's sends wait (memory stays bounded);
        once it reads, everything arrives in order."""
        chunk = b"x" * 65_536
        total = 400  # 26 MB: far more than the socket buffers hold
        sent: list[int] = []

        async def flood(scope: Scope, receive: Any, send: Any) -> None:
            await receive()
            await send({"type": "websocket.accept"})
            for n in range(total):
                await send({"type": "websocket.send", "bytes": n.to_bytes(4, "big") + chunk})
                sent.append(n)
            await receive()

        def held_back() -> bool:
            """Whether the hub's socket buffer is full: past its transport's high-water
            mark, so that the app's next send waits."""
            return any(
                p.transport.get_write_buffer_size() > p.transport.get_write_buffer_limits()[1]
                for p in protocols(server)
            )

        async with serving(flood) as server, raw_peer(server, 65_536) as peer:
            assert await eventually(held_back), "the hub's socket buffer never filled"
            stalled = len(sent)
            assert 0 < stalled < total
            got = []
            for _ in range(total):
                opcode, payload = await peer.frame()
                assert opcode is Opcode.BINARY
                got.append(int.from_bytes(payload[:4], "big"))
            assert got == list(range(total))
            assert len(sent) == total

    async def test_connections_are_freed_without_the_collector(self) -> None:
        gc.collect()
        gc.disable()
        try:
            async with serving(Echo()) as server:
                for _ in range(3):
                    async with connect(url(server)) as ws:
                        await ws.recv()
                        await ws.send("hi")
                        await ws.recv()
                # The last references go as the server sees each close; one kept alive
                # by a cycle never goes (the collector is off), and the wait fails.
                assert await eventually(lambda: not alive(HubWebSocketProtocol)), alive(
                    HubWebSocketProtocol
                )
        finally:
            gc.enable()
