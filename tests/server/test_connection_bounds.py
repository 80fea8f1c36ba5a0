"""What one HTTP connection can make the hub hold (docs/security.md, "Connections and
memory"): headers capped in size and time, pipelined requests read only as fast as they
are answered, connections waiting for headers few. Each test is an attack the adversarial
probe ran against a real hub, bounded in size and time, on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from executor_streamer.server import connections, internals
from executor_streamer.server.internals import BoundedHttpProtocol

from ..live_server import Served, ServerFactory
from ..waiting import eventually

HEALTH = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


@contextlib.asynccontextmanager
async def raw(served: Served) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", served.server.port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def http_protocols(served: Served) -> list[BoundedHttpProtocol]:
    connections = served.server.server_state.connections
    return [c for c in connections if isinstance(c, BoundedHttpProtocol)]


async def answers(reader: asyncio.StreamReader, seconds: float = 10) -> list[bytes]:
    """Every response on the connection until the hub closes it (status lines only)."""
    received = b""
    with contextlib.suppress(ConnectionError):
        while chunk := await asyncio.wait_for(reader.read(65_536), seconds):
            received += chunk
    return re.findall(rb"HTTP/1\.1 [^\r]*", received)


class TestPipelining:
    async def test_a_pipelining_client_that_reads_nothing_holds_a_bounded_queue(
        self, served: Served
    ) -> None:
        """The probe: 6 s of pipelined health checks grew the hub by 630 MiB, because
        every request read was queued and reading resumed after each answer."""
        batch = HEALTH * 2000  # 84 KB a write, up to 25 MB in all
        most_queued = 0
        async with raw(served) as (_, writer):
            for _ in range(300):
                writer.write(batch)
                try:
                    await asyncio.wait_for(writer.drain(), 0.5)
                except (TimeoutError, ConnectionError):
                    break  # the hub stopped reading: the rest waits in the kernel, or is refused
                queued = [len(p.pipeline) for p in http_protocols(served)]
                most_queued = max([most_queued, *queued])
            else:
                raise AssertionError("the hub read 25 MB of requests it had not answered")
            assert most_queued <= internals.MAX_QUEUED_REQUESTS
        # and an honest client is served as before
        assert (await served.http.get("/healthz")).status_code == 200

    async def test_pipelined_refusals_are_bounded_too(self, make_server: ServerFactory) -> None:
        """The probe's second variant: 401s on a hub with authentication, +203 MiB."""
        served = await make_server(
            security={"authenticationRequired": True, "jwt": {"secret": "s" * 40}}
        )
        request = b"GET /api/streams HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        most_queued = 0
        async with raw(served) as (_, writer):
            for _ in range(300):
                writer.write(request * 2000)
                try:
                    await asyncio.wait_for(writer.drain(), 0.5)
                except (TimeoutError, ConnectionError):
                    break
                queued = [len(p.pipeline) for p in http_protocols(served)]
                most_queued = max([most_queued, *queued])
            else:
                raise AssertionError("the hub read 14 MB of requests it had not answered")
        assert most_queued <= internals.MAX_QUEUED_REQUESTS

    async def test_a_short_pipeline_is_answered_in_order(self, served: Served) -> None:
        async with raw(served) as (reader, writer):
            writer.write(HEALTH * 5)
            await writer.drain()
            received = b""
            while received.count(b"HTTP/1.1 200") < 5:
                received += await asyncio.wait_for(reader.read(65_536), 10)
            assert b"connection: close" not in received
            writer.write(HEALTH)  # the connection stays open for more
            assert await asyncio.wait_for(reader.read(65_536), 10)

    async def test_a_pipeline_longer_than_the_queue_is_answered_up_to_it_then_closed(
        self, served: Served
    ) -> None:
        """Requests past the queue are never read: the last one read is answered with
        ``connection: close``, and the client retries the rest (RFC 9112 §9.3.2)."""
        async with raw(served) as (reader, writer):
            writer.write(HEALTH * 40)
            await writer.drain()
            statuses = await answers(reader)
        assert statuses == [b"HTTP/1.1 200 OK"] * (internals.MAX_QUEUED_REQUESTS + 1)


class TestHeaders:
    async def test_headers_past_64_kib_are_a_431(self, served: Served) -> None:
        """The probe: 3 connections sending 100 MiB of unfinished headers held +300 MiB."""
        async with raw(served) as (reader, writer):
            writer.write(b"GET /healthz HTTP/1.1\r\nX-Padding: ")
            with contextlib.suppress(ConnectionError):
                for _ in range(30):  # up to 2 MB: the hub reads it and drops it
                    writer.write(b"a" * 65_536)
                    await asyncio.wait_for(writer.drain(), 10)
            assert await answers(reader) == [b"HTTP/1.1 431 Request Header Fields Too Large"]

    @pytest.mark.parametrize("size", [70_000, 120_000])
    async def test_large_headers_in_one_read_are_a_431_too(self, served: Served, size: int) -> None:
        """Headers that arrive whole, in one read or after a request on the same
        connection, are measured exactly."""
        big = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: %b\r\n\r\n" % (b"a" * size)
        async with raw(served) as (reader, writer):
            writer.write(big)
            await writer.drain()
            assert await answers(reader) == [b"HTTP/1.1 431 Request Header Fields Too Large"]
        async with raw(served) as (reader, writer):
            writer.write(HEALTH)
            await writer.drain()
            assert b"200 OK" in await asyncio.wait_for(reader.read(65_536), 10)
            writer.write(big)
            await writer.drain()
            assert await answers(reader) == [b"HTTP/1.1 431 Request Header Fields Too Large"]

    async def test_large_headers_split_across_reads_after_a_request_are_a_431(
        self, served: Served
    ) -> None:
        """A keep-alive request whose headers begin in one read and end in another: the
        first read was not counted (it began between requests), and a loaded machine
        once let 70 KB of headers through this way."""
        big = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: %b\r\n\r\n" % (b"a" * 70_000)
        async with raw(served) as (reader, writer):
            writer.write(HEALTH)
            await writer.drain()
            assert b"200 OK" in await asyncio.wait_for(reader.read(65_536), 10)
            writer.write(big[:60_000])
            await writer.drain()
            await asyncio.sleep(0.2)  # a pause: the hub reads the first part on its own
            writer.write(big[60_000:])
            await writer.drain()
            assert await answers(reader) == [b"HTTP/1.1 431 Request Header Fields Too Large"]

    async def test_a_broken_chunked_body_ends_its_request(self, served: Served) -> None:
        """A body whose chunking breaks off: the request in flight learns its client is
        gone and the client gets a 400, rather than both waiting for ever."""
        async with raw(served) as (reader, writer):
            writer.write(
                b"POST /api/streams/wf-1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                b'5\r\n{"typ\r\nzz\r\n'
            )
            await writer.drain()
            assert await answers(reader) == [b"HTTP/1.1 400 Bad Request"]
        await eventually(lambda: not served.server.server_state.tasks)
        assert (await served.http.get("/api/streams/wf-1")).status_code == 404

    async def test_headers_just_under_the_cap_are_served(self, served: Served) -> None:
        padding = "a" * (60 << 10)
        response = await served.http.get("/healthz", headers={"X-Padding": padding})
        assert response.status_code == 200

    async def test_headers_that_trickle_are_a_408(
        self, served: Served, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The probe: 200 slowloris connections were all still open after 45 s."""
        monkeypatch.setattr(internals, "HEADER_DEADLINE_SECONDS", 0.5)
        async with raw(served) as (reader, writer):
            writer.write(b"GET /healthz HTTP/1.1\r\n")

            async def trickle() -> None:
                with contextlib.suppress(ConnectionError):
                    for _ in range(100):  # a header byte every 50 ms, 5 s at most
                        writer.write(b"X")
                        await writer.drain()
                        await asyncio.sleep(0.05)  # the attack's own pace

            trickling = asyncio.create_task(trickle())
            try:
                assert await answers(reader) == [b"HTTP/1.1 408 Request Timeout"]
            finally:
                trickling.cancel()

    async def test_a_connection_that_sends_nothing_is_closed_after_the_deadline(
        self, served: Served, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(internals, "HEADER_DEADLINE_SECONDS", 0.5)
        async with raw(served) as (reader, _):
            assert await answers(reader) == [b"HTTP/1.1 408 Request Timeout"]

    async def test_keep_alive_requests_each_get_the_deadline_afresh(
        self, served: Served, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The deadline counts from each request's first byte, not from the connection."""
        monkeypatch.setattr(internals, "HEADER_DEADLINE_SECONDS", 0.5)
        async with raw(served) as (reader, writer):
            for _ in range(4):  # 1.2 s in all: longer than one deadline
                await asyncio.sleep(0.3)  # between requests, shorter than a deadline
                writer.write(HEALTH)
                await writer.drain()
                assert b"200 OK" in await asyncio.wait_for(reader.read(65_536), 10)


class TestWaitingConnections:
    async def test_past_the_cap_the_longest_waiting_connection_is_closed(
        self, served: Served, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The probe: with 256 file descriptors, 260 slowloris connections made
        ``/healthz`` unreachable. Past the cap, each new connection closes the one that
        has waited longest for headers."""
        monkeypatch.setattr(internals, "MAX_WAITING_CONNECTIONS", 5)
        monkeypatch.setattr(internals, "PATIENCE_SECONDS", 0.2)
        monkeypatch.setattr(internals, "HEADER_DEADLINE_SECONDS", 600)  # only eviction ends them
        port = served.server.port
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(5)]
        await eventually(lambda: len(http_protocols(served)) >= 5)
        newer = []
        try:
            for reader, _ in idle:
                await asyncio.sleep(0.3)  # longer than the patience: the oldest is stuck
                newer.append(await asyncio.open_connection("127.0.0.1", port))
                assert await answers(reader) == [b"HTTP/1.1 408 Request Timeout"]
            response = await served.http.get("/healthz")
            assert response.status_code == 200
        finally:
            for _, writer in idle + newer:
                writer.close()

    async def test_connections_that_just_arrived_are_not_closed(
        self, served: Served, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A reconnect storm: many connections at once, none has waited long."""
        monkeypatch.setattr(internals, "MAX_WAITING_CONNECTIONS", 3)
        connections = [
            await asyncio.open_connection("127.0.0.1", served.server.port) for _ in range(10)
        ]
        try:
            await eventually(lambda: len(http_protocols(served)) >= 10)
            for reader, writer in connections:
                writer.write(HEALTH)
                await writer.drain()
                assert b"200 OK" in await asyncio.wait_for(reader.read(65_536), 10)
        finally:
            for _, writer in connections:
                writer.close()


class TestUnauthenticatedWebSockets:
    async def test_past_the_cap_the_longest_waiting_socket_is_closed(
        self, make_server: ServerFactory, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """WebSockets that send no credential wait at most 10 s each; past the cap, each
        new one ends the one that has waited longest (close 4001), so they stay few."""
        monkeypatch.setattr(connections, "MAX_UNAUTHENTICATED", 3)
        monkeypatch.setattr(connections, "PATIENCE_SECONDS", 0.2)
        served = await make_server(
            security={"authenticationRequired": True, "jwt": {"secret": "s" * 40}}
        )
        async with contextlib.AsyncExitStack() as stack:
            waiting = [await stack.enter_async_context(connect(served.ws_url)) for _ in range(3)]
            for ws in waiting:  # each is accepted and answers before it authenticates
                await ws.send('{"type": "ping"}')
                assert "pong" in str(await asyncio.wait_for(ws.recv(), 10))
            await asyncio.sleep(0.3)  # longer than the patience: these count as stuck
            newest = await stack.enter_async_context(connect(served.ws_url))
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(waiting[0].recv(), 10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001
            await newest.send('{"type": "ping"}')
            assert "pong" in str(await asyncio.wait_for(newest.recv(), 10))
            await waiting[1].send('{"type": "ping"}')  # the others still wait their turn
            assert "pong" in str(await asyncio.wait_for(waiting[1].recv(), 10))
