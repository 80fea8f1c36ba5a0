"""The Redis engine on a Redis Cluster of three primaries the tests start
(docs/multi-node.md, "Redis Cluster").

A stream's keys and channel share one slot, so each stream lives on one primary and is
heard there: these tests spread streams over every primary, cut every node's pub/sub
connections, and move a watched stream's slot to another primary mid-burst. The tests of
``test_hubs.py`` that take ``engine_url``, the HistoryStore contract suite and the resume
property run on a Cluster too.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from executor_streamer.errors import StorageUnavailable
from executor_streamer.history.shared import IdempotencyKey
from executor_streamer.redis_engine.calls import call
from executor_streamer.redis_engine.keys import SESSIONS
from executor_streamer.redis_engine.store import RedisHistory

from ..live_server import Served, ServerFactory, status
from ..redis_server import RedisCluster, RedisServer, running_cluster
from ..waiting import eventually_async
from .test_follower import STATE, Recorder, parts
from .test_hubs import Watcher, hubs, publish, watching


def spread(cluster: RedisCluster, per_node: int) -> dict[str, RedisServer]:
    """Stream ids, ``per_node`` on each primary, with the primary each lives on."""
    found: dict[str, RedisServer] = {}
    counts = {node.port: 0 for node in cluster.nodes}
    for n in itertools.count():
        stream_id = f"str_c{n}"
        owner = cluster.owner(cluster.slot_of(stream_id))
        if counts[owner.port] < per_node:
            counts[owner.port] += 1
            found[stream_id] = owner
        if all(count == per_node for count in counts.values()):
            return found
    raise AssertionError("unreachable")


def address(node: RedisServer) -> str:
    return f"127.0.0.1:{node.port}"


@pytest.fixture
async def store(cluster_url: str) -> AsyncIterator[RedisHistory]:
    history = RedisHistory(cluster_url, probe_interval=60)
    await history.start()
    yield history
    await history.close()


async def follow_all(store: RedisHistory, stream_ids: list[str]) -> dict[str, Recorder]:
    targets = {}
    for stream_id in stream_ids:
        state = replace(STATE, stream_id=stream_id, workflow_session_id=stream_id)
        await store.registry.register(state)
        targets[stream_id] = Recorder()
        await store.follow(stream_id, targets[stream_id])
    return targets


async def publish_events(store: RedisHistory, stream_id: str, count: int, key: str = "k") -> None:
    """``count`` publishes, each sent again with its idempotency key while the Cluster
    refuses it (a slot in the middle of moving answers TRYAGAIN)."""
    state = replace(STATE, stream_id=stream_id, workflow_session_id=stream_id)
    loop = asyncio.get_running_loop()
    for n in range(count):
        deadline = loop.time() + 30  # a slot move under load can refuse for seconds
        while True:
            try:
                await store.publish(
                    state,
                    parts(n, stream_id, stream_id),
                    "2026-01-01T00:00:00.000Z",
                    IdempotencyKey(f"{key}{n}", "", "fingerprint"),
                )
                break
            except StorageUnavailable:
                if loop.time() > deadline:
                    raise AssertionError(f"publish {n} to {stream_id} never got through") from None
                await asyncio.sleep(0.02)  # a client's pause before it sends again


async def test_each_stream_is_heard_on_the_primary_that_owns_it(
    shared_cluster: RedisCluster, store: RedisHistory
) -> None:
    owners = spread(shared_cluster, 2)
    targets = await follow_all(store, list(owners))
    await asyncio.gather(*(publish_events(store, s, 30) for s in owners))
    for stream_id, target in targets.items():
        assert await target.until(30) == list(range(1, 31)), stream_id
        assert store.follower.server_of(stream_id) == address(owners[stream_id])
    assert store.follower.connections == 3


async def test_order_holds_while_every_node_drops_its_pubsub_connections(
    shared_cluster: RedisCluster, store: RedisHistory
) -> None:
    owners = spread(shared_cluster, 1)
    targets = await follow_all(store, list(owners))

    async def cutter() -> None:
        for _ in range(6):
            await asyncio.sleep(0.03)  # a cut every 30 ms, while the publishes run
            for node in shared_cluster.nodes:
                await asyncio.to_thread(node.command, "CLIENT", "KILL", "TYPE", "pubsub")

    await asyncio.gather(*(publish_events(store, s, 100) for s in owners), cutter())
    for target in targets.values():
        assert await target.until(100) == list(range(1, 101))
    assert store.follower.reconnects >= 3


async def test_a_watched_stream_whose_slot_moves_loses_nothing(tmp_path: Path) -> None:
    """The slot of a followed stream moves to another primary in the middle of a burst
    (IMPORTING/MIGRATING, MIGRATE, SETSLOT NODE, as a resharding does): publishes
    refused meanwhile are sent again, the old primary lets go of the channel, and the
    follower subscribes it on the new one and catches up: 1..N in order, once each."""
    with running_cluster(tmp_path) as cluster:
        history = RedisHistory(cluster.url, probe_interval=60)
        await history.start()
        try:
            stream_id = next(iter(spread(cluster, 1)))
            (target,) = (await follow_all(history, [stream_id])).values()
            slot = cluster.slot_of(stream_id)
            source = cluster.owner(slot)
            destination = next(node for node in cluster.nodes if node is not source)

            async def mover() -> None:
                await target.until(50)
                await asyncio.to_thread(cluster.migrate, slot, destination)

            await asyncio.gather(publish_events(history, stream_id, 300), mover())
            assert await target.until(300) == list(range(1, 301))
            assert cluster.owner(slot) is destination
            assert history.follower.server_of(stream_id) == address(destination)
            stored = await history.read_range(stream_id, 0, 1000, None)
            assert [r.seq for r in stored.records] == list(range(1, 301))
        finally:
            await history.close()


async def published(hub: Served, session: str, event: dict[str, Any], key: str) -> Any:
    """Publish, sent again with its Idempotency-Key while the hub answers 503 (a primary
    down, a Cluster electing a replica): the stored event."""
    deadline = asyncio.get_running_loop().time() + 30
    while asyncio.get_running_loop().time() < deadline:
        answer = await publish(hub, session, event, **{"Idempotency-Key": key})
        if answer.status_code == 201:
            return answer.json()["events"][0]
        assert answer.status_code == 503, answer.text
        await asyncio.sleep(0.025)  # a client's pause before it sends again
    raise AssertionError(f"publish {key} did not get through in 30 s")


async def test_three_hubs_on_a_cluster_deliver_every_stream_whole(
    make_server: ServerFactory, shared_cluster: RedisCluster, cluster_url: str
) -> None:
    """Streams on every primary, a publisher and a WebSocket subscriber per stream on
    every hub, every node's pub/sub cut midway: each subscriber gets its stream's 1..N,
    identical on every hub."""
    served = await hubs(make_server, cluster_url, 3)
    sessions: list[str] = []
    owners: set[int] = set()
    # Stream ids are random: six land on one primary once in ~240 runs, so more are made
    # (a few at most) until they span two.
    while len(sessions) < 6 or (len(owners) < 2 and len(sessions) < 30):
        session = f"wf-{len(sessions)}"
        assert (await publish(served[0], session, status("first"))).status_code == 201
        stream_id = (await served[0].http.get(f"/api/streams/{session}")).json()["streamId"]
        owners.add(shared_cluster.owner(shared_cluster.slot_of(stream_id)).port)
        sessions.append(session)
    assert len(owners) >= 2, f"{len(sessions)} streams all landed on one primary"
    watchers = [Watcher(hub, s, since=0) for hub in served for s in sessions]
    async with watching(*watchers):

        async def producer(n: int) -> None:
            for i in range(20):
                hub = served[(n + i) % 3]
                assert (await publish(hub, sessions[n], status(i))).status_code == 201
                if n == 0 and i == 10:
                    for node in shared_cluster.nodes:
                        await asyncio.to_thread(node.command, "CLIENT", "KILL", "TYPE", "pubsub")

        await asyncio.gather(*(producer(n) for n in range(len(sessions))))
        for watcher in watchers:
            assert await watcher.until(21) == list(range(1, 22))
        for session in sessions:
            seen = [w.events for w in watchers if w.stream == session]
            assert all(events == seen[0] for events in seen)


async def test_a_hub_with_an_old_slot_map_follows_a_moved_stream_where_it_is(
    tmp_path: Path,
) -> None:
    """A hub learned the slot map, then a stream's slot moved without it noticing: its
    subscribe goes to the old primary, which answers MOVED; the hub reads the map again
    and subscribes on the new primary."""
    with running_cluster(tmp_path) as cluster:
        history = RedisHistory(cluster.url, probe_interval=60)
        await history.start()
        try:
            stream_id = next(iter(spread(cluster, 1)))
            slot = cluster.slot_of(stream_id)
            destination = next(n for n in cluster.nodes if n is not cluster.owner(slot))
            await asyncio.to_thread(cluster.migrate, slot, destination)
            target = Recorder()
            await history.follow(stream_id, target)  # before anything else reaches the slot
            assert history.follower.server_of(stream_id) == address(destination)
            assert history.follower.reconnects >= 1  # the connection MOVED was read on
            state = replace(STATE, stream_id=stream_id, workflow_session_id=stream_id)
            await history.registry.register(state)
            await publish_events(history, stream_id, 20)
            assert await target.until(20) == list(range(1, 21))
        finally:
            await history.close()


async def test_hubs_carry_on_when_a_primary_fails_over(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    """The primary holding a watched stream is SIGKILLed (its replica holding everything
    it acknowledged); the Cluster promotes the replica. Publishes are refused (503) until
    then and sent again with their Idempotency-Key; the hubs find the stream on its new
    primary, and subscribers on both hubs get 1..N once each."""
    with running_cluster(tmp_path, replicas=1) as cluster:
        a, b = await hubs(make_server, cluster.url, 2)
        assert (await publish(a, "wf-1", status(0))).status_code == 201
        stream_id = (await a.http.get("/api/streams/wf-1")).json()["streamId"]
        primary = cluster.owner(cluster.slot_of(stream_id))
        replica = cluster.replica_of(primary)
        async with watching(Watcher(a, "wf-1", since=0), Watcher(b, "wf-1", since=0)) as seen:

            async def send(i: int) -> None:
                await published((a, b)[i % 2], "wf-1", status(i), f"event-{i}")

            for i in range(1, 30):
                await send(i)
            await asyncio.to_thread(cluster.wait_replicated, primary)
            primary.kill()
            for i in range(30, 60):
                await send(i)
            for watcher in seen:
                assert await watcher.until(60, seconds=30) == list(range(1, 61))
        assert cluster.owner(cluster.slot_of(stream_id)) is replica
        history = (await b.http.get("/api/streams/wf-1/history?limit=100")).json()
        assert [e["seq"] for e in history["events"]] == list(range(1, 61))


async def test_publishes_sent_together_survive_forgotten_scripts_on_every_primary(
    shared_cluster: RedisCluster, store: RedisHistory
) -> None:
    """Queued publishes go to each primary in one pipeline; after SCRIPT FLUSH on every
    node, the NOSCRIPT answers are sent again once the script is loaded there: every
    publish stored once, each stream 1..N."""
    owners = spread(shared_cluster, 1)
    targets = await follow_all(store, list(owners))
    for node in shared_cluster.nodes:
        node.command("SCRIPT", "FLUSH")
    await asyncio.gather(
        *(publish_events(store, s, 1, f"k{i}-") for s in owners for i in range(20))
    )
    for stream_id, target in targets.items():
        assert await target.until(20) == list(range(1, 21))
        stored = await store.read_range(stream_id, 0, 100, None)
        assert [r.seq for r in stored.records] == list(range(1, 21))


async def test_a_primary_restarted_without_its_data(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    """A primary of a Cluster without replicas comes back empty, and it held the
    registry. A stream that lived on it starts again in a new epoch at seq 1, as on one
    Redis. A stream on another primary carries on, and the hubs enter it in the registry
    again, so a hub started afterwards finds it by its workflow session rather than
    making a second stream for it."""
    with running_cluster(tmp_path) as cluster:
        a, b = await hubs(make_server, cluster.url, 2)
        emptied = cluster.owner(cluster.slot_of("es:sessions"))
        on: dict[bool, str] = {}
        for n in itertools.count():
            session = f"wf-{n}"
            for i in range(3):
                await publish(a, session, status(i))
            stream_id = (await a.http.get(f"/api/streams/{session}")).json()["streamId"]
            on.setdefault(cluster.owner(cluster.slot_of(stream_id)) is emptied, session)
            if len(on) == 2:
                break
        lost, kept = on[True], on[False]
        kept_id = (await a.http.get(f"/api/streams/{kept}")).json()["streamId"]
        old = (await b.http.get(f"/api/streams/{lost}")).json()
        emptied.kill()
        emptied.start()
        await asyncio.to_thread(cluster.wait_formed)
        assert (await published(a, kept, status("on"), "kept-1"))["seq"] == 4
        again = await published(b, lost, status("new"), "lost-1")
        assert again["seq"] == 1
        assert (await b.http.get(f"/api/streams/{lost}")).json()["epoch"] != old["epoch"]
        c = (await hubs(make_server, cluster.url, 1))[0]

        async def c_knows_kept() -> bool:  # the hubs' registry sync runs every 5 s
            return (await c.http.get(f"/api/streams/{kept}")).status_code == 200

        assert await eventually_async(c_knows_kept), "hub c never learned of the kept stream"
        answer = await c.http.get(f"/api/streams/{kept}")
        assert answer.json()["streamId"] == kept_id, answer.text
        assert (await published(c, kept, status("from c"), "kept-2"))["seq"] == 5


async def test_the_registry_is_restored_only_for_streams_that_still_exist(
    store: RedisHistory,
) -> None:
    kept = replace(STATE, stream_id="str_kept", workflow_session_id="wf-kept")
    purged = replace(STATE, stream_id="str_purged", workflow_session_id="wf-purged")
    for state in (kept, purged):
        await store.registry.register(state)
    await call(store._redis.hdel(SESSIONS, "wf-kept"))  # the registry lost it
    await store.drop_stream("str_purged")  # purged by another hub
    await store.registry.restore_registry([("str_kept", "wf-kept"), ("str_purged", "wf-purged")])
    found = await store.registry.lookup("wf-kept")
    assert found is not None and found.stream_id == "str_kept"
    assert await store.registry.lookup("wf-purged") is None
    assert await call(store._redis.hget(SESSIONS, "wf-purged")) is None
