"""The channel follower on its own, against a real redis-server: what it hands a followed
stream's target, in which order, when pub/sub loses messages or its connection.

The probe is slowed to once a minute here, so what is tested is the path under test, not
the probe healing it afterwards."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from executor_streamer.core.shared_publish import split_payload
from executor_streamer.history.base import StreamState
from executor_streamer.history.records import EventRecord
from executor_streamer.history.shared import EventParts
from executor_streamer.redis_engine import connection_caps as caps_module
from executor_streamer.redis_engine import publisher as publisher_module
from executor_streamer.redis_engine.keys import StreamKeys, keys_for
from executor_streamer.redis_engine.store import RedisHistory
from executor_streamer.types import StreamEvent, StreamEventType
from executor_streamer.types.events import StatusData

from ..redis_server import RedisServer, running_redis
from ..waiting import eventually, eventually_async
from .silent_proxy import SilentProxy

NOW = datetime(2026, 1, 1, tzinfo=UTC)
CONFIG = {"max_history_size": 10_000}
STATE = StreamState("str_f", "wf-f", "ACTIVE", CONFIG, {}, "e0", NOW, NOW, 0, {})


class Recorder:
    """A FollowTarget that keeps what it is handed."""

    def __init__(self) -> None:
        self.epoch = "e0"
        self.last_seq = 0
        self.idle = False
        self.seqs: list[int] = []
        self.resets: list[tuple[str, int]] = []

    def receive(self, records: list[EventRecord]) -> None:
        assert records[0].seq == self.last_seq + 1, (self.last_seq, [r.seq for r in records])
        self.seqs += [r.seq for r in records]
        self.last_seq = records[-1].seq

    def reset(self, epoch: str, last_seq: int) -> None:
        self.resets.append((epoch, last_seq))
        self.epoch, self.last_seq = epoch, last_seq

    async def until(self, count: int) -> list[int]:
        await eventually(lambda: len(self.seqs) >= count, 30)
        return self.seqs


def parts(n: int, stream_id: str = "str_f", session_id: str = "wf-f") -> list[EventParts]:
    event = StreamEvent.trusted(
        id=f"evt_{n}",
        stream_id=stream_id,
        session_id=session_id,
        seq=0,  # numbered by the publish script
        type=StreamEventType.STATUS,
        timestamp=NOW,
        data=StatusData(status_type="n", status=str(n)),
        metadata=None,
    )
    head, mid, tail = split_payload(EventRecord.of(event).payload)
    return [EventParts(StreamEventType.STATUS, head, mid, tail)]


@pytest.fixture
async def store(shared_redis: RedisServer, redis_url: str) -> AsyncIterator[RedisHistory]:
    history = RedisHistory(redis_url, probe_interval=60)
    await history.start()
    await history.registry.register(STATE)
    yield history
    await history.close()


async def publish(store: RedisHistory, n: int) -> None:
    await store.publish(STATE, parts(n), "2026-01-01T00:00:00.000Z", None)


async def test_a_message_pubsub_lost_is_filled_from_the_stream(
    store: RedisHistory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seqs 2 and 3 are stored but their messages go nowhere; when 4's message comes,
    the follower reads 2 and 3 back first: the target gets 1, 2, 3, 4 in order."""
    target = Recorder()
    await store.follow("str_f", target)
    await publish(store, 1)
    assert await target.until(1) == [1]
    real = keys_for

    def muted(stream_id: str) -> StreamKeys:
        keys = real(stream_id)
        return StreamKeys(keys.stream_id, keys.meta, keys.events, keys.images, "es:nowhere")

    monkeypatch.setattr(publisher_module, "keys_for", muted)
    await publish(store, 2)
    await publish(store, 3)
    monkeypatch.setattr(publisher_module, "keys_for", real)
    # A message on another stream, heard on the same connection after 2 and 3 were
    # published: once it is here, so would theirs be, had they been sent anywhere.
    other = replace(STATE, stream_id="str_o", workflow_session_id="wf-o")
    await store.registry.register(other)
    marker = Recorder()
    await store.follow("str_o", marker)
    await store.publish(other, parts(1, "str_o", "wf-o"), "2026-01-01T00:00:00.000Z", None)
    assert await marker.until(1) == [1]
    assert target.seqs == [1]
    await publish(store, 4)
    assert await target.until(4) == [1, 2, 3, 4]
    assert store.follower.gaps_filled >= 1


async def test_events_trimmed_before_they_were_handed_over_reset_the_position(
    store: RedisHistory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seqs 2-6 never reach this hub and history keeps only 3 events: once 7 is stored,
    2 to 4 are gone. The target is reset past the loss (its subscribers resume and learn
    recovered: false), then gets 5, 6, 7."""
    small = replace(STATE, stream_id="str_s", workflow_session_id="wf-s")
    small = replace(small, config={"max_history_size": 3})
    await store.registry.register(small)
    target = Recorder()
    await store.follow("str_s", target)
    await store.publish(small, parts(1), "2026-01-01T00:00:00.000Z", None)
    assert await target.until(1) == [1]
    real = keys_for
    monkeypatch.setattr(
        publisher_module,
        "keys_for",
        lambda stream_id: replace(real(stream_id), channel="es:nowhere"),
    )
    for n in range(2, 7):
        await store.publish(small, parts(n), "2026-01-01T00:00:00.000Z", None)
    monkeypatch.setattr(publisher_module, "keys_for", real)
    await store.publish(small, parts(7), "2026-01-01T00:00:00.000Z", None)
    assert await target.until(4) == [1, 5, 6, 7]
    assert target.resets[-1] == ("e0", 4)


async def test_order_holds_while_connections_drop_under_load(tmp_path: Path) -> None:
    """Three publishers at full speed while the pub/sub connection is killed again and
    again: the target receives every seq once, in order (Recorder asserts each hand-over
    follows the last)."""
    with running_redis(tmp_path) as redis:
        history = RedisHistory(redis.url, probe_interval=60)
        await history.start()
        try:
            await history.registry.register(STATE)
            target = Recorder()
            await history.follow("str_f", target)

            async def producer() -> None:
                for n in range(150):
                    await publish(history, n)

            async def cutter() -> None:
                for _ in range(6):
                    await asyncio.sleep(0.03)  # a cut every 30 ms, while the publishes run
                    redis.command("CLIENT", "KILL", "TYPE", "pubsub")

            await asyncio.gather(producer(), producer(), producer(), cutter())
            assert await target.until(450) == list(range(1, 451))
            assert history.follower.reconnects >= 3
        finally:
            await history.close()


async def test_publishes_sent_together_survive_a_forgotten_script(
    store: RedisHistory, shared_redis: RedisServer
) -> None:
    """Publishes that queue up go to Redis in one pipeline; after SCRIPT FLUSH (what a
    Redis restart does) the pipeline's NOSCRIPT answers are sent again once the script is
    loaded: every publish stored once, seqs 1..N."""
    target = Recorder()
    await store.follow("str_f", target)
    shared_redis.command("SCRIPT", "FLUSH")
    await asyncio.gather(*(publish(store, n) for n in range(60)))
    assert await target.until(60) == list(range(1, 61))
    history = await store.read_range("str_f", 0, 1000, None)
    assert [r.seq for r in history.records] == list(range(1, 61))


async def test_a_silently_dead_pubsub_connection_is_replaced(
    shared_redis: RedisServer, redis_url: str
) -> None:
    """The pub/sub connection stops passing anything, without being closed: no error
    will ever come. The probe's pings go unanswered, the connection is replaced, and the
    events published meanwhile (by another hub, on a healthy connection) arrive."""
    proxy = await SilentProxy(shared_redis.port).start()
    behind = RedisHistory(proxy.url, probe_interval=0.2)
    direct = RedisHistory(redis_url, probe_interval=60)
    await behind.start()
    await direct.start()
    try:
        await direct.registry.register(STATE)
        target = Recorder()
        await behind.follow("str_f", target)
        await publish(direct, 1)
        assert await target.until(1) == [1]
        proxy.silence_pubsub()
        for n in range(2, 6):
            await publish(direct, n)
        assert await target.until(5) == [1, 2, 3, 4, 5]
        await eventually(lambda: behind.follower.reconnects, 5)  # within 3 pings and 2 s
        assert behind.follower.reconnects == 1
        await publish(direct, 6)  # and the new connection hears at once
        assert await target.until(6) == [1, 2, 3, 4, 5, 6]
    finally:
        await behind.close()
        await direct.close()
        await proxy.close()


async def test_seqs_past_ten_to_the_fourteen_are_written_whole(
    store: RedisHistory, shared_redis: RedisServer
) -> None:
    """Lua writes numbers from 10^14 on as 1e+14 unless told otherwise: the payload, the
    entry id and the pub/sub message carry the seq as digits."""
    shared_redis.command("HSET", keys_for("str_f").meta, "seq", str(10**15))
    target = Recorder()
    await store.follow("str_f", target)  # takes up the stream at its top seq, 10^15
    published = await store.publish(STATE, parts(1), "2026-01-01T00:00:00.000Z", None)
    assert published.records[0].seq == 10**15 + 1
    assert b'"seq":1000000000000001,' in published.records[0].payload
    stored = await store.read_after("str_f", 10**15, None)
    assert [r.payload for r in stored] == [published.records[0].payload]
    assert await target.until(1) == [10**15 + 1]


async def test_connection_caps_lapse_with_their_hub(
    shared_redis: RedisServer, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hub renews its connections' slots while they are open; a hub that stops (dies)
    stops renewing, and its slots stop counting once they lapse."""
    monkeypatch.setattr(caps_module, "RENEW_SECONDS", 0.05)
    monkeypatch.setattr(caps_module, "LAPSE_SECONDS", 0.3)
    alive, dying = RedisHistory(redis_url), RedisHistory(redis_url)
    await alive.start()
    await dying.start()
    try:
        held = await alive.connection_caps.take("sub:kim", 2)
        assert held is not None
        assert await dying.connection_caps.take("sub:kim", 2) is not None
        assert await alive.connection_caps.take("sub:kim", 2) is None
        await dying.close()  # gone without giving its slot back

        async def one_more() -> bool:
            return await alive.connection_caps.take("sub:kim", 2) is not None

        # Dying's slot lapses; alive's, taken before it, would have lapsed first had it
        # not been renewed, and then two more would fit.
        assert await eventually_async(one_more, 5), "the stopped hub's slot did not lapse"
        assert await alive.connection_caps.take("sub:kim", 2) is None
        alive.connection_caps.give_back("sub:kim", held)
        assert await eventually_async(one_more, 5), "a slot given back did not come back"
    finally:
        await alive.close()


async def test_a_history_that_went_back_resets_the_position(
    store: RedisHistory, shared_redis: RedisServer
) -> None:
    """What a Cluster failover does when the promoted replica had not received the last
    events: the top seq is below what was handed over, and the next publishes reuse
    those seqs. Once the hub reconnects it sees that and resets (its subscribers resume
    and learn it), and the new events are handed over instead of dropped as repeats."""
    target = Recorder()
    await store.follow("str_f", target)
    for n in range(10):
        await publish(store, n)
    assert await target.until(10) == list(range(1, 11))
    events = keys_for("str_f").events
    shared_redis.command("XDEL", events, *(f"{seq}-0" for seq in range(7, 11)))
    shared_redis.command("XSETID", events, "6-0")
    shared_redis.command("HSET", keys_for("str_f").meta, "seq", "6")
    shared_redis.command("CLIENT", "KILL", "TYPE", "pubsub")
    assert await eventually(lambda: target.resets[-1:] == [(target.epoch, 6)], 5)
    for n in range(3):
        await publish(store, n)
    assert await target.until(13) == [*range(1, 11), 7, 8, 9]
