"""HTTP long polling (docs/protocol.md)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ..live_server import Served, ServerFactory, reasoning, status
from ..waiting import eventually, eventually_async


async def poll(served: Served, query: str) -> dict[str, Any]:
    response = await served.http.get(f"/api/streams/wf-1/poll?{query}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


class TestPolling:
    async def test_first_poll_registers_a_client(self, served: Served) -> None:
        """The first poll returns waiting events at once and a clientId to poll with."""
        await served.publish("wf-1", status(1), status(2))
        body = await poll(served, "since=0&timeout=5")
        assert [e["seq"] for e in body["events"]] == [1, 2]
        assert body["clientId"].startswith("cli_") and body["lastSeq"] == 2
        assert (body["recovered"], body["more"], body["closed"]) == (True, False, False)
        [client] = (await served.http.get("/api/streams/wf-1/clients")).json()
        assert client == {**client, "id": body["clientId"], "type": "HTTP_POLLING"}

    async def test_waits_for_the_next_event(self, served: Served) -> None:
        """A poll with nothing new waits and returns as soon as an event is published."""
        await served.publish("wf-1", status(1))
        first = await poll(served, "since=0")
        waiting = asyncio.create_task(
            poll(served, f"since={first['lastSeq']}&clientId={first['clientId']}&timeout=10")
        )
        client = served.hub.clients.get(first["clientId"])
        # The hub has the poll, waiting for its subscription to have something.
        assert await eventually(
            lambda: any(sub.on_ready is not None for sub in client.subscriptions.values())
        ), "the poll never waited"
        assert not waiting.done()
        await served.publish("wf-1", status(2))
        body = await asyncio.wait_for(waiting, 5)
        assert [e["seq"] for e in body["events"]] == [2]
        assert body["clientId"] == first["clientId"]

    async def test_a_client_polling_back_to_back_is_paced(
        self, served: Served, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Polling again at once while events keep coming: the answer waits until
        POLL_INTERVAL after the previous one and carries what arrived meanwhile."""
        from executor_streamer.server import polling

        # A second, rather than the 50 ms the hub uses: status(3) must be published
        # within the interval, which on a loaded machine takes longer than 50 ms.
        interval = 1.0
        monkeypatch.setattr(polling, "POLL_INTERVAL", interval)
        await served.publish("wf-1", status(1))
        first = await poll(served, "since=0")
        await served.publish("wf-1", status(2))
        loop = asyncio.get_running_loop()
        started = loop.time()
        again = asyncio.create_task(
            poll(served, f"since={first['lastSeq']}&clientId={first['clientId']}")
        )
        client = served.hub.clients.get(first["clientId"])
        assert await eventually(lambda: client.polls_in_progress), "the hub never got the poll"
        await served.publish("wf-1", status(3))
        body = await again
        assert loop.time() - started >= interval * 0.8
        assert [e["seq"] for e in body["events"]] == [2, 3]

    async def test_timeout_returns_empty(self, served: Served) -> None:
        """With nothing to say before the timeout, the poll returns no events."""
        await served.publish("wf-1", status(1))
        body = await poll(served, "since=1&timeout=0.2")
        assert body["events"] == [] and body["lastSeq"] == 1

    async def test_last_seq_passes_events_the_filter_hid(self, served: Served) -> None:
        """lastSeq is the newest seq considered, even when filters hid it."""
        await served.publish("wf-1", reasoning(), status(1), status(2))
        body = await poll(served, "since=0&types=REASONING&timeout=0")
        assert [e["seq"] for e in body["events"]] == [1] and body["lastSeq"] == 3
        again = await poll(served, f"since=3&types=REASONING&timeout=0&clientId={body['clientId']}")
        assert again["events"] == [] and again["lastSeq"] == 3

    async def test_consecutive_polls_reuse_the_subscription(self, served: Served) -> None:
        """Polling on from lastSeq keeps one subscription, even under a stream's default
        filters, so events published between polls wait for the client."""
        await served.http.post(
            "/api/streams",
            json={
                "workflowSessionId": "wf-1",
                "config": {"eventFilters": [{"eventTypes": ["STATUS"]}]},
            },
        )
        first = await poll(served, "since=0&timeout=0")
        sub = served.hub.clients.get(first["clientId"]).subscriptions
        [before] = sub.values()
        await served.publish("wf-1", reasoning(), status(1))
        second = await poll(served, f"since={first['lastSeq']}&clientId={first['clientId']}")
        assert [e["seq"] for e in second["events"]] == [2] and second["lastSeq"] == 2
        assert list(sub.values()) == [before]

    async def test_more_when_over_a_thousand(self, make_server: ServerFactory) -> None:
        """At most 1000 events per response; more says others are waiting."""
        # 1200 events at once: more than the default 1000 events per second a stream takes.
        served = await make_server(security={"rateLimiting": {"maxEventsPerSecond": 5000}})
        for start in range(0, 1200, 400):
            await served.publish("wf-1", *[status(i) for i in range(start, start + 400)])
        first = await poll(served, "since=0&timeout=0")
        assert len(first["events"]) == 1000 and first["more"] is True and first["lastSeq"] == 1000
        rest = await poll(served, f"since=1000&timeout=0&clientId={first['clientId']}")
        assert [e["seq"] for e in rest["events"]] == list(range(1001, 1201))
        assert rest["more"] is False

    async def test_epoch(self, served: Served) -> None:
        """Answers say the epoch; a position from another epoch is a full replay, once."""
        await served.publish("wf-1", status(1), status(2))
        epoch = served.hub.streams.resolve("wf-1").epoch
        same = await poll(served, f"since=1&timeout=0&epoch={epoch}")
        assert same["epoch"] == epoch and same["recovered"] is True
        assert [e["seq"] for e in same["events"]] == [2]
        other = await poll(served, "since=1&timeout=0&epoch=old")
        assert other["recovered"] is False and other["epoch"] == epoch
        assert [e["seq"] for e in other["events"]] == [1, 2]
        # The client goes on with the epoch it was given: nothing again.
        query = f"since={other['lastSeq']}&timeout=0&epoch={epoch}&clientId={other['clientId']}"
        again = await poll(served, query)
        assert again["events"] == [] and again["recovered"] is True

    async def test_closed_stream(self, served: Served) -> None:
        """After the stream closes, a poll drains what is left and says closed."""
        await served.publish("wf-1", status(1))
        first = await poll(served, "since=0&timeout=0")
        await served.publish("wf-1", status(2))
        await served.http.delete("/api/streams/wf-1")
        body = await poll(served, f"since=1&clientId={first['clientId']}&timeout=5")
        assert [e["seq"] for e in body["events"]] == [2] and body["closed"] is True

    async def test_trimmed_history_is_not_recovered(self, make_server: ServerFactory) -> None:
        """A poll from before what history holds says recovered: false."""
        served = await make_server(default_stream_config={"max_history_size": 2})
        await served.publish("wf-1", *[status(i) for i in range(5)])
        body = await poll(served, "since=1&timeout=0")
        assert body["recovered"] is False and [e["seq"] for e in body["events"]] == [4, 5]

    async def test_replay_to_a_polling_client_is_refused(self, served: Served) -> None:
        """Polling clients read history instead: replay to one is 409."""
        await served.publish("wf-1", status(1))
        body = await poll(served, "since=0&timeout=0")
        response = await served.http.post(f"/api/streams/wf-1/replay/{body['clientId']}", json={})
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "REPLAY_NOT_ALLOWED"

    async def test_idle_polling_client_is_removed(self, make_server: ServerFactory) -> None:
        """A polling client that does not poll again within the idle timeout is removed."""
        served = await make_server(server={"idleClientTimeout": 1000})
        await served.publish("wf-1", status(1))
        await poll(served, "since=0&timeout=0")

        async def removed() -> bool:
            clients: list[Any] = (await served.http.get("/api/streams/wf-1/clients")).json()
            return clients == []

        assert await eventually_async(removed), "the idle client was not removed"
        assert (await served.http.get("/api/streams/wf-1/clients")).json() == []

    async def test_bad_queries(self, served: Served) -> None:
        """Invalid since, timeout or types are 422."""
        await served.publish("wf-1", status(1))
        for query in ("since=-1", "timeout=61", "timeout=x", "types=NOPE"):
            response = await served.http.get(f"/api/streams/wf-1/poll?{query}")
            assert response.status_code == 422, query

    async def test_polling_while_publishing_at_full_rate(self, served: Served) -> None:
        """Following lastSeq from poll to poll during a burst yields every event once."""
        await served.http.post("/api/streams", json={"workflowSessionId": "wf-1"})
        total = 800

        async def burst() -> None:
            for start in range(0, total, 25):
                await served.publish("wf-1", *[status(i) for i in range(start, start + 25)])

        publisher = asyncio.create_task(burst())
        seen: list[int] = []
        since, client_id = 0, ""
        while len(seen) < total:
            body = await poll(served, f"since={since}&timeout=5&clientId={client_id}")
            seen += [e["seq"] for e in body["events"]]
            since, client_id = body["lastSeq"], body["clientId"]
        await publisher
        assert seen == list(range(1, total + 1))
