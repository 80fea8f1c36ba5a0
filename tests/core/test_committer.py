"""Group commit: publishes share writes, are acknowledged only once stored, are
delivered in seq order, and a failed write takes back exactly what it did not store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from executor_streamer import ExecutorStreamer, ExecutorStreamerConfig
from executor_streamer.core.commands import CommandTracker
from executor_streamer.core.committer import GroupCommitter, PendingPublish
from executor_streamer.core.streams import Stream
from executor_streamer.errors import StorageUnavailable
from executor_streamer.history import MemoryHistory, StreamWrite
from executor_streamer.history.sql import SqlHistory
from executor_streamer.types import SessionStatus, StreamConfig

from ..conftest import YieldingHistory, drain_events, seqs
from ..history.test_contract import record


class GatedHistory(YieldingHistory):
    """The memory backend whose writes wait for ``gate`` and can be made to fail once."""

    def __init__(self) -> None:
        super().__init__(yields=2)
        self.gate = asyncio.Event()
        self.gate.set()
        self.writes: list[int] = []
        """How many publishes each stored write carried."""
        self.fail_next = False

    async def write(self, writes: Sequence[StreamWrite]) -> None:
        await self.gate.wait()
        if self.fail_next:
            self.fail_next = False
            raise StorageUnavailable("history storage failed: disk on fire")
        await super().write(writes)
        self.writes.append(len(writes))


class CountingSqlHistory(SqlHistory):
    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.writes: list[int] = []

    async def write(self, writes: Sequence[StreamWrite]) -> None:
        await super().write(writes)
        self.writes.append(len(writes))


def quiet() -> ExecutorStreamerConfig:
    return ExecutorStreamerConfig().with_overrides({"logging": {"level": "ERROR"}})


@pytest.fixture
async def gated() -> AsyncIterator[tuple[ExecutorStreamer, GatedHistory]]:
    store = GatedHistory()
    hub = ExecutorStreamer(quiet(), storage=store)
    await hub.start()
    yield hub, store
    store.gate.set()
    await hub.stop()


async def settled() -> None:
    """Let every task that can make progress make it. All the work here is in memory, so
    a task still pending after this many turns of the loop waits on something: the gate."""
    for _ in range(200):
        await asyncio.sleep(0)


async def until(condition: object) -> None:
    """Let other tasks run until ``condition()`` holds (bounded)."""
    assert callable(condition)
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


class TestGrouping:
    async def test_concurrent_publishes_share_writes(
        self, gated: tuple[ExecutorStreamer, GatedHistory]
    ) -> None:
        """50 concurrent publishes to one stream take far fewer than 50 writes, and every
        subscriber sees 1..50 once, in order."""
        hub, store = gated
        await hub.create_stream("wf-1")
        async with hub.subscribe("wf-1") as sub:
            events = await asyncio.gather(
                *(hub.publisher.publish_status("wf-1", "n", str(i)) for i in range(50))
            )
            assert sorted(e.seq for e in events) == list(range(1, 51))
            assert seqs(drain_events(sub)) == list(range(1, 51))
        assert sum(store.writes) == 50 and len(store.writes) < 10

    async def test_sqlite_many_streams_in_order(self, tmp_path: Path) -> None:
        """Against SQLite: concurrent publishers on four streams, each stream's events
        stored and delivered contiguously and in order, in shared transactions."""
        store = CountingSqlHistory(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}")
        async with ExecutorStreamer(quiet(), storage=store) as hub:
            names = [f"wf-{n}" for n in range(4)]
            for name in names:
                await hub.create_stream(name)
            subs = [hub.subscribe(name) for name in names]
            opened = [await s.__aenter__() for s in subs]
            await asyncio.gather(
                *(hub.publisher.publish_status(names[i % 4], "n", str(i)) for i in range(200))
            )
            for name, sub in zip(names, opened, strict=True):
                assert seqs(drain_events(sub)) == list(range(1, 51)), name
                stored = await hub.history.get_events(name)
                assert [e.seq for e in stored.events] == list(range(1, 51))
            for s in subs:
                await s.__aexit__(None, None, None)
        assert sum(store.writes) == 200 and len(store.writes) < 100


class TestAcknowledgement:
    async def test_nothing_is_seen_before_the_commit(
        self, gated: tuple[ExecutorStreamer, GatedHistory]
    ) -> None:
        """Until its write is stored, a publish has not returned, subscribers have nothing,
        and the stream's seq has not moved; then all three happen."""
        hub, store = gated
        await hub.create_stream("wf-1")
        stream = hub.streams.resolve("wf-1")
        store.gate.clear()
        async with hub.subscribe("wf-1") as sub:
            publish = asyncio.create_task(hub.publisher.publish_status("wf-1", "n", "x"))
            await until(lambda: stream.staged)
            assert not publish.done() and drain_events(sub) == [] and stream.last_seq == 0
            assert stream.head_seq == 1
            store.gate.set()
            assert (await publish).seq == 1
            assert seqs(drain_events(sub)) == [1] and stream.last_seq == 1

    async def test_a_cancelled_publisher_still_stores(
        self, gated: tuple[ExecutorStreamer, GatedHistory]
    ) -> None:
        """A publisher that goes away after staging does not take its event back, and
        what waits for the stream to settle still waits for that event's commit."""
        hub, store = gated
        await hub.create_stream("wf-1")
        store.gate.clear()
        async with hub.subscribe("wf-1") as sub:
            publish = asyncio.create_task(hub.publisher.publish_status("wf-1", "n", "x"))
            await until(lambda: hub.streams.resolve("wf-1").staged)
            publish.cancel()
            compact = asyncio.create_task(hub.history.compact_history("wf-1", 5))
            await settled()
            assert not compact.done()
            store.gate.set()
            assert await compact == 0
            assert seqs(drain_events(sub)) == [1]
        assert (await hub.history.get_events("wf-1")).total == 1

    async def test_stop_commits_what_was_staged(self) -> None:
        """stop() waits for staged publishes: each acknowledged one is in storage."""
        store = GatedHistory()
        hub = ExecutorStreamer(quiet(), storage=store)
        await hub.start()
        await hub.create_stream("wf-1")
        stream_id = hub.streams.resolve("wf-1").id
        store.gate.clear()
        publishes = [
            asyncio.create_task(hub.publisher.publish_status("wf-1", "n", str(i))) for i in range(5)
        ]
        await until(lambda: len(hub.streams.resolve("wf-1").staged) == 5)
        stopping = asyncio.create_task(hub.stop())
        await settled()
        assert not stopping.done()
        store.gate.set()
        await stopping
        assert sorted(e.seq for e in await asyncio.gather(*publishes)) == [1, 2, 3, 4, 5]
        assert [r.seq for r in await store.read_tail(stream_id, 10)] == [1, 2, 3, 4, 5]

    async def test_status_change_waits_for_staged_publishes(
        self, gated: tuple[ExecutorStreamer, GatedHistory]
    ) -> None:
        """A status change lands after the publishes staged before it, so the stored
        state ends with the new status and the newest seq."""
        hub, store = gated
        await hub.create_stream("wf-1")
        store.gate.clear()
        publish = asyncio.create_task(hub.publisher.publish_status("wf-1", "n", "x"))
        await until(lambda: hub.streams.resolve("wf-1").staged)
        change = asyncio.create_task(hub.update_session_status("wf-1", SessionStatus.ERROR))
        await settled()
        assert not change.done()
        store.gate.set()
        await asyncio.gather(publish, change)
        [state] = await store.load_streams()
        assert (state.status, state.last_seq) == ("ERROR", 1)


class TestFailure:
    async def test_a_failed_write_takes_back_the_stream_s_later_publishes(
        self, gated: tuple[ExecutorStreamer, GatedHistory]
    ) -> None:
        """The write in flight fails: its publishes and those queued behind them on the
        same stream fail with 503's error, another stream's queued publish lands, and
        the stream's seq and running commands fall back to what was stored."""
        hub, store = gated
        await hub.create_stream("wf-1")
        await hub.create_stream("wf-2")
        await hub.publisher.publish_status("wf-1", "n", "kept")
        stream = hub.streams.resolve("wf-1")
        store.gate.clear()
        async with hub.subscribe("wf-1") as sub:
            first = asyncio.create_task(
                hub.publisher.publish_command_started("wf-1", "click", "CLICK")
            )
            await until(lambda: stream.staged)
            await asyncio.sleep(0)  # the committer takes it into a write
            queued = [
                asyncio.create_task(hub.publisher.publish_status("wf-1", "n", str(i)))
                for i in range(3)
            ]
            other = asyncio.create_task(hub.publisher.publish_status("wf-2", "n", "y"))
            await until(lambda: len(stream.staged) == 4)
            store.fail_next = True
            store.gate.set()
            results = await asyncio.gather(first, *queued, return_exceptions=True)
            assert all(isinstance(r, StorageUnavailable) for r in results), results
            assert "disk on fire" in str(results[0])
            assert (await other).seq == 1
            assert stream.last_seq == stream.head_seq == 1 and not stream.staged
            assert stream.commands.running() == {}
            assert drain_events(sub) == []
            again = await hub.publisher.publish_status("wf-1", "n", "again")
            assert again.seq == 2 and seqs(drain_events(sub)) == [2]
        stored = await hub.history.get_events("wf-1")
        assert [e.data.status for e in stored.events] == ["kept", "again"]  # type: ignore[union-attr]

    async def test_a_new_session_whose_first_write_fails_is_withdrawn(
        self, gated: tuple[ExecutorStreamer, GatedHistory]
    ) -> None:
        """Auto-created by a publish that could not be stored, the stream goes away."""
        hub, store = gated
        store.fail_next = True
        with pytest.raises(StorageUnavailable):
            await hub.publisher.publish_status("wf-new", "n", "x")
        assert hub.get_stream("wf-new") is None
        assert (await hub.publisher.publish_status("wf-new", "n", "x")).seq == 1

    async def test_a_failure_applying_a_stored_publish_still_acknowledges_it(self) -> None:
        """Stored is stored: if applying a committed publish raises, its publisher is
        acknowledged anyway and the committer goes on with the next ones."""
        storage = MemoryHistory()
        stream = Stream("wf-1", StreamConfig(), {})
        await storage.open_stream(stream.id, stream.config)
        applied: list[int] = []

        def apply(pending: PendingPublish) -> None:
            applied.append(pending.records[0].seq)
            if len(applied) == 1:
                raise RuntimeError("a bug while delivering")

        committer = GroupCommitter(storage, apply)
        pendings = [
            PendingPublish(stream, [r], StreamWrite(stream.id, [r]), CommandTracker())
            for r in (record(1), record(2), record(3))
        ]
        for pending in pendings:
            committer.submit(pending)
        await asyncio.wait_for(asyncio.gather(*(p.done for p in pendings)), 5)
        assert applied == [1, 2, 3] and not stream.staged
        assert [r.seq for r in (await storage.read_tail(stream.id, 5))] == [1, 2, 3]
