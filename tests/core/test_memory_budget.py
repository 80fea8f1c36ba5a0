"""``limits.maxMemoryBytes`` (docs/configuration.md): eviction of the least recently active
CLOSED streams past 90 %, ``MEMORY_PRESSURE`` when nothing is left to evict, and the
running count it reads per publish checked against a plain sum."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from executor_streamer import ExecutorStreamer, MemoryPressure
from executor_streamer.config import ExecutorStreamerConfig
from executor_streamer.core.subscription import CloseReason
from executor_streamer.history.base import StoredScreenshot, StreamWrite
from executor_streamer.history.memory import EVENT_OVERHEAD, STREAM_OVERHEAD, MemoryHistory
from executor_streamer.types.streams import StreamConfig

from ..conftest import PNG, HubFactory
from ..history.test_contract import T0, record

MIB = 1 << 20
TEXT = "x" * 100_000  # one event of ~100 KB


async def fill(hub: ExecutorStreamer, stream: str, events: int) -> None:
    for _ in range(events):
        await hub.publisher.publish_reasoning(stream, TEXT, 0.5, "p")


async def runs_come_and_go(hub: ExecutorStreamer, count: int) -> None:
    """``count`` runs of one event each, ``run-0`` first, each closed at its end."""
    for n in range(count):
        await hub.publisher.publish_status(f"run-{n}", "done", "ok")
        await hub.destroy_stream(f"run-{n}")


async def durable_hub(make_hub: HubFactory, tmp_path: Path) -> ExecutorStreamer:
    """A hub on SQLite with a 1 MiB budget."""
    return await make_hub(
        limits={"maxMemoryBytes": 1 * MIB},
        persistence={"storageBackend": "file", "connectionString": str(tmp_path / "h.db")},
    )


class TestEviction:
    async def test_the_least_recently_active_closed_stream_goes_first(
        self, make_hub: HubFactory
    ) -> None:
        hub = await make_hub(limits={"maxMemoryBytes": 2 * MIB})
        for name in ("old", "newer", "open"):
            await fill(hub, name, 5)  # ~500 KB each
        await hub.destroy_stream("old")
        await hub.destroy_stream("newer")
        epochs = {name: hub.streams.resolve(name).epoch for name in ("old", "newer", "open")}
        await fill(hub, "open", 5)  # ~2 MB in all: over the 90 % mark
        await hub.memory.maintain()
        assert hub.memory.used <= 2 * MIB * 0.8
        assert (await hub.history.get_events("old")).total == 0
        assert hub.streams.resolve("old").epoch != epochs["old"]  # resumers learn of it
        assert (await hub.history.get_events("open")).total == 10  # open streams are never evicted
        assert hub.streams.resolve("open").epoch == epochs["open"]
        assert hub.memory.evicted_streams >= 1
        if (await hub.history.get_events("newer")).total:
            assert hub.streams.resolve("newer").epoch == epochs["newer"]

    async def test_a_resume_in_an_evicted_stream_is_not_recovered(
        self, make_hub: HubFactory
    ) -> None:
        hub = await make_hub(limits={"maxMemoryBytes": 1 * MIB})
        await fill(hub, "done", 6)
        epoch = hub.streams.resolve("done").epoch
        await hub.destroy_stream("done")
        await fill(hub, "busy", 4)
        await hub.memory.maintain()
        await hub.create_stream("done")  # reopened: seq continues, history is gone
        sub = await hub.open_subscription("done", since=3, epoch=epoch)
        try:
            assert sub.recovered is False
        finally:
            sub.close(CloseReason.UNSUBSCRIBED)

    async def test_under_the_mark_nothing_is_evicted(self, make_hub: HubFactory) -> None:
        hub = await make_hub(limits={"maxMemoryBytes": 4 * MIB})
        await fill(hub, "done", 5)
        await hub.destroy_stream("done")
        await hub.memory.maintain()
        assert (await hub.history.get_events("done")).total == 5


class TestForgetting:
    """Runs come and go all day: once their history is evicted, the closed streams
    themselves are forgotten, oldest first, so their count is bounded too."""

    async def test_runs_coming_and_going_stay_within_the_budget(self, make_hub: HubFactory) -> None:
        hub = await make_hub(limits={"maxMemoryBytes": 1 * MIB})
        await hub.create_stream("open")
        runs = MIB // STREAM_OVERHEAD  # their own cost alone fills the budget
        await runs_come_and_go(hub, runs)
        await hub.memory.maintain()
        assert hub.memory.used <= MIB * 0.9  # under the mark where eviction starts
        assert hub.memory.forgotten_streams > 0
        assert hub.streams.find("run-0") is None  # the least recently active first
        assert hub.streams.find(f"run-{runs - 1}") is not None
        assert hub.streams.find("open") is not None  # an open stream is never forgotten
        assert len(hub.streams) == runs + 1 - hub.memory.forgotten_streams
        # its session may run again: a new stream, no history
        await hub.publisher.publish_status("run-0", "again", "ok")
        assert (await hub.history.get_events("run-0")).total == 1

    async def test_history_goes_before_the_stream(self, make_hub: HubFactory) -> None:
        hub = await make_hub(limits={"maxMemoryBytes": 2 * MIB})
        await fill(hub, "done", 5)
        await hub.destroy_stream("done")
        await fill(hub, "open", 14)  # over 90 %: the closed run's history is enough
        await hub.memory.maintain()
        assert (await hub.history.get_events("done")).total == 0
        assert hub.streams.find("done") is not None
        assert hub.memory.forgotten_streams == 0

    async def test_a_durable_backend_forgets_nothing(
        self, make_hub: HubFactory, tmp_path: Path
    ) -> None:
        hub = await durable_hub(make_hub, tmp_path)
        await runs_come_and_go(hub, 300)
        await hub.memory.maintain()
        assert hub.memory.forgotten_streams == 0
        assert len(hub.streams) == 300


def test_a_closed_stream_costs_about_its_overhead() -> None:
    """``STREAM_OVERHEAD`` is what a closed stream whose history was evicted holds:
    measured over 2,000 of them, with their descriptions, in a fresh hub."""
    import asyncio
    import gc
    import tracemalloc

    async def measure() -> float:
        hub = ExecutorStreamer(ExecutorStreamerConfig())
        await hub.start()
        try:

            async def run(name: str) -> None:
                await hub.publisher.publish_status(name, "done", "ok")
                await hub.destroy_stream(name)
                await hub.storage.evict(hub.streams.resolve(name).id)

            for n in range(50):  # warm caches before measuring
                await run(f"warm-{n}")
            gc.collect()
            tracemalloc.start()
            before = tracemalloc.take_snapshot()
            for n in range(2000):
                await run(f"run-{n}")
            gc.collect()
            after = tracemalloc.take_snapshot()
            tracemalloc.stop()
            return sum(d.size_diff for d in after.compare_to(before, "filename")) / 2000
        finally:
            await hub.stop()

    measured = asyncio.run(measure())
    assert 0.6 * measured <= STREAM_OVERHEAD <= 1.4 * measured, measured


class TestPressure:
    async def test_with_only_open_streams_a_publish_at_the_budget_is_refused(
        self, make_hub: HubFactory
    ) -> None:
        hub = await make_hub(limits={"maxMemoryBytes": 1 * MIB})
        with pytest.raises(MemoryPressure) as refused:
            await fill(hub, "busy", 30)
        assert refused.value.retry_after >= 1
        stored = (await hub.history.get_events("busy")).total
        assert 0 < stored < 30
        # reads go on, and a refused publish stored nothing
        with pytest.raises(MemoryPressure):
            await hub.publisher.publish_status("busy", "a", "b")
        assert (await hub.history.get_events("busy")).total == stored
        assert hub.memory.refused_publishes == 2

    async def test_closing_a_stream_makes_room(self, make_hub: HubFactory) -> None:
        hub = await make_hub(limits={"maxMemoryBytes": 1 * MIB})
        with pytest.raises(MemoryPressure):
            await fill(hub, "first", 30)
        await hub.destroy_stream("first")
        await fill(hub, "second", 3)  # the publish evicts the closed stream itself
        assert (await hub.history.get_events("first")).total == 0

    async def test_durable_history_is_not_counted(
        self, make_hub: HubFactory, tmp_path: Path
    ) -> None:
        hub = await durable_hub(make_hub, tmp_path)
        await fill(hub, "busy", 15)  # 1.5 MB, in SQLite
        assert hub.memory.used == 0
        assert (await hub.history.get_events("busy")).total == 15


# -- the running count against a plain sum -----------------------------------------------

STREAMS = ["s1", "s2", "s3"]
operation = st.one_of(
    st.tuples(st.just("write"), st.sampled_from(STREAMS), st.integers(1, 4), st.booleans()),
    st.tuples(st.just("compact"), st.sampled_from(STREAMS), st.integers(0, 6)),
    st.tuples(st.just("expire"), st.sampled_from(STREAMS), st.integers(0, 20)),
    st.tuples(st.just("resize"), st.sampled_from(STREAMS), st.integers(1, 8)),
    st.tuples(st.just("clear"), st.sampled_from(STREAMS)),
    st.tuples(st.just("evict"), st.sampled_from(STREAMS)),
    st.tuples(st.just("drop"), st.sampled_from(STREAMS)),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(operation, max_size=40))
async def test_the_running_count_is_the_sum_of_what_each_stream_holds(
    operations: list[tuple[object, ...]],
) -> None:
    store = MemoryHistory()
    next_seq = dict.fromkeys(STREAMS, 1)
    opened: set[str] = set()
    for op in operations:
        kind, stream = op[0], str(op[1])
        if stream not in opened and kind in ("write", "resize"):
            await store.open_stream(stream, StreamConfig(max_history_size=5))
            opened.add(stream)
        if kind == "write" and stream in opened:
            count, with_shot = int(op[2]), bool(op[3])  # type: ignore[call-overload]
            records, shots = [], []
            for i in range(count):
                seq = next_seq[stream]
                next_seq[stream] += 1
                if with_shot and i % 2 == 0:
                    shot = f"shot-{seq % 3}"
                    shots.append((shot, StoredScreenshot(PNG * (1 + seq % 3), "image/png", shot)))
                    records.append(record(seq, "SCREENSHOT", screenshot_id=shot))
                else:
                    records.append(record(seq, "REASONING", "r" * 10 * seq))
            await store.write([StreamWrite(stream, records, None, shots)])
        elif kind == "compact":
            await store.compact(stream, int(op[2]))  # type: ignore[call-overload]
        elif kind == "expire":
            await store.expire(stream, T0 + timedelta(seconds=int(op[2])))  # type: ignore[call-overload]
        elif kind == "resize" and stream in opened:
            await store.open_stream(stream, StreamConfig(max_history_size=int(op[2])))  # type: ignore[call-overload]
        elif kind == "clear":
            await store.clear(stream)
        elif kind == "evict":
            await store.evict(stream)
        elif kind == "drop":
            await store.drop_stream(stream)
            opened.discard(stream)
        plain = sum([await store.usage_bytes(s) for s in STREAMS])
        events = sum([len(await store.read_tail(s, 1000)) for s in STREAMS])
        expected = plain + EVENT_OVERHEAD * events + STREAM_OVERHEAD * len(opened)
        assert store.held_in_memory() == expected, op


def test_the_budget_has_a_floor() -> None:
    config = ExecutorStreamerConfig().with_overrides({"limits": {"maxMemoryBytes": 2 * MIB}})
    assert config.limits.max_memory_bytes == 2 * MIB


async def test_subscribers_queueing_the_same_events_count_once(make_hub: HubFactory) -> None:
    """A hundred subscribers behind on one stream queue the same records: the budget
    counts them once, not a hundred times."""
    hub = await make_hub(limits={"maxMemoryBytes": 4 * MIB})
    await hub.create_stream("busy")
    subs = [await hub.open_subscription("busy") for _ in range(100)]
    try:
        await fill(hub, "busy", 3)  # ~300 KB, queued for each and drained by none
        await hub.memory.maintain()
        assert 300_000 <= hub.memory.queued_bytes < 400_000
        await fill(hub, "busy", 3)  # a hundred-fold count would be far over the budget
    finally:
        for sub in subs:
            sub.close(CloseReason.UNSUBSCRIBED)


async def test_a_keyed_retry_at_the_budget_gets_its_first_answer(make_hub: HubFactory) -> None:
    hub = await make_hub(limits={"maxMemoryBytes": 1 * MIB})
    event = {
        "type": "REASONING",
        "data": {"thought": TEXT, "confidence": 0.5, "reasoningType": "p"},
    }
    first = await hub.publisher.publish_wire("busy", event, "k")
    with pytest.raises(MemoryPressure):
        await fill(hub, "busy", 30)
    again = await hub.publisher.publish_wire("busy", event, "k")
    assert [r.seq for r in again] == [r.seq for r in first]
