"""Several hubs on one Redis (docs/multi-node.md), served on loopback ports and watched by
real WebSocket and HTTP clients. Redis is a redis-server these tests start, and the tests
that take ``engine_url`` run again on a three-primary Redis Cluster they start; the ones
that kill or restart Redis start their own."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import websockets

from executor_streamer.errors import IdempotencyKeyReused
from executor_streamer.history.shared import Published
from executor_streamer.redis_engine.store import RedisHistory
from executor_streamer.security import Scope, mint_token

from ..live_server import Served, ServerFactory, sse_stream, status
from ..redis_server import running_redis
from ..waiting import clear_of_a_minute_edge, eventually, eventually_async

NO_LIMITS = {"rateLimiting": {"enabled": False}}


@pytest.fixture(params=["redis", "cluster"])
def engine_url(request: pytest.FixtureRequest) -> str:
    """One Redis server, or a Redis Cluster; emptied for the test."""
    return str(request.getfixturevalue("redis_url" if request.param == "redis" else "cluster_url"))


def redis_config(url: str, **stream: Any) -> dict[str, Any]:
    return {
        "persistence": {"storageBackend": "redis", "connectionString": url},
        "security": NO_LIMITS,
        "defaultStreamConfig": {"bufferSize": 10_000, **stream},
        "limits": {"maxBufferSize": 10_000},
    }


async def hubs(make_server: ServerFactory, url: str, count: int, **stream: Any) -> list[Served]:
    return [await make_server(**redis_config(url, **stream)) for _ in range(count)]


class Watcher:
    """A WebSocket subscriber that records every event's seq and payload."""

    def __init__(self, served: Served, stream: str, since: int | None = 0, **extra: Any):
        self.served, self.stream, self.since, self.extra = served, stream, since, extra
        self.events: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.subscribed: dict[str, Any] = {}
        self.closed: websockets.ConnectionClosed | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def start(self) -> Watcher:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._ready.wait(), 10)
        return self

    async def _run(self) -> None:
        async with websockets.connect(self.served.ws_url, max_size=None) as ws:
            await ws.recv()  # connection_ack
            message: dict[str, Any] = {"type": "subscribe", "streamId": self.stream, **self.extra}
            if self.since is not None:
                message["since"] = self.since
            await ws.send(orjson.dumps(message).decode())
            try:
                async for raw in ws:
                    frame = orjson.loads(raw)
                    if frame["type"] == "subscribed":
                        self.subscribed = frame["metadata"]
                        self._ready.set()
                    elif frame["type"] == "event":
                        self.events.append(frame["event"])
                    elif frame["type"] == "error":
                        self.errors.append(frame["error"]["code"])
            except websockets.ConnectionClosed as exc:
                self.closed = exc
            self._ready.set()

    @property
    def seqs(self) -> list[int]:
        return [e["seq"] for e in self.events]

    async def until(self, count: int, seconds: float = 20) -> list[int]:
        arrived = await eventually(lambda: len(self.events) >= count, seconds)
        assert arrived, f"got {len(self.events)} of {count} events: {self.seqs}"
        return self.seqs

    async def ended_with(self, code: str) -> None:
        """Wait for the subscription's error frame, which must be ``code`` (and is taken
        off ``errors``)."""
        await eventually(lambda: self.errors, 2)
        assert self.errors == [code]
        self.errors.clear()

    async def stop(self) -> None:
        """Stop watching; any error frame not taken off ``errors`` fails the test."""
        assert not self.errors, self.errors
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


@contextlib.asynccontextmanager
async def watching(*watchers: Watcher) -> AsyncIterator[list[Watcher]]:
    started = [await w.start() for w in watchers]
    try:
        yield started
    finally:
        for watcher in started:
            await watcher.stop()


async def publish(served: Served, stream: str, *events: dict[str, Any], **headers: str) -> Any:
    body: Any = events[0] if len(events) == 1 else {"events": list(events)}
    response = await served.http.post(f"/api/streams/{stream}/events", json=body, headers=headers)
    return response


async def test_three_hubs_publishing_at_once_make_one_sequence(
    make_server: ServerFactory, engine_url: str
) -> None:
    """Publishers on every hub at once: seqs are exactly 1..N, and every subscriber on
    every hub receives the identical sequence, payloads included."""
    a, b, c = await hubs(make_server, engine_url, 3)
    assert (await publish(a, "wf-1", status("first"))).status_code == 201
    watchers = [Watcher(hub, "wf-1", since=0) for hub in (a, b, c) for _ in range(2)]
    async with watching(*watchers):

        async def producer(hub: Served, name: str) -> None:
            for i in range(25):
                events = [status(f"{name}{i}.{k}") for k in range(random.randint(1, 3))]
                assert (await publish(hub, "wf-1", *events)).status_code == 201

        await asyncio.gather(producer(a, "a"), producer(b, "b"), producer(c, "c"))
        total = (await a.http.get("/api/streams/wf-1")).json()["lastSeq"]
        history = (await c.http.get("/api/streams/wf-1/history?limit=10000")).json()
        assert [e["seq"] for e in history["events"]] == list(range(1, total + 1))
        for watcher in watchers:
            assert await watcher.until(total) == list(range(1, total + 1))
            assert watcher.events == history["events"]
    assert total >= 76


async def test_resume_on_a_third_hub_while_two_publish(
    make_server: ServerFactory, engine_url: str
) -> None:
    """Subscribing with ``since`` on C while A and B publish, again and again: each
    subscriber gets exactly since+1 onwards, no gap, no duplicate."""
    a, b, c = await hubs(make_server, engine_url, 3)
    await publish(a, "wf-1", status(0))
    stop = asyncio.Event()

    async def producer(hub: Served) -> None:
        while not stop.is_set():
            assert (await publish(hub, "wf-1", status("x"), status("y"))).status_code == 201

    producers = [asyncio.create_task(producer(hub)) for hub in (a, b)]
    try:
        for _ in range(8):
            top = (await c.http.get("/api/streams/wf-1")).json()["lastSeq"]
            since = random.randint(max(0, top - 20), top)
            async with watching(Watcher(c, "wf-1", since=since)) as (watcher,):
                await watcher.until(30)
                got = watcher.seqs
                assert got == list(range(since + 1, since + 1 + len(got)))
                assert watcher.subscribed["recovered"] is True
    finally:
        stop.set()
        await asyncio.gather(*producers)


async def test_a_stream_made_on_one_hub_is_known_to_all_at_once(
    make_server: ServerFactory, engine_url: str
) -> None:
    """Create on A, use on B and C right away: the registry is cluster-wide."""
    a, b, c = await hubs(make_server, engine_url, 3)
    created = await a.http.post("/api/streams", json={"workflowSessionId": "wf-9"})
    assert created.status_code == 201, created.text
    stream_id = created.json()["streamId"]
    assert (await b.http.get(f"/api/streams/{stream_id}")).json()["streamId"] == stream_id
    assert (await c.http.get("/api/streams/wf-9/history")).status_code == 200
    assert (await publish(c, "wf-9", status(1))).json()["events"][0]["streamId"] == stream_id
    listed = await b.http.get("/api/streams")
    assert stream_id in [s["streamId"] for s in listed.json()]


async def test_concurrent_first_publishes_on_two_hubs_make_one_stream(
    make_server: ServerFactory, engine_url: str
) -> None:
    a, b = await hubs(make_server, engine_url, 2)
    answers = await asyncio.gather(
        *(publish(hub, "wf-new", status(i)) for i in range(5) for hub in (a, b))
    )
    assert all(r.status_code == 201 for r in answers), [r.text for r in answers]
    streams = {r.json()["events"][0]["streamId"] for r in answers}
    seqs = sorted(r.json()["events"][0]["seq"] for r in answers)
    assert len(streams) == 1 and seqs == list(range(1, 11))


async def test_closing_on_one_hub_ends_subscribers_on_the_others(
    make_server: ServerFactory, engine_url: str
) -> None:
    """Subscribers on B get every event published before the close on A, then
    STREAM_CLOSED; a publish on B afterwards is refused."""
    a, b = await hubs(make_server, engine_url, 2)
    await publish(a, "wf-1", status(0))
    async with watching(Watcher(b, "wf-1", since=0)) as (watcher,):
        for i in range(20):
            await publish(b if i % 2 else a, "wf-1", status(i))
        assert (await a.http.delete("/api/streams/wf-1")).status_code == 204
        await watcher.until(21)
        await watcher.ended_with("STREAM_CLOSED")
        assert watcher.seqs == list(range(1, 22))
    refused = await publish(b, "wf-1", status("late"))
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "STREAM_CLOSED"


async def test_purging_on_one_hub_forgets_the_stream_on_all(
    make_server: ServerFactory, engine_url: str
) -> None:
    """A purge on A ends B's subscribers and B forgets the stream; the next publish, on
    B, starts a new stream: new id, seq 1."""
    a, b = await hubs(make_server, engine_url, 2)
    first = (await publish(a, "wf-1", status(0))).json()["events"][0]
    async with watching(Watcher(b, "wf-1", since=0)) as (watcher,):
        await watcher.until(1)
        assert (await a.http.delete("/api/streams/wf-1", params={"purge": True})).status_code == 204
        await watcher.ended_with("STREAM_CLOSED")
    assert (await b.http.get(f"/api/streams/{first['streamId']}")).status_code == 404
    again = (await publish(b, "wf-1", status(1))).json()["events"][0]
    assert again["seq"] == 1 and again["streamId"] != first["streamId"]


async def test_a_retried_publish_with_its_idempotency_key_gets_one_seq(
    make_server: ServerFactory, engine_url: str
) -> None:
    """The publish ran but its reply was lost (the script ran in Redis, the producer saw
    a timeout): sent again with the same key, to any hub, it stores nothing new and
    answers with the events the first one stored."""
    a, b = await hubs(make_server, engine_url, 2)
    first = await publish(a, "wf-1", status(1), status(2), **{"Idempotency-Key": "batch-1"})
    assert first.status_code == 201
    again = await publish(b, "wf-1", status(1), status(2), **{"Idempotency-Key": "batch-1"})
    assert again.status_code == 201 and again.json() == first.json()
    other = await publish(b, "wf-1", status(3), **{"Idempotency-Key": "batch-2"})
    assert [e["seq"] for e in other.json()["events"]] == [3]
    history = (await a.http.get("/api/streams/wf-1/history")).json()
    assert history["total"] == 3
    bad = await publish(a, "wf-1", status(4), **{"Idempotency-Key": "has space"})
    assert bad.status_code == 422 and "Idempotency-Key" in bad.text


async def test_idempotency_key_on_a_single_process_backend(make_server: ServerFactory) -> None:
    """The same promise without Redis, for one hub."""
    served = await make_server(security=NO_LIMITS)
    first = await publish(served, "wf-1", status(1), **{"Idempotency-Key": "k"})
    again = await publish(served, "wf-1", status(1), **{"Idempotency-Key": "k"})
    assert again.json() == first.json()
    assert (await served.http.get("/api/streams/wf-1/history")).json()["total"] == 1


async def test_killed_pubsub_connections_lose_nothing(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    """``CLIENT KILL TYPE pubsub`` in the middle of a burst: the hubs reconnect, catch up
    from the Stream, and subscribers see no gap."""
    with running_redis(tmp_path) as redis:
        a, b = await hubs(make_server, redis.url, 2)
        await publish(a, "wf-1", status(0))
        async with watching(Watcher(b, "wf-1", since=0), Watcher(a, "wf-1", since=0)) as seen:
            for i in range(60):
                await publish(a, "wf-1", status(i))
                if i in (20, 40):
                    redis.command("CLIENT", "KILL", "TYPE", "pubsub")
            for watcher in seen:
                assert await watcher.until(61) == list(range(1, 62))
        assert sum(h.hub.storage.follower.reconnects for h in (a, b)) >= 2  # type: ignore[attr-defined]


async def test_a_lost_last_message_is_found_by_the_probe(
    make_server: ServerFactory, engine_url: str
) -> None:
    """An event stored without its pub/sub message (as if pub/sub dropped it) reaches
    subscribers anyway: the probe sees the top seq past their position."""
    (a,) = await hubs(make_server, engine_url, 1)
    await publish(a, "wf-1", status(0))
    async with watching(Watcher(a, "wf-1", since=0)) as (watcher,):
        await watcher.until(1)
        store: RedisHistory = a.hub.storage  # type: ignore[assignment]
        stream = a.hub.streams.resolve("wf-1")
        # The same script, with the stream's messages going to a channel nobody hears.
        parts = a.hub.publisher._shared._parts(  # type: ignore[union-attr]
            stream.id, "wf-1", _prepared(status(1)), stream.next_timestamp()
        )
        silent = _Silent(store)
        published = await silent.publish(stream.state(), parts)
        assert published.records[0].seq == 2
        assert await watcher.until(2, seconds=5) == [1, 2]


class _Silent:
    def __init__(self, store: RedisHistory) -> None:
        self.store = store

    async def publish(self, state: Any, parts: Any) -> Published:
        from executor_streamer.redis_engine import keys

        real = keys.keys_for
        keys_module: Any = __import__("executor_streamer.redis_engine.store", fromlist=["x"])

        def muted(stream_id: str) -> keys.StreamKeys:
            k = real(stream_id)
            # In the stream's slot still: a Cluster refuses a script crossing slots.
            return keys.StreamKeys(k.stream_id, k.meta, k.events, k.images, k.channel + "-nobody")

        keys_module.keys_for = muted
        try:
            return await self.store.publish(state, parts, "2000-01-01T00:00:00.000Z", None)
        finally:
            keys_module.keys_for = real


def _prepared(*events: dict[str, Any]) -> Any:
    from executor_streamer.config import LimitsConfig
    from executor_streamer.core.validation import prepare_batch

    return prepare_batch(list(events), LimitsConfig())


async def test_redis_away_refuses_publishes_and_keeps_live_clients(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    """While Redis is down: publishes answer 503 STORAGE_UNAVAILABLE, /readyz 503, and a
    live WebSocket client stays connected; once Redis is back it gets what follows."""
    with running_redis(tmp_path, appendonly=True) as redis:
        a, b = await hubs(make_server, redis.url, 2)
        await publish(a, "wf-1", status(0))
        async with watching(Watcher(b, "wf-1", since=0)) as (watcher,):
            await watcher.until(1)
            redis.kill()
            refused = await publish(a, "wf-1", status("lost"))
            assert refused.status_code == 503
            assert refused.json()["error"]["code"] == "STORAGE_UNAVAILABLE"
            assert (await a.http.get("/readyz")).status_code == 503

            async def watchers_hub_noticed() -> bool:
                return (await b.http.get("/readyz")).status_code == 503

            assert await eventually_async(watchers_hub_noticed), "hub b never saw Redis go"
            # The outage lasts on purpose: the client must stay through the follower's
            # failed reconnects and probes (every second), not only through the first.
            await asyncio.sleep(1.0)
            assert watcher.closed is None
            redis.start()

            async def ready_again() -> bool:
                return (await a.http.get("/readyz")).status_code == 200

            assert await eventually_async(ready_again), "the hub never saw Redis come back"
            for i in range(5):
                answer = await publish(a, "wf-1", status(i))
                assert answer.status_code == 201, answer.text
            assert await watcher.until(6) == list(range(1, 7))
            assert watcher.closed is None


async def test_redis_crash_with_appendfsync_always_loses_nothing_acknowledged(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    """Redis SIGKILLed mid-burst and restarted from its AOF: every event a publisher was
    told is stored is in history, and live subscribers get every one of them."""
    with running_redis(tmp_path, appendonly=True) as redis:
        a, b = await hubs(make_server, redis.url, 2)
        await publish(a, "wf-1", status(0))
        acknowledged = [1]
        fifty = asyncio.Event()
        async with watching(Watcher(b, "wf-1", since=0)) as (watcher,):

            async def producer() -> None:
                for i in range(300):
                    answer = await publish(a, "wf-1", status(i))
                    if answer.status_code == 201:
                        acknowledged.append(answer.json()["events"][0]["seq"])
                        if len(acknowledged) >= 50:
                            fifty.set()
                    else:
                        assert answer.status_code == 503
                        await asyncio.sleep(0.01)  # a client's pause before it sends again

            task = asyncio.create_task(producer())
            await asyncio.wait_for(fifty.wait(), 20)
            redis.kill()
            await asyncio.sleep(0.3)  # an outage of some length, with publishes refused
            redis.start()
            await task
            history = (await b.http.get("/api/streams/wf-1/history?limit=10000")).json()
            stored = [e["seq"] for e in history["events"]]
            assert set(acknowledged) <= set(stored)
            assert stored == list(range(1, len(stored) + 1))
            assert await watcher.until(len(stored)) == stored


async def test_redis_that_lost_its_data_starts_a_new_epoch(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    """Redis restarted without persistence: the next publish starts a new epoch at seq 1;
    a client resuming with the old epoch gets ``recovered: false`` and the new history."""
    with running_redis(tmp_path) as redis:
        a, b = await hubs(make_server, redis.url, 2)
        for i in range(5):
            await publish(a, "wf-1", status(i))
        old = (await b.http.get("/api/streams/wf-1")).json()
        redis.kill()
        redis.start()
        answer = await publish(a, "wf-1", status("after"))
        assert answer.status_code == 201, answer.text
        event = answer.json()["events"][0]
        assert event["seq"] == 1
        watcher = Watcher(b, "wf-1", since=old["lastSeq"], epoch=old["epoch"])
        async with watching(watcher):
            assert watcher.subscribed["recovered"] is False
            assert watcher.subscribed["epoch"] != old["epoch"]
            assert await watcher.until(1) == [1]
        poll = await b.http.get(
            "/api/streams/wf-1/poll", params={"since": old["lastSeq"], "epoch": old["epoch"]}
        )
        assert poll.json()["recovered"] is False and poll.json()["epoch"] != old["epoch"]


async def test_subscribers_of_a_stream_in_a_lost_epoch_are_told_to_resume(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    """A live subscriber on B when Redis lost its data: its positions mean nothing now,
    so it is closed (1012) to resume, rather than fed seq 1 after seq 5."""
    with running_redis(tmp_path) as redis:
        a, b = await hubs(make_server, redis.url, 2)
        for i in range(5):
            await publish(a, "wf-1", status(i))
        async with watching(Watcher(b, "wf-1", since=0)) as (watcher,):
            await watcher.until(5)
            redis.kill()
            redis.start()
            assert (await publish(a, "wf-1", status("new"))).status_code == 201
            await eventually(lambda: watcher.closed, 6)
            assert watcher.closed is not None and watcher.closed.rcvd is not None
            assert watcher.closed.rcvd.code == 1012
            assert watcher.seqs == [1, 2, 3, 4, 5]


async def test_an_sse_client_in_a_lost_epoch_is_told_to_resume(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    """The same over SSE: the response ends with ``error`` STREAM_RESET after the events
    of the old epoch, and resuming with ``?epoch=`` says ``recovered: false``."""
    with running_redis(tmp_path) as redis:
        a, b = await hubs(make_server, redis.url, 2)
        for i in range(3):
            await publish(a, "wf-1", status(i))
        old = (await b.http.get("/api/streams/wf-1")).json()
        async with sse_stream(b, "/api/streams/wf-1/events?since=0") as reader:
            assert (await reader.next()).event == "subscribed"
            seen = [(await reader.next()).json()["seq"] for _ in range(3)]
            redis.kill()
            redis.start()
            assert (await publish(a, "wf-1", status("new"))).status_code == 201
            message = await reader.next(10)
            while message.event == "heartbeat":
                message = await reader.next(10)
            assert message.event == "error" and message.json()["code"] == "STREAM_RESET"
        assert seen == [1, 2, 3]
        query = f"since=3&epoch={old['epoch']}"
        async with sse_stream(b, f"/api/streams/wf-1/events?{query}") as reader:
            opening = await reader.next()
            assert opening.event == "subscribed" and opening.json()["recovered"] is False
            assert opening.json()["epoch"] != old["epoch"]
            recovery = await reader.next()
            assert recovery.event == "recovery" and recovery.json()["recovered"] is False
            assert (await reader.next()).json()["seq"] == 1


async def test_history_and_screenshots_are_shared(
    make_server: ServerFactory, engine_url: str
) -> None:
    """A screenshot published on A is served by B; a stream's metrics count events from
    every hub."""
    from ..conftest import PNG

    a, b = await hubs(make_server, engine_url, 2)
    shot = {
        "type": "SCREENSHOT",
        "data": {"image": __import__("base64").b64encode(PNG).decode(), "mimeType": "image/png"},
    }
    stored = (await publish(a, "wf-1", shot)).json()["events"][0]
    image = await b.http.get(stored["data"]["url"])
    assert image.status_code == 200 and image.content == PNG
    await publish(b, "wf-1", status(1))
    await publish(a, "wf-1", status(2))
    async with httpx.AsyncClient(base_url=b.base_url) as http:
        page = (await http.get("/api/streams/wf-1/history", params={"types": "STATUS"})).json()
    assert [e["seq"] for e in page["events"]] == [2, 3]


SECRET = "multi-node-secret-" + "k" * 40


def secured_config(url: str, **limits: Any) -> dict[str, Any]:
    config = redis_config(url)
    config["security"] = {
        "authenticationRequired": True,
        "jwt": {"secret": SECRET},
        "rateLimiting": {"enabled": True, **limits} if limits else {"enabled": False},
    }
    return config


def bearer(sub: str = "alice", **scope: Any) -> dict[str, str]:
    granted = Scope(("*",), ("*",), scope.get("admin", False))
    return {"authorization": "Bearer " + mint_token(SECRET, sub, granted, 600)}


async def test_a_ticket_from_one_hub_opens_a_stream_on_another_once(
    make_server: ServerFactory, engine_url: str
) -> None:
    """Behind a load balancer the ticket request and the EventSource may reach different
    hubs: tickets live in Redis, and are still good for one use only."""
    a, b = [await make_server(**secured_config(engine_url)) for _ in range(2)]
    headers = bearer()
    assert (
        await a.http.post("/api/streams/wf-1/events", json=status(1), headers=headers)
    ).is_success
    ticket = (await a.http.post("/api/auth/tickets", headers=headers)).json()["ticket"]
    url = "/api/streams/wf-1/poll"
    assert (await b.http.get(url, params={"ticket": ticket, "since": 0})).status_code == 200
    assert (await a.http.get(url, params={"ticket": ticket, "since": 0})).status_code == 401


async def test_rate_limits_hold_across_hubs(make_server: ServerFactory, engine_url: str) -> None:
    """Requests per minute are counted in Redis: spreading them over two hubs does not
    double the allowance."""
    config = secured_config(engine_url, maxRequestsPerMinute=10)
    await clear_of_a_minute_edge()
    a, b = [await make_server(**config) for _ in range(2)]
    headers = bearer("carol")
    answers = [
        (await (a if i % 2 else b).http.get("/api/streams", headers=headers)).status_code
        for i in range(14)
    ]
    assert answers.count(200) == 10 and answers[-1] == 429
    other = await a.http.get("/api/streams", headers=bearer("dave"))
    assert other.status_code == 200


async def test_views_span_every_hub(make_server: ServerFactory, engine_url: str) -> None:
    """A stream's clients, its stats and the hub metrics count every hub's share; /metrics
    stays per hub, each sample labelled with its node."""
    a, b = await hubs(make_server, engine_url, 2)
    await publish(a, "wf-1", status(1))
    await publish(b, "wf-1", status(2), status(3))
    async with watching(Watcher(a, "wf-1"), Watcher(b, "wf-1"), Watcher(b, "wf-1")):
        for hub in (a, b):
            assert hub.hub.all_hubs is not None
            await hub.hub.all_hubs.publish_report()
        clients = (await a.http.get("/api/streams/wf-1/clients")).json()
        assert len(clients) == 3
        assert len((await b.http.get("/api/streams/wf-1")).json()["clients"]) == 3
        listed = (await b.http.get("/api/streams")).json()
        assert [len(session["clients"]) for session in listed] == [3]
        stats = (await a.http.get("/api/streams/wf-1/stats")).json()
        assert stats["clientCount"] == 3 and stats["totalEvents"] == 3
        assert stats["eventsInLastHour"] == 3
        metrics = (await b.http.get("/api/streams/metrics")).json()
        assert metrics["totalClients"] == 3
        assert metrics["clientsByType"]["WEBSOCKET"] == 3
        text = (await a.http.get("/metrics")).text
        node = a.hub.streams.shared.node  # type: ignore[union-attr]
        assert (
            f'executor_streamer_events_published_total{{node="{node}",type="STATUS"}} 1.0' in text
        )


async def test_connections_per_subject_are_counted_across_hubs(
    make_server: ServerFactory, engine_url: str
) -> None:
    """maxConnectionsPerSubject 2: one WebSocket on A and one on B are the subject's two;
    a third, on either hub, is refused (429); a closed one gives its place back."""
    config = secured_config(engine_url, maxConnectionsPerSubject=2)
    a, b = [await make_server(**config) for _ in range(2)]
    headers = bearer("erin")

    async def connect(hub: Served) -> websockets.ClientConnection:
        ws = await websockets.connect(hub.ws_url, additional_headers=headers)
        assert orjson.loads(await ws.recv())["type"] == "connection_ack"
        return ws

    first, second = await connect(a), await connect(b)
    for hub in (a, b):
        try:
            await connect(hub)
        except websockets.InvalidStatus as exc:
            assert exc.response.status_code == 429
        else:
            raise AssertionError("a third connection was let in")
    assert (
        await a.http.post("/api/streams/wf-x/events", json=status(1), headers=headers)
    ).is_success
    sse = await b.http.get("/api/streams/wf-x/events", headers=headers)
    assert sse.status_code == 429
    await second.close()
    opened: list[websockets.ClientConnection] = []

    async def place_came_back() -> bool:
        """The place comes back once the closed connection's slot is removed in Redis."""
        with contextlib.suppress(websockets.InvalidStatus):
            opened.append(await connect(a))
        return bool(opened)

    assert await eventually_async(place_came_back), "the closed connection's place never came back"
    third = opened[0]
    for ws in (first, third):
        await ws.close()


async def test_a_request_without_a_valid_credential_never_reaches_redis(
    make_server: ServerFactory, engine_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request without a valid credential is answered 401 before any lookup in the
    shared store, so its timing cannot tell whether a stream exists; with one, a stream
    another hub made is found."""
    a, b = [await make_server(**secured_config(engine_url)) for _ in range(2)]
    made = await a.http.post("/api/streams/wf-1/events", json=status(1), headers=bearer())
    assert made.status_code == 201, made.text
    registry = b.hub.streams.shared.registry  # type: ignore[union-attr]
    lookups: list[str] = []
    real = registry.lookup

    async def counted(ref: str) -> Any:
        lookups.append(ref)
        return await real(ref)

    monkeypatch.setattr(registry, "lookup", counted)
    for path in ("/api/streams/wf-1/history", "/api/streams/wf-1/events", "/api/streams/wf-1"):
        for headers in ({}, {"authorization": "Bearer not-a-token"}):
            assert (await b.http.get(path, headers=headers)).status_code == 401, path
    published = await b.http.post("/api/streams/wf-2/events", json=status(1))
    assert published.status_code == 401
    assert lookups == []
    found = await b.http.get("/api/streams/wf-1/history", headers=bearer())
    assert found.status_code == 200 and found.json()["total"] == 1


async def test_a_key_is_its_owner_s_and_names_one_publish(
    make_server: ServerFactory, engine_url: str
) -> None:
    """Keys kept in Redis follow the same rules as one hub's: per owner, and refused
    when sent again with other events (nothing stored)."""
    a, b = await hubs(make_server, engine_url, 2)
    one = {"type": "STATUS", "data": {"statusType": "n", "status": "one"}}
    two = {"type": "STATUS", "data": {"statusType": "n", "status": "two"}}
    first = await a.hub.publisher.publish_wire("wf-1", one, "k", owner="producer-a")
    other_owner = await b.hub.publisher.publish_wire("wf-1", one, "k", owner="producer-b")
    assert [r.seq for r in first + other_owner] == [1, 2]
    again = await b.hub.publisher.publish_wire("wf-1", one, "k", owner="producer-a")
    assert [r.seq for r in again] == [1]
    with pytest.raises(IdempotencyKeyReused):
        await b.hub.publisher.publish_wire("wf-1", two, "k", owner="producer-a")
    refused = await publish(a, "wf-1", status(1), **{"Idempotency-Key": "h"})
    assert refused.status_code == 201
    reused = await publish(b, "wf-1", status(2), **{"Idempotency-Key": "h"})
    assert reused.status_code == 422
    assert reused.json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"
    assert (await a.http.get("/api/streams/wf-1/history")).json()["total"] == 3
