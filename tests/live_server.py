"""Fixtures: a real hub served by uvicorn on an ephemeral loopback port, and real
clients. Loaded for every test package as a pytest plugin (see tests/conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest

from executor_streamer import ExecutorStreamer, ExecutorStreamerConfig
from executor_streamer.server.runner import HubServer, build_server

from .waiting import eventually, eventually_blocking


@dataclass
class Served:
    hub: ExecutorStreamer
    server: HubServer
    http: httpx.AsyncClient
    base_url: str
    ws_url: str

    async def publish(self, stream: str, *events: dict[str, Any]) -> list[dict[str, Any]]:
        body: Any = events[0] if len(events) == 1 else {"events": list(events)}
        response = await self.http.post(f"/api/streams/{stream}/events", json=body)
        assert response.status_code == 201, response.text
        stored: list[dict[str, Any]] = response.json()["events"]
        return stored


ServerFactory = Callable[..., Awaitable[Served]]


@pytest.fixture
async def make_server() -> AsyncIterator[ServerFactory]:
    """Start hub servers with config overrides; all are shut down after the test."""
    running: list[tuple[Served, asyncio.Task[None]]] = []

    async def factory(*, ws: str | None = None, **overrides: Any) -> Served:
        """``ws`` names another of uvicorn's WebSocket implementations, under which the
        hub can only send through ASGI."""
        config = ExecutorStreamerConfig().with_overrides(overrides)
        hub = ExecutorStreamer(config)
        server = build_server(hub, host="127.0.0.1", port=0)
        if ws is not None:
            server.config.ws = ws
        task = asyncio.create_task(server.serve())
        await eventually(lambda: server.started or task.done(), 30)
        if task.done():
            task.result()  # the server's own error, had it failed to start
        assert server.started, "the hub server did not start within 30 s"
        base = f"http://127.0.0.1:{server.port}"
        http = httpx.AsyncClient(base_url=base, timeout=10)
        served = Served(hub, server, http, base, f"ws://127.0.0.1:{server.port}/ws")
        running.append((served, task))
        return served

    yield factory
    for served, task in running:
        await served.http.aclose()
        served.server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 15)


@pytest.fixture
async def served(make_server: ServerFactory) -> Served:
    return await make_server()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def status(n: int | str) -> dict[str, Any]:
    return {"type": "STATUS", "data": {"statusType": "step", "status": str(n)}}


def reasoning(text: str = "thinking") -> dict[str, Any]:
    return {"type": "REASONING", "data": {"thought": text, "confidence": 0.5, "reasoningType": "p"}}


@dataclass
class SSEMessage:
    event: str = "message"
    data: str = ""
    id: str | None = None
    retry: int | None = None

    def json(self) -> Any:
        return orjson.loads(self.data)


@dataclass
class SSEReader:
    """Parses a text/event-stream response the way a browser's EventSource does."""

    response: httpx.Response
    _lines: AsyncIterator[str] | None = None
    retry: int | None = None
    raw: list[str] = field(default_factory=list)

    async def next(self, seconds: float = 5.0) -> SSEMessage:
        return await asyncio.wait_for(self._next(), seconds)

    async def _next(self) -> SSEMessage:
        if self._lines is None:
            self._lines = self.response.aiter_lines()
        message = SSEMessage()
        has_fields = False
        async for line in self._lines:
            self.raw.append(line)
            if line == "":
                if has_fields and (message.data or message.event != "message"):
                    return message
                message, has_fields = SSEMessage(), False
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            has_fields = True
            if name == "event":
                message.event = value
            elif name == "data":
                message.data = value if not message.data else message.data + "\n" + value
            elif name == "id":
                message.id = value
            elif name == "retry":
                self.retry = int(value)
        raise EOFError("stream ended")

    async def events(self, count: int, seconds: float = 5.0) -> list[SSEMessage]:
        out: list[SSEMessage] = []
        while len(out) < count:
            message = await self.next(seconds)
            if message.event == "stream_event":
                out.append(message)
        return out


@contextlib.asynccontextmanager
async def sse_stream(
    served: Served, path: str, headers: dict[str, str] | None = None
) -> AsyncIterator[SSEReader]:
    async with served.http.stream("GET", path, headers=headers, timeout=None) as response:
        yield SSEReader(response)


async def assert_freed(served: Served, kind: type) -> None:
    """Once every client is gone, no object of ``kind`` is left, even in a cycle the
    collector (disabled by the caller) has not seen yet: the last references go as the
    server's handlers finish, a moment after the client left, so this waits for that;
    an object kept alive by a cycle never goes, and the wait fails."""

    def left() -> list[object]:
        # type() rather than isinstance: gc.get_objects() holds weak proxies too.
        return [o for o in gc.get_objects() if type(o) is kind]

    assert await eventually(lambda: not len(served.hub.clients)), "the clients did not leave"
    assert await eventually(lambda: not left()), f"still alive: {left()}"


@dataclass
class ThreadedServer:
    """A hub served by uvicorn on its own event loop in a thread: one server for every
    example of a hypothesis test, each example a client program run with ``asyncio.run``."""

    hub: ExecutorStreamer
    base_url: str
    ws_url: str


@contextlib.contextmanager
def server_in_thread(**overrides: Any) -> Iterator[ThreadedServer]:
    config = ExecutorStreamerConfig().with_overrides(overrides)
    hub = ExecutorStreamer(config)
    server = build_server(hub, host="127.0.0.1", port=0)
    thread = threading.Thread(target=asyncio.run, args=(server.serve(),), daemon=True)
    thread.start()
    eventually_blocking(lambda: server.started or not thread.is_alive(), 30)
    assert server.started, "the server did not start"
    base = f"http://127.0.0.1:{server.port}"
    try:
        yield ThreadedServer(hub, base, f"ws://127.0.0.1:{server.port}/ws")
    finally:
        server.should_exit = True
        thread.join(15)
