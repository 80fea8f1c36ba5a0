"""A transport whose code raises for one client: that client is closed (WebSocket 1011,
SSE ``INTERNAL_ERROR``); publishers are answered and every other client gets every event."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from executor_streamer.core.subscription import Subscription
from executor_streamer.server.sse import EventStreamResponse
from executor_streamer.server.websocket import WebSocketSession

from ..live_server import Served, sse_stream, status

EVENTS = 60


async def publish_concurrently(served: Served) -> None:
    async def publisher(n: int) -> None:
        for i in range(EVENTS // 4):
            await served.publish("wf-1", status(f"{n}.{i}"))

    await asyncio.wait_for(asyncio.gather(*(publisher(n) for n in range(4))), 20)


async def healthy_websocket(served: Served, received: list[int], ready: asyncio.Event) -> None:
    async with connect(served.ws_url + "?streamId=wf-1") as ws:
        while len(received) < EVENTS:
            message = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
            if message["type"] == "subscribed":
                ready.set()
            elif message["type"] == "event":
                received.append(message["event"]["seq"])


class TestFaultContainment:
    async def test_a_websocket_whose_transport_raises(
        self, served: Served, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        await served.publish("wf-1", status("first"))
        victims: set[str] = set()
        original = WebSocketSession._on_ready

        def on_ready(self: WebSocketSession, sub: Subscription) -> None:
            if self.client is not None and self.client.id in victims:
                raise RuntimeError("a bug in the WebSocket transport")
            original(self, sub)

        monkeypatch.setattr(WebSocketSession, "_on_ready", on_ready)
        received: list[int] = []
        ready = asyncio.Event()
        healthy = asyncio.create_task(healthy_websocket(served, received, ready))
        async with connect(served.ws_url + "?streamId=wf-1") as victim:
            ack = orjson.loads(await victim.recv())
            victims.add(ack["metadata"]["clientId"])
            await asyncio.wait_for(ready.wait(), 5)
            await publish_concurrently(served)
            with pytest.raises(ConnectionClosed):
                while True:
                    await asyncio.wait_for(victim.recv(), 5)
            assert victim.close_code == 1011
        await asyncio.wait_for(healthy, 10)
        assert received == list(range(2, EVENTS + 2))

    async def test_an_sse_response_whose_transport_raises(
        self, served: Served, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        victims: set[str] = set()
        original = EventStreamResponse._on_ready

        def on_ready(self: EventStreamResponse, sub: Subscription) -> None:
            if self.client.id in victims:
                raise RuntimeError("a bug in the SSE transport")
            original(self, sub)

        monkeypatch.setattr(EventStreamResponse, "_on_ready", on_ready)
        await served.publish("wf-1", status("first"))
        async with sse_stream(served, "/api/streams/wf-1/events") as victim:
            [client] = (await served.http.get("/api/streams/wf-1/clients")).json()
            victims.add(client["id"])
            async with sse_stream(served, "/api/streams/wf-1/events") as healthy:
                clients = (await served.http.get("/api/streams/wf-1/clients")).json()
                assert len(clients) == 2  # registered before its response starts
                await publish_concurrently(served)
                # What was queued before the failure still goes out, then the end.
                message = await victim.next()
                while message.event in ("subscribed", "stream_event"):
                    message = await victim.next()
                assert (message.event, message.json()["code"]) == ("error", "INTERNAL_ERROR")
                got = await healthy.events(EVENTS)
                assert [int(m.id or 0) for m in got] == list(range(2, EVENTS + 2))
