"""Filter expressions on every transport (docs/expressions.md): WebSocket ``subscribe`` and
``filter`` messages and ``/ws?filter=``, SSE and long polling ``?filter=``, and the Python
SDK; a bad expression is ``INVALID_FILTER`` with where it went wrong, and a WebSocket
stays open after one."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from executor_streamer import HubClient, InvalidFilter

from ..live_server import Served, sse_stream, status
from .test_websocket import peer

SLOW = "data.statusType == 'slow'"


def typed(kind: str, n: int) -> dict[str, Any]:
    return {"type": "STATUS", "data": {"statusType": kind, "status": str(n)}}


class TestWebSocket:
    async def test_subscribe_with_an_expression(self, served: Served) -> None:
        await served.publish("wf-1", typed("slow", 1), typed("fast", 2), typed("slow", 3))
        async with peer(served) as p:
            await p.send(
                {
                    "type": "subscribe",
                    "streamId": "wf-1",
                    "since": 0,
                    "filters": [{"expression": SLOW}],
                }
            )
            await p.expect("subscribed")
            assert (await p.expect("event"))["event"]["seq"] == 1
            assert (await p.expect("event"))["event"]["seq"] == 3
            await served.publish("wf-1", typed("fast", 4), typed("slow", 5))
            assert (await p.expect("event"))["event"]["seq"] == 5

    async def test_a_bad_expression_is_an_error_and_the_connection_stays(
        self, served: Served
    ) -> None:
        await served.publish("wf-1", status(1))
        async with peer(served) as p:
            await p.send(
                {
                    "type": "subscribe",
                    "streamId": "wf-1",
                    "filters": [{"expression": "data.statusType =="}],
                    "requestId": "r1",
                }
            )
            error = await p.expect("error")
            assert error["error"]["code"] == "INVALID_FILTER"
            assert error["error"]["details"]["position"] == 18
            assert error["error"]["details"]["message"].startswith("Syntax error")
            assert error["metadata"]["requestId"] == "r1"
            await p.send({"type": "subscribe", "streamId": "wf-1", "since": 0})
            await p.expect("subscribed")
            assert (await p.expect("event"))["event"]["seq"] == 1

    async def test_the_filter_message_takes_an_expression(self, served: Served) -> None:
        await served.publish("wf-1", status(0))
        async with peer(served) as p:
            await p.send({"type": "subscribe", "streamId": "wf-1"})
            await p.expect("subscribed")
            await p.send({"type": "filter", "streamId": "wf-1", "filters": [{"expression": SLOW}]})
            ack = await p.expect("filter_ack")
            assert ack["metadata"]["filters"] == [{"expression": SLOW}]
            await served.publish("wf-1", typed("fast", 1), typed("slow", 2))
            assert (await p.expect("event"))["event"]["seq"] == 3
            await p.send({"type": "filter", "streamId": "wf-1", "filters": [{"expression": "1"}]})
            assert (await p.expect("error"))["error"]["code"] == "INVALID_FILTER"
            await served.publish("wf-1", typed("fast", 3), typed("slow", 4))
            assert (await p.expect("event"))["event"]["seq"] == 5  # the old filter holds

    async def test_the_url_takes_an_expression_with_types(self, served: Served) -> None:
        await served.publish("wf-1", typed("slow", 1), typed("fast", 2), typed("slow", 3))
        expression = quote("data.status != '1'")
        query = f"?streamId=wf-1&since=0&types=STATUS&filter={expression}"
        async with peer(served, query) as p:
            await p.expect("subscribed")
            assert [(await p.expect("event"))["event"]["seq"] for _ in range(2)] == [2, 3]


class TestServerSentEvents:
    async def test_the_url_takes_an_expression(self, served: Served) -> None:
        await served.publish("wf-1", typed("slow", 1), typed("fast", 2))
        path = f"/api/streams/wf-1/events?since=0&filter={quote(SLOW)}"
        async with sse_stream(served, path) as sse:
            assert [m.id for m in await sse.events(1)] == ["1"]
            await served.publish("wf-1", typed("fast", 3), typed("slow", 4))
            assert [m.id for m in await sse.events(1)] == ["4"]

    async def test_a_bad_expression_is_a_422(self, served: Served) -> None:
        await served.publish("wf-1", status(1))
        response = await served.http.get(f"/api/streams/wf-1/events?filter={quote('nope')}")
        assert response.status_code == 422
        error = response.json()["error"]
        assert error["code"] == "INVALID_FILTER"
        assert error["details"]["message"] == "undeclared reference to 'nope'"
        assert error["details"]["position"] == 0
        assert not served.hub.streams.resolve("wf-1").subscriptions


class TestLongPolling:
    async def test_the_url_takes_an_expression(self, served: Served) -> None:
        await served.publish("wf-1", typed("slow", 1), typed("fast", 2), typed("slow", 3))
        response = await served.http.get(
            "/api/streams/wf-1/poll", params={"since": 0, "timeout": 0, "filter": SLOW}
        )
        assert [e["seq"] for e in response.json()["events"]] == [1, 3]

    async def test_a_bad_expression_is_a_422(self, served: Served) -> None:
        await served.publish("wf-1", status(1))
        response = await served.http.get(
            "/api/streams/wf-1/poll", params={"timeout": 0, "filter": "x" * 3000}
        )
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "INVALID_FILTER"


class TestHistory:
    async def test_the_url_takes_an_expression(self, served: Served) -> None:
        await served.publish("wf-1", *[typed("slow" if n % 2 else "fast", n) for n in range(9)])
        response = await served.http.get(
            "/api/streams/wf-1/history", params={"filter": SLOW, "limit": 2, "offset": 1}
        )
        body = response.json()
        assert [e["seq"] for e in body["events"]] == [4, 6] and body["total"] == 4

    async def test_a_bad_expression_is_a_422(self, served: Served) -> None:
        await served.publish("wf-1", status(1))
        response = await served.http.get("/api/streams/wf-1/history", params={"filter": "seq"})
        assert response.status_code == 422
        assert response.json()["error"]["details"]["message"].startswith("must be true or false")

    async def test_a_websocket_replay_takes_an_expression(self, served: Served) -> None:
        await served.publish("wf-1", typed("slow", 1), typed("fast", 2), typed("slow", 3))
        async with peer(served) as p:
            await p.send({"type": "subscribe", "streamId": "wf-1"})
            await p.expect("subscribed")
            await p.send(
                {"type": "replay", "streamId": "wf-1", "replayOptions": {"expression": SLOW}}
            )
            replayed = [await p.expect("event") for _ in range(2)]
            assert [m["event"]["seq"] for m in replayed] == [1, 3]
            assert (await p.expect("replay_done"))["metadata"]["count"] == 2
            await p.send(
                {"type": "replay", "streamId": "wf-1", "replayOptions": {"expression": "?"}}
            )
            assert (await p.expect("error"))["error"]["code"] == "INVALID_FILTER"


class TestPythonClient:
    async def test_subscribe_and_watch_take_an_expression(self, served: Served) -> None:
        await served.publish("wf-1", typed("slow", 1), typed("fast", 2), typed("slow", 3))
        async with HubClient(served.base_url) as client:
            subscribed = []
            async with client.subscribe("wf-1", since=0, filter=SLOW) as sub:
                async for event in sub:
                    subscribed.append(event.seq)
                    if len(subscribed) == 2:
                        break
            assert subscribed == [1, 3]
            watched = []
            async for event in client.watch("wf-1", since=0, filter=SLOW):
                watched.append(event.seq)
                if len(watched) == 2:
                    break
            assert watched == [1, 3]

    async def test_a_bad_expression_raises(self, served: Served) -> None:
        await served.publish("wf-1", status(1))
        async with HubClient(served.base_url) as client:
            with pytest.raises(InvalidFilter) as refused:
                async with client.subscribe("wf-1", filter="seq +") as sub:
                    async for _ in sub:
                        pass
            assert refused.value.details["position"] == 5
