"""Server-Sent Events (docs/protocol.md) with a real HTTP client parsing the stream."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import orjson
import pytest

from ..live_server import (
    Served,
    ServerFactory,
    SSEMessage,
    SSEReader,
    assert_freed,
    reasoning,
    sse_stream,
    status,
)
from ..waiting import eventually, eventually_async


async def until_listed(served: Served, stream: str = "wf-1") -> list[dict[str, Any]]:
    """The clients the hub lists for ``stream``, once it lists one: the test goes on when
    the hub holds the SSE client that just connected, not after a guessed delay."""
    clients: list[dict[str, Any]] = []

    async def listed() -> bool:
        nonlocal clients
        clients = (await served.http.get(f"/api/streams/{stream}/clients")).json()
        return bool(clients)

    assert await eventually_async(listed), f"the hub lists no client of {stream}"
    return clients


async def frames_of(sse: SSEReader, event: str, count: int) -> list[SSEMessage]:
    """The next ``count`` frames named ``event``, skipping any other (heartbeats)."""
    out: list[SSEMessage] = []
    while len(out) < count:
        message = await sse.next()
        if message.event == event:
            out.append(message)
    return out


def subscribed(served: Served, last_seq: int, recovered: bool = True) -> dict[str, Any]:
    """What `event: subscribed` says for wf-1 as the hub stands now."""
    stream = served.hub.streams.resolve("wf-1")
    return {
        "streamId": stream.id,
        "lastSeq": last_seq,
        "epoch": stream.epoch,
        "recovered": recovered,
    }


class TestFrames:
    async def test_frames_are_exactly_as_designed(self, served: Served) -> None:
        """retry first, then `event: subscribed`, then `event: stream_event`, `id: <seq>`,
        each with one JSON data line."""
        await served.publish("wf-1", status(1))
        async with sse_stream(served, "/api/streams/wf-1/events?since=0") as sse:
            assert sse.response.headers["content-type"].startswith("text/event-stream")
            assert sse.response.headers["cache-control"] == "no-cache"
            assert sse.response.headers["x-accel-buffering"] == "no"
            [message] = await sse.events(1)
            assert sse.retry == 3000
            assert message.id == "1" and message.json()["seq"] == 1
            opening = subscribed(served, 1)
            assert sse.raw == [
                ": executor-streamer",
                "retry: 3000",
                "",
                "event: subscribed",
                f"data: {orjson.dumps(opening).decode()}",
                "",
                "event: stream_event",
                "id: 1",
                f"data: {message.data}",
                "",
            ]

    async def test_subscribed_comes_first_with_the_epoch(self, served: Served) -> None:
        """Live-only or resuming, the first frame is `subscribed`: the stream's id, last
        seq and epoch, and `recovered`; it has no `id:`, so it moves no Last-Event-ID."""
        await served.publish("wf-1", status(1), status(2))
        for query in ("", "?since=0", "?since=2"):
            async with sse_stream(served, f"/api/streams/wf-1/events{query}") as sse:
                first = await sse.next()
                assert (first.event, first.id) == ("subscribed", None), query
                assert first.json() == subscribed(served, 2), query
                assert "id: " not in "".join(sse.raw), query

    async def test_newlines_in_values_cannot_inject_fields(self, served: Served) -> None:
        """A value holding newlines and SSE field names stays inside one data line."""
        await served.publish("wf-1", reasoning("a\n\nevent: error\ndata: {}\nid: 99"))
        async with sse_stream(served, "/api/streams/wf-1/events?since=0") as sse:
            [message] = await sse.events(1)
            assert message.id == "1"
            assert message.json()["data"]["thought"].startswith("a\n\nevent: error")

    async def test_heartbeat(self, make_server: ServerFactory) -> None:
        """A quiet stream sends heartbeat frames with the number of active clients."""
        served = await make_server(default_stream_config={"heartbeat_interval": 200})
        await served.http.post("/api/streams", json={"workflowSessionId": "wf-1"})
        async with sse_stream(served, "/api/streams/wf-1/events") as sse:
            assert (await sse.next()).event == "subscribed"
            message = await sse.next()
            assert message.event == "heartbeat"
            assert message.json()["active_clients"] == 1
            assert message.json()["timestamp"].endswith("Z")


class TestResume:
    async def test_live_only_and_since(self, served: Served) -> None:
        """Without since only new events arrive; with since, history after it first."""
        await served.publish("wf-1", status(1), status(2), status(3))
        async with sse_stream(served, "/api/streams/wf-1/events?since=1") as sse:
            assert [m.id for m in await sse.events(2)] == ["2", "3"]
        async with sse_stream(served, "/api/streams/wf-1/events") as sse:
            await until_listed(served)
            await served.publish("wf-1", status(4))
            assert [m.id for m in await sse.events(1)] == ["4"]

    async def test_last_event_id_wins_over_since(self, served: Served) -> None:
        """Given both, the Last-Event-ID header decides where to resume."""
        await served.publish("wf-1", *[status(i) for i in range(5)])
        async with sse_stream(
            served, "/api/streams/wf-1/events?since=0", headers={"Last-Event-ID": "3"}
        ) as sse:
            assert [m.id for m in await sse.events(2)] == ["4", "5"]

    async def test_types_filter(self, served: Served) -> None:
        """types= applies to history and live alike."""
        await served.publish("wf-1", status(1), reasoning(), status(2))
        async with sse_stream(served, "/api/streams/wf-1/events?since=0&types=REASONING") as sse:
            assert [m.id for m in await sse.events(1)] == ["2"]
            await served.publish("wf-1", status(3), reasoning())
            assert [m.id for m in await sse.events(1)] == ["5"]

    async def test_recovery_frame_when_history_was_trimmed(
        self, make_server: ServerFactory
    ) -> None:
        """A resume whose events were trimmed says `recovered: false` in `subscribed`,
        then `event: recovery` tells from which seq history still holds."""
        served = await make_server(default_stream_config={"max_history_size": 2})
        await served.publish("wf-1", *[status(i) for i in range(5)])
        async with sse_stream(served, "/api/streams/wf-1/events?since=1") as sse:
            opening = await sse.next()
            assert opening.event == "subscribed"
            assert opening.json() == subscribed(served, 5, recovered=False)
            first = await sse.next()
            assert first.event == "recovery"
            assert first.json()["recovered"] is False and first.json()["firstSeq"] == 4
            assert [m.id for m in await sse.events(2)] == ["4", "5"]

    async def test_reconnect_while_publishing_at_full_rate(self, served: Served) -> None:
        """Dropping and resuming with Last-Event-ID mid-burst loses and repeats nothing,
        as a browser's EventSource does it."""
        await served.http.post("/api/streams", json={"workflowSessionId": "wf-1"})
        total = 600

        async def burst() -> None:
            for start in range(0, total, 20):
                await served.publish("wf-1", *[status(i) for i in range(start, start + 20)])

        publisher = asyncio.create_task(burst())
        seen: list[int] = []
        last = "0"
        while len(seen) < total:
            async with sse_stream(
                served, "/api/streams/wf-1/events", headers={"Last-Event-ID": last}
            ) as sse:
                for message in await sse.events(min(97, total - len(seen)), seconds=10):
                    seen.append(int(message.data and message.json()["seq"]))
                last = str(seen[-1])
        await publisher
        assert seen == list(range(1, total + 1))

    async def test_resume_with_another_epoch(self, served: Served) -> None:
        """`?epoch=` from another life of the stream: recovered false, everything held."""
        await served.publish("wf-1", status(1), status(2))
        async with sse_stream(served, "/api/streams/wf-1/events?since=1&epoch=old") as reader:
            opening = await reader.next()
            assert opening.event == "subscribed"
            assert opening.json() == subscribed(served, 2, recovered=False)
            first = await reader.next()
            assert first.event == "recovery" and first.json()["recovered"] is False
            assert first.json()["epoch"] != "old"
            assert [int(m.json()["seq"]) for m in await reader.events(2)] == [1, 2]

    async def test_resume_with_the_current_epoch(self, served: Served) -> None:
        await served.publish("wf-1", status(1), status(2))
        epoch = served.hub.streams.resolve("wf-1").epoch
        path = f"/api/streams/wf-1/events?since=1&epoch={epoch}"
        async with sse_stream(served, path) as reader:
            opening = await reader.next()
            assert (opening.event, opening.json()) == ("subscribed", subscribed(served, 2))
            assert [int(m.json()["seq"]) for m in await reader.events(1)] == [2]


class TestEnding:
    async def test_stream_close_is_announced(self, served: Served) -> None:
        """Closing the stream sends `event: error` STREAM_CLOSED and ends the response."""
        await served.http.post("/api/streams", json={"workflowSessionId": "wf-1"})
        async with sse_stream(served, "/api/streams/wf-1/events") as sse:
            assert (await sse.next()).event == "subscribed"
            await until_listed(served)
            await served.http.delete("/api/streams/wf-1")
            message = await sse.next()
            assert message.event == "error" and message.json()["code"] == "STREAM_CLOSED"
            try:
                await sse.next()
            except EOFError:
                pass
            else:
                raise AssertionError("the response should have ended")

    async def test_client_listing_and_operator_disconnect(self, served: Served) -> None:
        """An SSE client is listed with its type and filters; DELETE disconnects it."""
        await served.http.post("/api/streams", json={"workflowSessionId": "wf-1"})
        async with sse_stream(served, "/api/streams/wf-1/events?types=STATUS") as sse:
            [client] = await until_listed(served)
            assert client["type"] == "SERVER_SENT_EVENTS" and client["isActive"] is True
            assert client["filters"] == [{"eventTypes": ["STATUS"]}]
            gone = await served.http.delete(f"/api/streams/wf-1/clients/{client['id']}")
            assert gone.status_code == 204
            [message] = await frames_of(sse, "error", 1)
            assert message.json()["code"] == "DISCONNECTED"
        assert (await served.http.get("/api/streams/wf-1/clients")).json() == []
        missing = await served.http.delete("/api/streams/wf-1/clients/cli_nope")
        assert missing.status_code == 404

    async def test_too_many_clients(self, make_server: ServerFactory) -> None:
        """Past maxClients an SSE request is refused with 503 TOO_MANY_CLIENTS."""
        served = await make_server(default_stream_config={"max_clients": 1})
        await served.http.post("/api/streams", json={"workflowSessionId": "wf-1"})
        async with sse_stream(served, "/api/streams/wf-1/events"):
            await until_listed(served)
            refused = await served.http.get("/api/streams/wf-1/events")
            assert refused.status_code == 503
            assert refused.json()["error"]["code"] == "TOO_MANY_CLIENTS"

    async def test_bad_resume_positions(self, served: Served) -> None:
        """A since or Last-Event-ID that is not a non-negative integer is 422."""
        await served.http.post("/api/streams", json={"workflowSessionId": "wf-1"})
        for path, headers in [
            ("/api/streams/wf-1/events?since=-1", {}),
            ("/api/streams/wf-1/events", {"Last-Event-ID": "abc"}),
            ("/api/streams/wf-1/events?types=NOPE", {}),
        ]:
            response = await served.http.get(path, headers=headers)
            assert response.status_code == 422, path


class TestReplayAndLimits:
    async def test_rest_replay_to_an_sse_client(self, served: Served) -> None:
        """POST /replay/{clientId} sends history to a live SSE client as `replay_event`
        frames with no `id:` (which would move Last-Event-ID back); the next live event
        is a `stream_event` with its `id:` as before."""
        await served.publish("wf-1", status(1), status(2), status(3))
        async with sse_stream(served, "/api/streams/wf-1/events") as sse:
            [client] = await until_listed(served)
            response = await served.http.post(
                f"/api/streams/wf-1/replay/{client['id']}", json={"afterSeq": 1}
            )
            assert response.status_code == 202 and response.json()["count"] == 2
            replayed = await frames_of(sse, "replay_event", 2)
            assert [(m.id, m.json()["seq"]) for m in replayed] == [(None, 2), (None, 3)]
            await served.publish("wf-1", status(4))
            [live] = await sse.events(1)
            assert (live.id, live.json()["seq"]) == ("4", 4)
            # On the wire: the replayed frames' lines, exactly, and the only id is the live one.
            start = sse.raw.index("event: replay_event")
            assert sse.raw[start : start + 6] == [
                "event: replay_event",
                f"data: {replayed[0].data}",
                "",
                "event: replay_event",
                f"data: {replayed[1].data}",
                "",
            ]
            assert [line for line in sse.raw if line.startswith("id:")] == ["id: 4"]
        bad = await served.http.post("/api/streams/wf-1/replay/cli_nope", json={})
        assert bad.status_code == 404 and bad.json()["error"]["code"] == "CLIENT_NOT_FOUND"

    async def test_a_replay_keeps_its_place_among_live_events(
        self, served: Served, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Live events queued before and after a replay go out in one write, in order:
        the live ones as `stream_event` with their `id:`, the replay between them as
        `replay_event` without."""
        from executor_streamer.server.sse import EventStreamResponse

        await served.publish("wf-1", status(1), status(2))
        async with sse_stream(served, "/api/streams/wf-1/events?since=0") as sse:
            assert [m.id for m in await sse.events(2)] == ["1", "2"]
            [client] = await until_listed(served)
            # Hold the flush pass so that what follows queues up for one write.
            held: list[EventStreamResponse] = []
            monkeypatch.setattr(EventStreamResponse, "flush", lambda self: held.append(self))
            await served.publish("wf-1", status(3))
            replay = await served.http.post(
                f"/api/streams/wf-1/replay/{client['id']}", json={"afterSeq": 1}
            )
            assert replay.status_code == 202
            await served.publish("wf-1", status(4))
            assert await eventually(lambda: held and held[0].sub.pending == 3), "not queued"
            monkeypatch.undo()
            held[0].flush()
            frames = [await sse.next() for _ in range(4)]
            assert [(m.event, m.id, m.json()["seq"]) for m in frames] == [
                ("stream_event", "3", 3),
                ("replay_event", None, 2),
                ("replay_event", None, 3),
                ("stream_event", "4", 4),
            ]

    async def test_global_connection_limit(self, make_server: ServerFactory) -> None:
        """Past server.maxConnections, SSE and long polling answer 503 TOO_MANY_CLIENTS."""
        served = await make_server(
            server={"max_connections": 1}, default_stream_config={"max_clients": 1}
        )
        await served.publish("wf-1", status(1))
        async with sse_stream(served, "/api/streams/wf-1/events"):
            await until_listed(served)
            for path in ("/api/streams/wf-1/events", "/api/streams/wf-1/poll?timeout=0"):
                refused = await served.http.get(path)
                assert refused.status_code == 503, path
                assert refused.json()["error"]["code"] == "TOO_MANY_CLIENTS"


class TestLifetime:
    async def test_an_ended_stream_is_freed_without_the_collector(self, served: Served) -> None:
        """With the cyclic collector off, an SSE response that ended leaves nothing
        behind (see the WebSocket test of the same name)."""
        from executor_streamer.server.sse import EventStreamResponse

        await served.publish("wf-1", status(0))
        gc.collect()
        gc.disable()
        try:
            for _ in range(3):
                async with sse_stream(served, "/api/streams/wf-1/events") as reader:
                    await served.publish("wf-1", status(1))
                    await reader.events(1)
            await assert_freed(served, EventStreamResponse)
        finally:
            gc.enable()
