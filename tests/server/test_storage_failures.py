"""A hub whose database goes away answers 503 and stores nothing half-written.

The database is real PostgreSQL reached through a TCP relay the test owns; cutting the
relay is a real network failure, and restoring it lets the hub recover.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httpx
import pytest

from executor_streamer import ExecutorStreamer, ExecutorStreamerConfig
from executor_streamer.history.sql import SqlHistory
from executor_streamer.server.runner import build_server

from ..live_server import Served, status
from ..postgres import POSTGRES_URL, reset_postgres
from ..waiting import eventually, eventually_async


class Relay:
    """Forwards loopback connections to PostgreSQL until cut."""

    def __init__(self) -> None:
        target = urlsplit(POSTGRES_URL)
        self.target = (target.hostname or "127.0.0.1", target.port or 5432)
        self.server: asyncio.Server | None = None
        self.links: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._link, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in list(self.links):
            writer.close()
        await self.server.wait_closed()

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.links |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.links -= {writer, up_writer}


@pytest.fixture
async def relayed() -> AsyncIterator[tuple[Served, Relay]]:
    await reset_postgres()
    relay = Relay()
    await relay.start()
    url = POSTGRES_URL.replace(f":{relay.target[1]}/", f":{relay.port}/")
    hub = ExecutorStreamer(ExecutorStreamerConfig(), storage=SqlHistory(url))
    server = build_server(hub, host="127.0.0.1", port=0)
    task = asyncio.create_task(server.serve())
    assert await eventually(lambda: server.started), "the server did not start"
    base = f"http://127.0.0.1:{server.port}"
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        yield Served(hub, server, http, base, f"ws://127.0.0.1:{server.port}/ws"), relay
    server.should_exit = True
    with contextlib.suppress(Exception):
        await asyncio.wait_for(task, 15)
    await relay.cut()


class TestStorageFailures:
    async def test_outage_is_503_and_readyz_says_so(self, relayed: tuple[Served, Relay]) -> None:
        """While the database is unreachable publishes are 503 STORAGE_UNAVAILABLE and
        /readyz is 503; nothing of a refused publish appears afterwards."""
        served, relay = relayed
        await served.publish("wf-1", status(1))
        assert (await served.http.get("/readyz")).status_code == 200
        await relay.cut()
        refused = await served.http.post("/api/streams/wf-1/events", json=status(2))
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "STORAGE_UNAVAILABLE"
        ready = await served.http.get("/readyz")
        assert ready.status_code == 503 and ready.json()["isHealthy"] is False
        await relay.start()  # the database is back on the same port

        async def ready_again() -> bool:
            return (await served.http.get("/readyz")).status_code == 200

        assert await eventually_async(ready_again), "the hub never saw the database come back"
        [event] = await served.publish("wf-1", status(3))
        assert event["seq"] == 2  # the refused publish used no seq
        history = (await served.http.get("/api/streams/wf-1/history")).json()
        assert [e["data"]["status"] for e in history["events"]] == ["1", "3"]
