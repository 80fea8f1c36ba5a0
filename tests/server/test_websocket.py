"""The WebSocket protocol (docs/protocol.md) with the `websockets` client."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from executor_streamer.history import records
from executor_streamer.server.errors import MAX_CLOSE_REASON_BYTES, fit_close_reason
from executor_streamer.types import StreamEvent

from ..live_server import Served, ServerFactory, assert_freed, reasoning, status
from ..waiting import eventually


class Peer:
    """A WebSocket client that reads JSON messages."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def send(self, message: dict[str, Any] | str | bytes) -> None:
        await self.ws.send(
            message if isinstance(message, str | bytes) else orjson.dumps(message).decode()
        )

    async def recv(self, seconds: float = 5.0) -> dict[str, Any]:
        message: dict[str, Any] = orjson.loads(await asyncio.wait_for(self.ws.recv(), seconds))
        return message

    async def expect(self, kind: str) -> dict[str, Any]:
        message = await self.recv()
        assert message["type"] == kind, message
        return message

    async def closed_with(self) -> int:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await asyncio.wait_for(self.ws.recv(), 5)
        assert self.ws.close_code is not None
        return self.ws.close_code


@contextlib.asynccontextmanager
async def peer(served: Served, query: str = "", ack: bool = True) -> AsyncIterator[Peer]:
    # max_queue=None: the client keeps reading while it closes mid-flood, so it sees the
    # server's close reply instead of timing out (a client-side setting).
    async with connect(served.ws_url + query, max_size=None, max_queue=None) as ws:
        p = Peer(ws)
        if ack:
            await p.expect("connection_ack")
        yield p


class TestProtocol:
    async def test_connection_ack(self, served: Served) -> None:
        """The first message says who the client is and how the server heartbeats."""
        async with peer(served, ack=False) as p:
            ack = await p.expect("connection_ack")
            meta = ack["metadata"]
            assert meta["clientId"].startswith("cli_") and meta["protocolVersion"] == 1
            assert meta["heartbeatInterval"] == 30000 and meta["serverTime"].endswith("Z")

    async def test_subscribe_events_unsubscribe(self, served: Served) -> None:
        """subscribe → subscribed (with requestId) → events → unsubscribe → unsubscribed."""
        [first] = await served.publish("wf-1", status(1))
        async with peer(served) as p:
            await p.send({"type": "subscribe", "streamId": "wf-1", "since": 0, "requestId": "r1"})
            sub = await p.expect("subscribed")
            assert sub["metadata"] == {
                "streamId": first["streamId"],
                "lastSeq": 1,
                "epoch": sub["metadata"]["epoch"],
                "recovered": True,
                "requestId": "r1",
            }
            assert (await p.expect("event"))["event"] == first
            await served.publish("wf-1", status(2))
            assert (await p.expect("event"))["event"]["seq"] == 2
            await p.send({"type": "unsubscribe", "streamId": "wf-1", "requestId": 7})
            gone = await p.expect("unsubscribed")
            assert gone["metadata"] == {"streamId": first["streamId"], "requestId": 7}
            await served.publish("wf-1", status(3))
            await p.send({"type": "ping"})
            assert "serverTime" in (await p.expect("pong"))["metadata"]

    async def test_query_subscribe(self, served: Served) -> None:
        """/ws?streamId= subscribes at once, with types and since."""
        await served.publish("wf-1", status(1), reasoning(), status(2))
        async with peer(served, "?streamId=wf-1&since=0&types=REASONING") as p:
            assert (await p.expect("subscribed"))["metadata"]["lastSeq"] == 3
            assert (await p.expect("event"))["event"]["seq"] == 2

    async def test_replay_parses_no_stored_event(
        self, served: Served, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Replaying history, filtered by type, sends the stored bytes as they are: no
        event is parsed back from them (not for the filter, not for the metrics)."""
        await served.publish("wf-1", *[status(i) for i in range(20)], reasoning())
        parsed: list[bytes] = []
        parse = records._from_json

        def counting(payload: bytes) -> StreamEvent:
            parsed.append(payload)
            return parse(payload)

        monkeypatch.setattr(records, "_from_json", counting)
        async with peer(served, "?streamId=wf-1&since=0&types=REASONING") as p:
            await p.expect("subscribed")
            assert (await p.expect("event"))["event"]["seq"] == 21
        assert parsed == []

    async def test_deliveries_are_counted_by_type(self, served: Served) -> None:
        """/metrics counts every event sent, resumed and live, by type."""
        await served.publish("wf-1", status(1), reasoning())
        async with peer(served, "?streamId=wf-1&since=0") as p:
            await p.expect("subscribed")
            await served.publish("wf-1", status(2))
            assert [(await p.expect("event"))["event"]["seq"] for _ in range(3)] == [1, 2, 3]
        text = (await served.http.get("/metrics")).text
        assert 'executor_streamer_events_delivered_total{type="STATUS"} 2.0' in text
        assert 'executor_streamer_events_delivered_total{type="REASONING"} 1.0' in text

    async def test_query_subscribe_to_unknown_stream_closes_4004(self, served: Served) -> None:
        """An unknown ?streamId= closes the connection with 4004."""
        async with peer(served, "?streamId=nope") as p:
            assert await p.closed_with() == 4004

    async def test_query_with_bad_since_reports_and_stays(self, served: Served) -> None:
        """A malformed ?since= is reported as an error; the connection stays usable."""
        await served.http.post("/api/streams", json={"workflowSessionId": "wf-1"})
        async with peer(served, "?streamId=wf-1&since=abc") as p:
            error = await p.expect("error")
            assert error["error"]["code"] == "VALIDATION_ERROR"
            await p.send({"type": "subscribe", "streamId": "wf-1", "since": 0})
            await p.expect("subscribed")

    async def test_resume_with_another_epoch(self, served: Served) -> None:
        """Resuming with an epoch from another life of the stream replays everything held
        and says recovered: false."""
        await served.publish("wf-1", status(1), status(2))
        async with peer(served) as p:
            await p.send({"type": "subscribe", "streamId": "wf-1", "since": 1, "epoch": "old"})
            meta = (await p.expect("subscribed"))["metadata"]
            assert meta["recovered"] is False and meta["epoch"] != "old"
            assert [(await p.expect("event"))["event"]["seq"] for _ in range(2)] == [1, 2]

    async def test_batch_mode(self, served: Served) -> None:
        """With batch:true, what is queued goes out as one `events` frame."""
        await served.publish("wf-1", *[status(i) for i in range(5)])
        async with peer(served) as p:
            await p.send({"type": "subscribe", "streamId": "wf-1", "since": 0, "batch": True})
            await p.expect("subscribed")
            frame = await p.expect("events")
            seen = [e["seq"] for e in frame["events"]]
            while len(seen) < 5:
                seen += [e["seq"] for e in (await p.expect("events"))["events"]]
            assert seen == [1, 2, 3, 4, 5]

    async def test_filter_message(self, served: Served) -> None:
        """filter replaces a subscription's filters and is acknowledged."""
        await served.http.post("/api/streams", json={"workflowSessionId": "wf-1"})
        async with peer(served) as p:
            await p.send({"type": "subscribe", "streamId": "wf-1"})
            await p.expect("subscribed")
            await p.send(
                {
                    "type": "filter",
                    "streamId": "wf-1",
                    "filters": [{"eventTypes": ["REASONING"]}],
                    "requestId": "f",
                }
            )
            ack = await p.expect("filter_ack")
            assert ack["metadata"]["filters"] == [{"eventTypes": ["REASONING"]}]
            assert ack["metadata"]["requestId"] == "f"
            await served.publish("wf-1", status(1), reasoning())
            assert (await p.expect("event"))["event"]["type"] == "REASONING"

    async def test_replay_message_and_rest_replay(self, served: Served) -> None:
        """replay sends history marked replay:true, then replay_done with the count."""
        await served.publish("wf-1", *[status(i) for i in range(4)])
        async with peer(served) as p:
            await p.send(
                {
                    "type": "subscribe",
                    "streamId": "wf-1",
                    "replayOptions": {"afterSeq": 1, "limit": 2},
                    "requestId": "s",
                }
            )
            await p.expect("subscribed")
            replayed = [await p.expect("event") for _ in range(2)]
            assert [m["event"]["seq"] for m in replayed] == [2, 3]
            assert all(m["metadata"] == {"replay": True} for m in replayed)
            done = await p.expect("replay_done")
            assert done["metadata"]["count"] == 2 and done["metadata"]["lastSeq"] == 3
            assert done["metadata"]["requestId"] == "s"
            client_id = (await served.http.get("/api/streams/wf-1/clients")).json()[0]["id"]
            accepted = await served.http.post(
                f"/api/streams/wf-1/replay/{client_id}", json={"afterSeq": 3}
            )
            assert accepted.status_code == 202 and accepted.json()["count"] == 1
            assert (await p.expect("event"))["event"]["seq"] == 4
            assert (await p.expect("replay_done"))["metadata"]["count"] == 1

    @pytest.mark.parametrize(
        ("message", "code"),
        [
            ("not json", "INVALID_MESSAGE"),
            ({"type": "dance"}, "INVALID_MESSAGE"),
            ({"type": "subscribe"}, "INVALID_MESSAGE"),
            ({"type": "subscribe", "streamId": "wf-1", "since": -1}, "INVALID_MESSAGE"),
            ({"type": "subscribe", "streamId": "nope"}, "STREAM_NOT_FOUND"),
            ({"type": "unsubscribe", "streamId": "wf-1"}, "NOT_SUBSCRIBED"),
            ({"type": "replay", "streamId": "wf-1"}, "NOT_SUBSCRIBED"),
            (b"\x00binary", "INVALID_MESSAGE"),
            ([1, 2], "INVALID_MESSAGE"),
        ],
    )
    async def test_bad_messages_keep_the_connection(
        self, served: Served, message: Any, code: str
    ) -> None:
        """A malformed or impossible message gets an error; the connection stays usable."""
        await served.http.post("/api/streams", json={"workflowSessionId": "wf-1"})
        async with peer(served) as p:
            await p.send(message)
            error = await p.expect("error")
            assert error["error"]["code"] == code
            await p.send({"type": "ping", "requestId": 1})
            assert (await p.expect("pong"))["metadata"]["requestId"] == 1


class TestEnding:
    async def test_stream_close(self, served: Served) -> None:
        """Subscribers get STREAM_CLOSED; a ?streamId= connection is then closed 4010."""
        await served.http.post("/api/streams", json={"workflowSessionId": "wf-1"})
        await served.http.post("/api/streams", json={"workflowSessionId": "wf-2"})
        async with peer(served, "?streamId=wf-1") as by_query, peer(served) as by_message:
            await by_query.expect("subscribed")
            await by_message.send({"type": "subscribe", "streamId": "wf-1"})
            await by_message.expect("subscribed")
            await served.http.delete("/api/streams/wf-1")
            assert (await by_query.expect("error"))["error"]["code"] == "STREAM_CLOSED"
            assert await by_query.closed_with() == 4010
            assert (await by_message.expect("error"))["error"]["code"] == "STREAM_CLOSED"
            await by_message.send({"type": "ping"})
            await by_message.expect("pong")

    async def test_operator_disconnect_closes_4000(self, served: Served) -> None:
        """DELETE /clients/{id} closes the WebSocket with 4000."""
        await served.http.post("/api/streams", json={"workflowSessionId": "wf-1"})
        async with peer(served, "?streamId=wf-1") as p:
            await p.expect("subscribed")
            [client] = (await served.http.get("/api/streams/wf-1/clients")).json()
            assert client["type"] == "WEBSOCKET"
            await served.http.delete(f"/api/streams/wf-1/clients/{client['id']}")
            assert await p.closed_with() == 4000

    async def test_client_limits_close_1013(self, make_server: ServerFactory) -> None:
        """Past maxClients (per stream) or maxConnections (hub) the close code is 1013."""
        served = await make_server(
            default_stream_config={"max_clients": 1}, server={"max_connections": 2}
        )
        await served.http.post("/api/streams", json={"workflowSessionId": "wf-1"})
        async with peer(served, "?streamId=wf-1") as first:
            await first.expect("subscribed")
            async with peer(served, "?streamId=wf-1") as second:
                assert await second.closed_with() == 1013
            async with peer(served) as other, peer(served, ack=False) as third:
                assert await third.closed_with() == 1013
                await other.send({"type": "subscribe", "streamId": "wf-1"})
                assert (await other.expect("error"))["error"]["code"] == "TOO_MANY_CLIENTS"

    async def test_server_shutdown_closes_1001(self, make_server: ServerFactory) -> None:
        """Stopping the server closes WebSockets with 1001 and loses no acknowledged event."""
        served = await make_server()
        await served.http.post("/api/streams", json={"workflowSessionId": "wf-1"})
        async with peer(served, "?streamId=wf-1") as p:
            await p.expect("subscribed")
            await served.publish("wf-1", status(1))
            served.server.should_exit = True
            assert (await p.expect("event"))["event"]["seq"] == 1
            assert await p.closed_with() == 1001


class TestLiveness:
    async def test_quiet_clients_outlive_the_idle_timeout(self, make_server: ServerFactory) -> None:
        """A silent WebSocket (answering protocol pings) and a quiet SSE stream are not
        removed as idle: the open, pinged connection and the heartbeats keep them alive."""
        from ..live_server import sse_stream

        served = await make_server(server={"idleClientTimeout": 1000})
        await served.http.post("/api/streams", json={"workflowSessionId": "wf-1"})
        async with (
            peer(served, "?streamId=wf-1") as p,
            sse_stream(served, "/api/streams/wf-1/events") as sse,
        ):
            await p.expect("subscribed")
            assert (await sse.next()).event == "subscribed"
            beats = [await sse.next() for _ in range(6)]  # about two idle timeouts
            assert {b.event for b in beats} == {"heartbeat"}
            clients = (await served.http.get("/api/streams/wf-1/clients")).json()
            assert sorted(c["type"] for c in clients) == ["SERVER_SENT_EVENTS", "WEBSOCKET"]
            await served.publish("wf-1", status(1))
            assert (await p.expect("event"))["event"]["seq"] == 1


class TestResume:
    async def test_resubscribe_while_publishing_at_full_rate(self, served: Served) -> None:
        """Reconnecting with since=last seq mid-burst loses and repeats nothing."""
        await served.http.post("/api/streams", json={"workflowSessionId": "wf-1"})
        total = 800

        async def burst() -> None:
            for start in range(0, total, 20):
                await served.publish("wf-1", *[status(i) for i in range(start, start + 20)])

        publisher = asyncio.create_task(burst())
        seen: list[int] = []
        while len(seen) < total:
            async with peer(served, f"?streamId=wf-1&since={seen[-1] if seen else 0}") as p:
                await p.expect("subscribed")
                for _ in range(min(113, total - len(seen))):
                    seen.append((await p.expect("event"))["event"]["seq"])
        await publisher
        assert seen == list(range(1, total + 1))


class TestLifetime:
    async def test_an_ended_session_is_freed_without_the_collector(self, served: Served) -> None:
        """With the cyclic collector off, a WebSocket session that ended leaves nothing
        behind: it breaks its own cycles, so its queues and socket buffers go at once
        (the server raises the collector's thresholds; see runner.tune_garbage_collector)."""
        from executor_streamer.server.websocket import WebSocketSession

        await served.publish("wf-1", status(0))
        gc.collect()
        gc.disable()
        try:
            for _ in range(3):
                async with peer(served) as p:
                    await p.send({"type": "subscribe", "streamId": "wf-1", "batch": True})
                    await p.expect("subscribed")
                    await served.publish("wf-1", status(1))
                    await p.expect("events")
            await assert_freed(served, WebSocketSession)
        finally:
            gc.enable()


def writer_tasks() -> list[asyncio.Task[Any]]:
    """Sessions' writer tasks: they exist only while a write waits for the socket."""
    return [
        t
        for t in asyncio.all_tasks()
        if getattr(t.get_coro(), "__qualname__", None) == "WebSocketSession._write"
    ]


class TestWriting:
    async def test_idle_connections_hold_no_writer_task(self, served: Served) -> None:
        """Events and replies go out from the flush pass and the reader: once delivered,
        a connection holds no task but its reader."""
        await served.http.post("/api/streams", json={"workflowSessionId": "wf-1"})
        async with peer(served, "?streamId=wf-1") as a, peer(served) as b:
            await a.expect("subscribed")
            await b.send({"type": "subscribe", "streamId": "wf-1", "batch": True})
            await b.expect("subscribed")
            await served.publish("wf-1", *[status(i) for i in range(5)])
            assert [(await a.expect("event"))["event"]["seq"] for _ in range(5)] == [1, 2, 3, 4, 5]
            assert len((await b.expect("events"))["events"]) >= 1
            assert writer_tasks() == []

    async def test_a_reader_that_pauses_gets_everything_in_order(
        self, make_server: ServerFactory
    ) -> None:
        """A client that stops reading fills its socket: a writer task waits for it, and
        once the client reads on, every event arrives in order and the task is gone."""
        from .test_slow_consumers import TOTAL, big_event

        served = await make_server(
            default_stream_config={"buffer_size": TOTAL * 2}, limits={"maxQueuedBytes": 64 << 20}
        )
        await served.http.post("/api/streams", json={"workflowSessionId": "wf-1"})
        # max_queue=1: once one message is buffered the client stops reading the socket.
        async with connect(served.ws_url + "?streamId=wf-1", max_size=None, max_queue=1) as ws:
            p = Peer(ws)
            await p.expect("connection_ack")
            await p.expect("subscribed")
            for start in range(0, TOTAL, 10):
                await served.publish("wf-1", *[big_event(i) for i in range(start, start + 10)])
            assert len(writer_tasks()) == 1
            seqs = [(await p.expect("event"))["event"]["seq"] for _ in range(TOTAL)]
            assert seqs == list(range(1, TOTAL + 1))
            assert await eventually(lambda: writer_tasks() == []), "the writer task stayed"
            await p.send({"type": "ping"})
            await p.expect("pong")


class TestUnderAnotherWebSocketServer:
    """Under uvicorn's own WebSocket protocol the hub cannot write frames directly: every
    frame goes out as an ASGI send, from a writer task. Same protocol, same order."""

    async def test_events_replies_and_endings(self, make_server: ServerFactory) -> None:
        served = await make_server(ws="websockets-sansio")
        await served.http.post("/api/streams", json={"workflowSessionId": "wf-1"})
        async with peer(served, "?streamId=wf-1") as plain, peer(served) as batched:
            await plain.expect("subscribed")
            await batched.send({"type": "subscribe", "streamId": "wf-1", "batch": True})
            await batched.expect("subscribed")
            for start in range(0, 60, 20):
                await served.publish("wf-1", *[status(i) for i in range(start, start + 20)])
                await plain.send({"type": "ping", "requestId": start})
            seqs: list[int] = []
            pongs: list[int] = []
            while len(seqs) < 60 or len(pongs) < 3:
                message = await plain.recv()
                if message["type"] == "event":
                    seqs.append(message["event"]["seq"])
                else:
                    pongs.append(message["metadata"]["requestId"])
            assert seqs == list(range(1, 61)) and pongs == [0, 20, 40]
            batches: list[int] = []
            while len(batches) < 60:
                batches += [e["seq"] for e in (await batched.expect("events"))["events"]]
            assert batches == list(range(1, 61))
            await served.http.delete("/api/streams/wf-1")
            assert (await plain.expect("error"))["error"]["code"] == "STREAM_CLOSED"
            assert await plain.closed_with() == 4010
            assert (await batched.expect("error"))["error"]["code"] == "STREAM_CLOSED"
            await batched.send({"type": "ping"})
            await batched.expect("pong")
        async with peer(served, "?streamId=nope") as unknown:  # acknowledged, then closed
            assert await unknown.closed_with() == 4004


class TestCompression:
    async def test_permessage_deflate_only_when_configured(
        self, make_server: ServerFactory
    ) -> None:
        """A client offering permessage-deflate gets it only with compression.websocket:
        by default frames go out as serialized at publish time, with no zlib state per
        connection."""
        for websocket, expected in ((False, None), (True, "permessage-deflate")):
            served = await make_server(compression={"websocket": websocket})
            async with connect(served.ws_url, compression="deflate") as ws:
                assert ws.response is not None
                header = ws.response.headers.get("Sec-WebSocket-Extensions")
                accepted = header.split(";")[0] if header else None
                assert accepted == expected


@given(st.text())
def test_a_close_reason_is_cut_to_fit_its_frame(message: str) -> None:
    """What fits is kept whole; what does not is cut to 123 bytes, never inside a
    character, so the close frame stays valid and keeps its code."""
    reason = fit_close_reason(message)
    assert message.startswith(reason)
    assert len(reason.encode()) <= MAX_CLOSE_REASON_BYTES
    if len(message.encode()) <= MAX_CLOSE_REASON_BYTES:
        assert reason == message
    else:
        assert len(reason.encode()) > MAX_CLOSE_REASON_BYTES - 4  # at most one character cut
