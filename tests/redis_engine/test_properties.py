"""The resume guarantee across two hubs on one Redis, under random interleavings.

The single-process property (tests/core/test_properties.py) with the work spread over two
hubs: hypothesis picks which hub each publish and each subscribe goes to, and how they
interleave, and when the hubs lose their pub/sub connections; every subscriber, on either
hub, must get exactly the matching events after its resume point, once each, in seq order.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from executor_streamer import ExecutorStreamer, ExecutorStreamerConfig, StreamEvent
from executor_streamer.core.subscription import Subscription

from ..core.test_properties import TYPES, event_input, expected_delivery
from ..redis_server import RedisCluster, RedisServer


@dataclass
class Publish:
    hub: int
    types: list[str]


@dataclass
class Subscribe:
    hub: int
    since: int | None
    types: list[str] | None


@dataclass
class Pause:
    seconds: float


@dataclass
class CutPubSub:
    """``CLIENT KILL TYPE pubsub``: every hub loses its pub/sub connections at once."""


operation = st.one_of(
    st.builds(Publish, st.integers(0, 1), st.lists(st.sampled_from(TYPES), min_size=1, max_size=4)),
    st.builds(
        Subscribe,
        st.integers(0, 1),
        st.one_of(st.none(), st.integers(0, 30)),
        st.one_of(st.none(), st.lists(st.sampled_from(TYPES), min_size=1, max_size=2, unique=True)),
    ),
    st.builds(Pause, st.sampled_from([0.0, 0.0, 0.001, 0.005])),
    st.just(CutPubSub()),
)


async def run_program(
    url: str, program: list[Publish | Subscribe | Pause | CutPubSub], servers: list[str]
) -> tuple[list[StreamEvent], list[tuple[Subscribe, Subscription, list[int]]]]:
    config = ExecutorStreamerConfig().with_overrides(
        {
            "persistence": {"storageBackend": "redis", "connectionString": url},
            "defaultStreamConfig": {"bufferSize": 100_000},
            "limits": {"maxBufferSize": 100_000},
        }
    )
    hubs = [ExecutorStreamer(config), ExecutorStreamer(config)]
    controls = [Redis.from_url(server) for server in servers]
    for hub in hubs:
        await hub.start()
    try:
        await hubs[0].create_stream("wf-1")
        tasks: list[asyncio.Task[object]] = []
        subs: list[tuple[Subscribe, asyncio.Task[Subscription]]] = []
        for step, op in enumerate(program):
            if isinstance(op, Publish):
                batch = [event_input(kind, step) for kind in op.types]
                publish = hubs[op.hub].publisher.publish_batch("wf-1", batch)
                tasks.append(asyncio.create_task(publish))
            elif isinstance(op, Subscribe):
                filters = None if op.types is None else [{"eventTypes": op.types}]
                opened = hubs[op.hub].open_subscription("wf-1", filters=filters, since=op.since)
                subs.append((op, asyncio.create_task(opened)))
            elif isinstance(op, CutPubSub):
                for control in controls:
                    await control.client_kill_filter(_type="pubsub")
            else:
                await asyncio.sleep(op.seconds)  # a pause hypothesis chose, between steps
        await asyncio.gather(*tasks, *(t for _, t in subs))
        published = await hubs[1].history.get_all_events("wf-1")
        # Closing ends every subscription on both hubs once it has every stored event.
        await hubs[0].destroy_stream("wf-1")
        results = []
        for op, task in subs:
            sub = task.result()
            got = await _drained(sub)
            results.append((op, sub, got))
        return published, results
    finally:
        for hub in hubs:
            await hub.stop()
        for control in controls:
            await control.aclose()


async def _drained(sub: Subscription) -> list[int]:
    """Every seq ``sub`` yields until it ends (the stream was closed)."""
    seqs: list[int] = []

    async def consume() -> None:
        async for event in sub:
            seqs.append(event.seq)

    await asyncio.wait_for(consume(), 20)
    return seqs


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(program=st.lists(operation, max_size=20))
def test_resume_across_two_hubs_has_no_gap_and_no_duplicate(
    shared_redis: RedisServer, program: list[Publish | Subscribe | Pause | CutPubSub]
) -> None:
    shared_redis.command("FLUSHALL")
    check(asyncio.run(run_program(shared_redis.url, program, [shared_redis.url])))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(program=st.lists(operation, max_size=20))
def test_resume_across_two_hubs_on_a_cluster_has_no_gap_and_no_duplicate(
    shared_cluster: RedisCluster, program: list[Publish | Subscribe | Pause | CutPubSub]
) -> None:
    """The same on a three-primary Redis Cluster; a cut drops the pub/sub connections
    of every node."""
    shared_cluster.flush()
    servers = [node.url for node in shared_cluster.nodes]
    check(asyncio.run(run_program(shared_cluster.url, program, servers)))


def check(
    outcome: tuple[list[StreamEvent], list[tuple[Subscribe, Subscription, list[int]]]],
) -> None:
    published, results = outcome
    assert [e.seq for e in published] == list(range(1, len(published) + 1))
    for op, sub, got in results:
        expected = expected_delivery(published, op.since, op.types, sub)
        assert (got, sub.recovered) == expected, (op, sub.last_seq)
