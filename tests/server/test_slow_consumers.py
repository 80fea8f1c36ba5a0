"""One slow client never harms the others (docs/architecture.md), over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import secrets

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from ..live_server import Served, ServerFactory
from ..waiting import eventually, eventually_async

# Incompressible, so permessage-deflate cannot shrink the flood below what sockets buffer.
BIG = secrets.token_urlsafe(75_000)
TOTAL = 250  # 25 MB: more than loopback socket buffers hold


def big_event(n: int) -> dict[str, object]:
    return {"type": "STATUS", "data": {"statusType": "load", "status": str(n), "message": BIG}}


async def flood(served: Served) -> None:
    for start in range(0, TOTAL, 10):
        await served.publish("wf-1", *[big_event(i) for i in range(start, start + 10)])


async def fast_websocket_reader(served: Served, ready: asyncio.Event) -> list[int]:
    seqs: list[int] = []
    async with connect(served.ws_url + "?streamId=wf-1", max_size=None, max_queue=None) as ws:
        await ws.recv()  # connection_ack
        await ws.recv()  # subscribed
        ready.set()
        while len(seqs) < TOTAL:
            message = await asyncio.wait_for(ws.recv(), 20)
            seqs.append(int(str(message).split('"seq":', 1)[1].split(",", 1)[0]))
    return seqs


async def wait_for_drop(served: Served) -> None:
    dropped = await eventually(lambda: served.hub.counters.slow_consumers)
    assert dropped, "the slow consumer was never dropped"


async def until_both_subscribed(served: Served) -> None:
    """Until the hub lists the slow client beside the fast one, so that the flood finds
    it subscribed."""

    async def both() -> bool:
        return len((await served.http.get("/api/streams/wf-1/clients")).json()) == 2

    assert await eventually_async(both), "the slow client never subscribed"


class TestSlowConsumers:
    async def test_stalled_websocket_is_closed_4008(self, make_server: ServerFactory) -> None:
        """A WebSocket that stops reading is dropped; a fast one gets every event."""
        served = await make_server(default_stream_config={"buffer_size": 20})
        await served.http.post("/api/streams", json={"workflowSessionId": "wf-1"})
        ready = asyncio.Event()
        fast = asyncio.create_task(fast_websocket_reader(served, ready))
        await ready.wait()
        # max_queue=1: once one message is buffered the client stops reading the socket.
        async with connect(served.ws_url + "?streamId=wf-1", max_size=None, max_queue=1) as slow:
            await until_both_subscribed(served)
            await flood(served)
            await wait_for_drop(served)
            assert await asyncio.wait_for(fast, 30) == list(range(1, TOTAL + 1))
            with contextlib.suppress(ConnectionClosed):
                while True:
                    await asyncio.wait_for(slow.recv(), 10)
            assert slow.close_code in (4008, 1006)
        clients = (await served.http.get("/api/streams/wf-1/clients")).json()
        assert clients == []

    async def test_stalled_sse_reader_is_cut(self, make_server: ServerFactory) -> None:
        """An SSE client that stops reading is cut off; a fast one gets every event."""
        served = await make_server(default_stream_config={"buffer_size": 20})
        await served.http.post("/api/streams", json={"workflowSessionId": "wf-1"})
        ready = asyncio.Event()
        fast = asyncio.create_task(fast_websocket_reader(served, ready))
        await ready.wait()
        port = served.server.port
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /api/streams/wf-1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")  # headers, then never read again
        try:
            await until_both_subscribed(served)
            await flood(served)
            await wait_for_drop(served)
            assert await asyncio.wait_for(fast, 30) == list(range(1, TOTAL + 1))
            # Reading now drains what was buffered, then the server has closed the socket.
            while await asyncio.wait_for(reader.read(1 << 20), 10):
                pass
        finally:
            writer.close()
        types = [c["type"] for c in (await served.http.get("/api/streams/wf-1/clients")).json()]
        assert "SERVER_SENT_EVENTS" not in types
