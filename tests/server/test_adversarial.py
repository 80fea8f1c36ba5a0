"""Regression tests for what an adversarial probe of a running hub found, one test each:
bad input gets a clear 4xx (or a WebSocket ``error``) and changes nothing; a client that
misbehaves costs the hub a bounded amount and is dropped."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from executor_streamer import ClientType, CloseReason, ExecutorStreamer, InvalidInput
from executor_streamer.types.filters import MAX_SEQ

from ..conftest import HubFactory
from ..live_server import Served, ServerFactory, reasoning, status
from ..waiting import eventually
from .test_websocket import peer

EDGE_TIMES = ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"]


async def history_total(served: Served, stream: str = "wf-1") -> int:
    response = await served.http.get(f"/api/streams/{stream}/history")
    total: int = response.json()["total"] if response.status_code == 200 else 0
    return total


class TestResumePositions:
    @pytest.mark.parametrize("value", ["²", "\u0661", "-1", "1.0", str(MAX_SEQ + 1), "9" * 40])
    async def test_a_bad_since_is_a_422_on_sse_and_polling(
        self, served: Served, value: str
    ) -> None:
        """``since`` must be ASCII digits within 0..2^63-1: "²" passes str.isdigit() but
        not int(), and once made the server answer 500."""
        await served.publish("wf-1", status(1))
        for path in ("events", "poll"):
            response = await served.http.get(f"/api/streams/wf-1/{path}", params={"since": value})
            assert response.status_code == 422, (path, response.text)

    async def test_a_bad_last_event_id_is_a_422(self, served: Served) -> None:
        await served.publish("wf-1", status(1))
        response = await served.http.get(
            "/api/streams/wf-1/events", headers={b"last-event-id": "²".encode("latin-1")}
        )
        assert response.status_code == 422
        assert response.json()["error"]["details"]["errors"][0]["path"] == "header.Last-Event-ID"

    async def test_a_bad_since_on_a_websocket_url_is_reported_and_the_socket_stays(
        self, served: Served
    ) -> None:
        await served.publish("wf-1", status(1))
        async with peer(served, "?streamId=wf-1&since=²") as p:
            assert (await p.expect("error"))["error"]["code"] == "VALIDATION_ERROR"
            await p.send({"type": "subscribe", "streamId": "wf-1", "since": MAX_SEQ + 1})
            assert (await p.expect("error"))["error"]["code"] == "INVALID_MESSAGE"
            await p.send({"type": "subscribe", "streamId": "wf-1", "since": 0})
            await p.expect("subscribed")


class TestTimestampsAtTheEdgeOfTheRange:
    """Offsets that carry a valid local time outside the range of UTC dates once were an
    OverflowError: HTTP 500, a WebSocket dropped with 1006."""

    @pytest.mark.parametrize("moment", EDGE_TIMES)
    async def test_history_analytics_and_replay_answer_422(
        self, served: Served, moment: str
    ) -> None:
        await served.publish("wf-1", status(1))
        for path, params in [
            ("/api/streams/wf-1/history", {"startTime": moment}),
            ("/api/streams/wf-1/history", {"endTime": moment}),
            ("/api/analytics/events", {"start": moment, "end": "2026-01-01T00:00:00Z"}),
            ("/api/analytics/clients", {"start": "2026-01-01T00:00:00Z", "end": moment}),
        ]:
            response = await served.http.get(path, params=params)
            assert response.status_code == 422, (path, params, response.text)
        async with peer(served, "?streamId=wf-1") as p:
            client_id = (await served.http.get("/api/streams/wf-1/clients")).json()[0]["id"]
            response = await served.http.post(
                f"/api/streams/wf-1/replay/{client_id}", json={"startTime": moment}
            )
            assert response.status_code == 422, response.text
            await p.expect("subscribed")

    @pytest.mark.parametrize("moment", EDGE_TIMES)
    async def test_websocket_filters_and_replays_are_refused_and_the_socket_stays(
        self, served: Served, moment: str
    ) -> None:
        await served.publish("wf-1", status(1))
        time_range = {"start": moment, "end": "2026-01-01T00:00:00Z"}
        messages: list[dict[str, Any]] = [
            {"type": "subscribe", "streamId": "wf-1", "filters": [{"timeRange": time_range}]},
            {"type": "subscribe", "streamId": "wf-1", "replayOptions": {"endTime": moment}},
        ]
        async with peer(served) as p:
            for message in messages:
                await p.send(message)
                assert (await p.expect("error"))["error"]["code"] == "INVALID_MESSAGE"
            await p.send({"type": "subscribe", "streamId": "wf-1"})
            await p.expect("subscribed")
            await p.send(
                {"type": "replay", "streamId": "wf-1", "replayOptions": {"startTime": moment}}
            )
            assert (await p.expect("error"))["error"]["code"] == "INVALID_MESSAGE"
            await p.send({"type": "ping"})
            await p.expect("pong")


class TestSqlBounds:
    async def test_file_history_positions_beyond_64_bits_are_a_422(
        self, make_server: ServerFactory, tmp_path: Path
    ) -> None:
        """SQLite's integers are 64-bit: afterSeq or offset of 2^63 once overflowed (500)."""
        served = await make_server(
            persistence={"storageBackend": "file", "connectionString": str(tmp_path / "h.db")}
        )
        await served.publish("wf-1", status(1))
        for name in ("afterSeq", "offset"):
            over = await served.http.get("/api/streams/wf-1/history", params={name: MAX_SEQ + 1})
            assert over.status_code == 422, over.text
            top = await served.http.get("/api/streams/wf-1/history", params={name: MAX_SEQ})
            assert top.status_code == 200 and top.json()["events"] == []


class TestIdentities:
    async def test_a_stream_id_is_never_a_workflow_session_id(self, served: Served) -> None:
        """Naming a workflow session after another stream's id once made publishes to that
        id land in the other stream: ids of the ``str_`` shape are refused as workflow
        session ids, and a publish to an unknown one is a 404, not a new stream."""
        [stored] = await served.publish("wf-1", status(1))
        stream_id = stored["streamId"]
        response = await served.http.post("/api/streams", json={"workflowSessionId": stream_id})
        assert response.status_code == 422
        assert "str_" in response.json()["error"]["message"]
        response = await served.http.post("/api/streams/str_unknown/events", json=status(2))
        assert response.status_code == 404
        await served.publish(stream_id, status(2))
        assert await history_total(served) == 2
        assert [
            s["linkedWorkflowSessionId"] for s in (await served.http.get("/api/streams")).json()
        ] == ["wf-1"]


class TestClientsThatDoNotRead:
    """A WebSocket client that sends requests and never reads the answers once made the
    server buffer them without bound (+147 MB for 100 replays, +305 MB for 50k pings)."""

    BUDGET = 256 << 10

    async def _flood(self, served: Served, messages: list[str]) -> int:
        # A client that never reads: past one message (max_queue=1) it stops reading its
        # socket, whose receive buffer is small, so the server's replies pile up there.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", served.server.port))
        url = served.ws_url + "?streamId=wf-1"
        async with connect(url, sock=sock, max_queue=1, max_size=None) as ws:
            for message in messages:
                try:
                    await asyncio.wait_for(ws.send(message), 5)
                except (ConnectionClosed, TimeoutError):
                    break
            with contextlib.suppress(ConnectionClosed):
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
            assert ws.close_code is not None
            return ws.close_code

    async def test_replays_never_read_end_as_a_slow_consumer(
        self, make_server: ServerFactory
    ) -> None:
        served = await make_server(limits={"maxQueuedBytes": self.BUDGET})
        await served.publish("wf-1", *[reasoning("x" * 400) for _ in range(500)])
        replay = orjson.dumps(
            {"type": "replay", "streamId": "wf-1", "replayOptions": {"limit": 500}}
        ).decode()
        assert await self._flood(served, [replay] * 100) == 4008
        assert not len(served.hub.clients)

    async def test_pings_never_read_end_as_a_slow_consumer(
        self, make_server: ServerFactory
    ) -> None:
        # The byte budget alone: the rate limit would close this flood first (4029).
        served = await make_server(
            limits={"maxQueuedBytes": self.BUDGET}, security={"rateLimiting": {"enabled": False}}
        )
        await served.publish("wf-1", status(1))
        ping = orjson.dumps({"type": "ping", "requestId": "x" * 128}).decode()
        assert await self._flood(served, [ping] * 50_000) == 4008
        assert not len(served.hub.clients)

    async def test_a_subscriber_past_its_byte_budget_is_a_slow_consumer(
        self, make_hub: HubFactory
    ) -> None:
        """In the core too: live events and replays queued for a subscriber count against
        limits.maxQueuedBytes, not only their number against bufferSize."""
        hub = await make_hub(limits={"maxQueuedBytes": 1 << 20})
        await hub.create_stream("wf-1")
        live = await hub.open_subscription("wf-1")
        for _ in range(17):  # 17 events of 64 KiB: over 1 MiB, far under bufferSize
            await hub.publisher.publish_reasoning("wf-1", "x" * (64 << 10), 0.5, "p")
        assert live.close_reason is CloseReason.SLOW_CONSUMER
        client = hub.connect(ClientType.WEBSOCKET)
        replayed = await hub.open_subscription("wf-1", client=client)
        await hub.replay_to_client("wf-1", client.id)
        assert replayed.close_reason is CloseReason.SLOW_CONSUMER


class TestPollingClientsBetweenPolls:
    async def test_one_shot_polls_do_not_hold_the_stream_s_places(
        self, make_server: ServerFactory
    ) -> None:
        """100 polls with timeout=0 once held every place of maxClients for the idle
        timeout: a poller between polls gives its place to a new client."""
        served = await make_server(
            defaultStreamConfig={"maxClients": 5}, server={"maxConnections": 8}
        )
        await served.publish("wf-1", status(1))
        for _ in range(100):
            response = await served.http.get(
                "/api/streams/wf-1/poll", params={"timeout": 0, "since": 0}
            )
            assert response.status_code == 200, response.text
        async with peer(served, "?streamId=wf-1") as p:
            await p.expect("subscribed")

    async def test_an_evicted_poller_resumes_from_its_since(
        self, make_server: ServerFactory
    ) -> None:
        """A poller that lost its place polls again from its position and misses nothing."""
        served = await make_server(defaultStreamConfig={"maxClients": 1})
        await served.publish("wf-1", status(1))
        first = (await served.http.get("/api/streams/wf-1/poll", params={"timeout": 0})).json()
        async with peer(served, "?streamId=wf-1") as p:  # takes the poller's place
            await p.expect("subscribed")
        await served.publish("wf-1", status(2), status(3))
        again = await served.http.get(
            "/api/streams/wf-1/poll",
            params={"since": first["lastSeq"], "clientId": first["clientId"], "timeout": 0},
        )
        assert [e["seq"] for e in again.json()["events"]] == [2, 3]

    async def test_a_waiting_poll_keeps_its_place(self, make_server: ServerFactory) -> None:
        served = await make_server(defaultStreamConfig={"maxClients": 1})
        await served.publish("wf-1", status(1))
        waiting = asyncio.create_task(
            served.http.get("/api/streams/wf-1/poll", params={"since": 1, "timeout": 5})
        )

        def poll_waits() -> bool:
            """Whether the hub holds the poll, waiting for its subscription's events."""
            return any(
                sub.on_ready is not None
                for client in served.hub.clients
                if client.type is ClientType.HTTP_POLLING
                for sub in client.subscriptions.values()
            )

        assert await eventually(poll_waits), "the poll never waited"
        async with peer(served) as p:
            await p.send({"type": "subscribe", "streamId": "wf-1"})
            assert (await p.expect("error"))["error"]["code"] == "TOO_MANY_CLIENTS"
        await served.publish("wf-1", status(2))
        assert [e["seq"] for e in (await waiting).json()["events"]] == [2]


class TestBodies:
    @pytest.mark.parametrize(
        "content_type", ["text/plain", None, "application/x-www-form-urlencoded"]
    )
    async def test_publishing_needs_application_json(
        self, served: Served, content_type: str | None
    ) -> None:
        """A text/plain POST from another origin needs no CORS preflight, and was stored:
        publishing requires application/json (415), and nothing is stored."""
        await served.publish("wf-1", status(1))
        headers = {} if content_type is None else {"content-type": content_type}
        response = await served.http.post(
            "/api/streams/wf-1/events", content=orjson.dumps(status(2)), headers=headers
        )
        assert response.status_code == 415
        assert response.json()["error"]["code"] == "UNSUPPORTED_MEDIA_TYPE"
        response = await served.http.post(
            "/api/streams", content=b'{"workflowSessionId":"wf-2"}', headers=headers
        )
        assert response.status_code == 415
        assert await history_total(served) == 1 and await history_total(served, "wf-2") == 0
        ok = await served.http.post(
            "/api/streams/wf-1/events",
            content=orjson.dumps(status(3)),
            headers={"content-type": "Application/JSON; charset=utf-8"},
        )
        assert ok.status_code == 201

    @pytest.mark.parametrize(
        "number",
        [b"1267650600228229401496703205376", b"-9223372036854775809", b"18446744073709551616"],
    )
    async def test_numbers_that_cannot_come_back_exactly_are_refused(
        self, served: Served, number: bytes
    ) -> None:
        """2**100 was stored as a float; now it is a 422 naming the field."""
        await served.publish("wf-1", status(1))
        body = (
            b'{"type":"REASONING","data":{"thought":"t","confidence":0.5,"reasoningType":"p","context":{"n":%b}}}'
            % number
        )
        response = await served.http.post(
            "/api/streams/wf-1/events", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 422
        assert response.json()["error"]["details"]["errors"][0]["path"] == "data.context"
        metadata = b'{"workflowSessionId":"wf-2","metadata":{"n":%b}}' % number
        response = await served.http.post(
            "/api/streams", content=metadata, headers={"content-type": "application/json"}
        )
        assert response.status_code == 422
        assert await history_total(served) == 1

    async def test_the_largest_exact_integers_round_trip(self, served: Served) -> None:
        body = (
            b'{"type":"STATUS","data":{"statusType":"a","status":"b"},"metadata":'
            b'{"lo":-9223372036854775808,"hi":18446744073709551615,'
            b'"digits":"12345678901234567890123"}}'
        )
        response = await served.http.post(
            "/api/streams/wf-1/events", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 201
        [event] = (await served.http.get("/api/streams/wf-1/history")).json()["events"]
        assert event["metadata"] == {
            "lo": -(2**63),
            "hi": 2**64 - 1,
            "digits": "12345678901234567890123",
        }
        assert (
            b"18446744073709551615" in (await served.http.get("/api/streams/wf-1/history")).content
        )

    async def test_non_finite_numbers_are_refused_in_process_too(
        self, hub: ExecutorStreamer
    ) -> None:
        for bad in (float("nan"), float("inf"), 2**100):
            with pytest.raises(InvalidInput, match="context"):
                await hub.publisher.publish_reasoning("wf-1", "t", 0.5, "p", context={"x": [bad]})
            with pytest.raises(InvalidInput, match="metadata"):
                await hub.publisher.publish_status("wf-1", "a", "b", metadata={"x": bad})
            with pytest.raises(InvalidInput, match="metadata"):
                await hub.create_stream("wf-2", metadata={"x": bad})
        assert hub.get_stream("wf-1") is None or hub.get_stream("wf-1").last_seq == 0  # type: ignore[union-attr]


class TestStreamConfigBounds:
    @pytest.mark.parametrize(
        ("config", "key"),
        [
            ({"maxHistorySize": 10_000_000}, "config.maxHistorySize"),
            ({"bufferSize": 1_000_000}, "config.bufferSize"),
            ({"maxClients": 1_000_000}, "config.maxClients"),
        ],
    )
    async def test_per_stream_config_is_bounded_by_the_hub_s_limits(
        self, served: Served, config: dict[str, int], key: str
    ) -> None:
        response = await served.http.post(
            "/api/streams", json={"workflowSessionId": "wf-big", "config": config}
        )
        assert response.status_code == 422
        assert response.json()["error"]["details"]["errors"][0]["path"] == key
        assert (await served.http.get("/api/streams/wf-big")).status_code == 404


class TestIdentifiers:
    @pytest.mark.parametrize("command_id", ["a\u0000b", "line\nbreak", "tab\there", "\u007f"])
    async def test_control_characters_in_ids_are_refused(
        self, served: Served, command_id: str
    ) -> None:
        """Ids end up in logs, URLs and headers: NUL and other control characters are a
        422 and nothing is stored (lone surrogates are refused by the JSON parser)."""
        await served.publish("wf-1", status(1))
        event = {"type": "COMMAND_STARTED", "data": {"commandName": "c", "action": "CLICK"}}
        event["data"]["commandId"] = command_id  # type: ignore[index]
        response = await served.http.post("/api/streams/wf-1/events", json=event)
        assert response.status_code == 422
        assert response.json()["error"]["details"]["errors"][0]["path"] == "data.commandId"
        surrogate = b'{"type":"STATUS","data":{"statusType":"a","status":"\\ud800"}}'
        response = await served.http.post(
            "/api/streams/wf-1/events",
            content=surrogate,
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 422
        assert await history_total(served) == 1


async def test_a_deep_body_with_a_long_number_is_a_422(served: Served) -> None:
    """A body orjson reads (up to 1024 levels) that also holds a long number goes through
    the standard parser, whose recursion stops sooner: a 422, not a 500."""
    depth = 1000
    body = (
        b'{"type":"STATUS","data":{"statusType":"a","status":"b"},'
        b'"metadata":{"n":12345678901234567890,"x":' + b"[" * depth + b"]" * depth + b"}}"
    )
    response = await served.http.post(
        "/api/streams/wf-1/events", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
