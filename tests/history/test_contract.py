"""The HistoryStore contract, run against every backend.

Memory, SQLite, PostgreSQL and Redis are the ``make_store`` fixture's parameters; each must
pass the same tests unchanged. (Redis runs in a redis-server the tests start, and in a
three-primary Redis Cluster they start.)
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from executor_streamer.history import (
    HistoryStore,
    MemoryHistory,
    StoredScreenshot,
    StreamState,
    StreamWrite,
)
from executor_streamer.history.records import EventRecord
from executor_streamer.history.sql import SqlHistory
from executor_streamer.redis_engine.store import RedisHistory
from executor_streamer.types import HistoryFilter, StreamConfig, StreamEvent

from ..conftest import PNG
from ..postgres import POSTGRES_URL, reset_postgres

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
SHOT_ID = "scr_" + hashlib.sha256(PNG).hexdigest()[:32]
IMAGE = StoredScreenshot(PNG, "image/png", hashlib.sha256(PNG).hexdigest())


def record(
    seq: int,
    kind: str = "STATUS",
    text: str = "",
    seconds: float | None = None,
    screenshot_id: str = SHOT_ID,
) -> EventRecord:
    data: dict[str, object]
    if kind == "SCREENSHOT":
        data = {
            "screenshotId": screenshot_id,
            "mimeType": "image/png",
            "sizeBytes": len(PNG),
            "sha256": hashlib.sha256(PNG).hexdigest(),
            "url": f"/api/streams/s1/screenshots/{screenshot_id}",
        }
    elif kind == "ERROR":
        data = {"code": "E", "message": text or f"error {seq}"}
    elif kind == "REASONING":
        data = {"thought": text or f"thought {seq}", "confidence": 0.5, "reasoningType": "p"}
    else:
        data = {"statusType": "n", "status": text or f"status {seq}"}
    return EventRecord.of(
        StreamEvent.model_validate(
            {
                "id": f"evt_{seq}",
                "streamId": "s1",
                "sessionId": "wf-1",
                "seq": seq,
                "type": kind,
                "timestamp": T0 + timedelta(seconds=seq if seconds is None else seconds),
                "data": data,
            }
        )
    )


StoreFactory = Callable[[int], Awaitable[HistoryStore]]


@pytest.fixture(params=["memory", "sqlite", "postgres", "redis", "redis-cluster"])
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """Stores of one backend with stream "s1" opened at a given capacity."""
    made: list[HistoryStore] = []

    async def factory(capacity: int = 100) -> HistoryStore:
        backend: HistoryStore
        if request.param == "memory":
            backend = MemoryHistory()
        elif request.param == "redis":
            if not made:
                request.getfixturevalue("redis_url")  # emptied once per test
            backend = RedisHistory(request.getfixturevalue("shared_redis").url)
        elif request.param == "redis-cluster":
            if not made:
                request.getfixturevalue("cluster_url")  # emptied once per test
            backend = RedisHistory(request.getfixturevalue("shared_cluster").url)
        elif request.param == "sqlite":
            backend = SqlHistory(f"sqlite+aiosqlite:///{tmp_path / f'h{len(made)}.db'}")
        else:
            await reset_postgres()
            backend = SqlHistory(POSTGRES_URL)
        await backend.start()
        await backend.open_stream("s1", StreamConfig(max_history_size=capacity))
        made.append(backend)
        return backend

    yield factory
    for backend in made:
        await backend.close()


@pytest.fixture
async def store(make_store: StoreFactory) -> HistoryStore:
    return await make_store(100)


async def append(
    store: HistoryStore,
    records: list[EventRecord],
    state: StreamState | None = None,
    screenshot: StoredScreenshot | None = None,
) -> None:
    """One publish into "s1", as the hub's committer hands it over."""
    shots = [] if screenshot is None else [(SHOT_ID, screenshot)]
    await store.write([StreamWrite("s1", records, state, shots)])


async def fill(store: HistoryStore, count: int) -> None:
    kinds = ["STATUS", "REASONING"]
    await append(store, [record(i, kinds[i % 2]) for i in range(1, count + 1)])


class TestQuery:
    async def test_ascending_pages_with_total(self, store: HistoryStore) -> None:
        """Results ascend by seq; total ignores limit and offset."""
        await fill(store, 10)
        page = await store.query("s1", HistoryFilter(limit=3, offset=2))
        assert [e.seq for e in page.events] == [3, 4, 5] and page.total == 10

    async def test_types_and_after_seq(self, store: HistoryStore) -> None:
        """eventTypes and afterSeq narrow the result and the total."""
        await fill(store, 10)
        page = await store.query("s1", HistoryFilter(event_types=["REASONING"], after_seq=4))
        assert [e.seq for e in page.events] == [5, 7, 9] and page.total == 3

    async def test_time_bounds_are_inclusive(self, store: HistoryStore) -> None:
        """startTime and endTime both include events stamped exactly then."""
        await fill(store, 10)
        spec = HistoryFilter(
            start_time=T0 + timedelta(seconds=3), end_time=T0 + timedelta(seconds=5)
        )
        page = await store.query("s1", spec)
        assert [e.seq for e in page.events] == [3, 4, 5]

    async def test_search_is_case_insensitive_over_data(self, store: HistoryStore) -> None:
        """searchText matches a substring of the data, ignoring case."""
        await append(
            store,
            [record(1, text="Login FORM found"), record(2, text="other"), record(3, text="form")],
        )
        page = await store.query("s1", HistoryFilter(search_text="form"))
        assert [e.seq for e in page.events] == [1, 3] and page.total == 2

    async def test_unknown_stream_is_empty(self, store: HistoryStore) -> None:
        """Querying a stream with no history gives an empty page."""
        page = await store.query("nope", HistoryFilter())
        assert (page.events, page.total) == ([], 0)


class TestRanges:
    async def test_read_range(self, store: HistoryStore) -> None:
        """read_range gives after < seq <= until that match, and where retention starts."""
        await fill(store, 10)
        read = await store.read_range("s1", 3, 7, lambda e: e.type == "STATUS")
        assert [r.seq for r in read.records] == [4, 6] and read.first_retained_seq == 1
        empty = await store.read_range("nope", 0, 5, None)
        assert (empty.records, empty.first_retained_seq) == ([], 6)

    async def test_read_tail(self, store: HistoryStore) -> None:
        """read_tail gives the newest N, ascending."""
        await fill(store, 10)
        assert [r.seq for r in await store.read_tail("s1", 3)] == [8, 9, 10]
        assert len(await store.read_tail("s1", 50)) == 10


class TestMaintenance:
    async def test_capacity_trims_oldest(self, make_store: StoreFactory) -> None:
        """A stream holds at most maxHistorySize events, dropping the oldest."""
        store = await make_store(3)
        await append(store, [record(i) for i in range(1, 6)])
        read = await store.read_range("s1", 0, 5, None)
        assert [r.seq for r in read.records] == [3, 4, 5] and read.first_retained_seq == 3

    async def test_clear_compact_expire(self, store: HistoryStore) -> None:
        """clear, compact and expire remove what they say and report how many."""
        await fill(store, 10)
        assert await store.expire("s1", T0 + timedelta(seconds=3)) == 2
        assert await store.compact("s1", 5) == 3
        assert [r.seq for r in await store.read_tail("s1", 10)] == [6, 7, 8, 9, 10]
        assert await store.clear("s1") == 5
        assert (await store.query("s1", HistoryFilter())).total == 0
        await append(store, [record(11)])
        assert (await store.query("s1", HistoryFilter())).total == 1

    async def test_non_contiguous_append_changes_nothing(self, store: HistoryStore) -> None:
        """An append whose seqs do not follow on is refused whole."""
        await fill(store, 2)
        with pytest.raises(ValueError, match="does not follow"):
            await append(store, [record(3), record(5)])
        assert (await store.query("s1", HistoryFilter())).total == 2

    async def test_drop_stream(self, store: HistoryStore) -> None:
        """drop_stream forgets events and screenshots."""
        await append(store, [record(1, "SCREENSHOT")], screenshot=IMAGE)
        await store.drop_stream("s1")
        assert await store.get_screenshot("s1", SHOT_ID) is None
        assert (await store.query("s1", HistoryFilter())).total == 0


class TestWrites:
    async def test_many_publishes_in_one_write(self, make_store: StoreFactory) -> None:
        """One write holds publishes of several streams, applied in order."""
        store = await make_store(100)
        await store.open_stream("s2", StreamConfig())
        await store.write(
            [
                StreamWrite("s1", [record(1), record(2)]),
                StreamWrite("s2", [record(1)]),
                StreamWrite("s1", [record(3)]),
            ]
        )
        assert [r.seq for r in await store.read_tail("s1", 10)] == [1, 2, 3]
        assert [r.seq for r in await store.read_tail("s2", 10)] == [1]

    async def test_a_bad_write_stores_nothing_of_the_batch(self, make_store: StoreFactory) -> None:
        """Writes are atomic together: one bad publish leaves every stream unchanged."""
        store = await make_store(100)
        await store.open_stream("s2", StreamConfig())
        with pytest.raises(ValueError, match="does not follow"):
            await store.write(
                [
                    StreamWrite("s2", [record(1)]),
                    StreamWrite("s1", [record(1, "SCREENSHOT")], None, [(SHOT_ID, IMAGE)]),
                    StreamWrite("s1", [record(3)]),
                ]
            )
        assert await store.read_tail("s1", 10) == []
        assert await store.read_tail("s2", 10) == []
        assert await store.get_screenshot("s1", SHOT_ID) is None


class TestScreenshots:
    async def test_put_get_and_usage(self, store: HistoryStore) -> None:
        """Screenshots are stored by id, once, and counted in usage."""
        await append(store, [record(1, "SCREENSHOT")], screenshot=IMAGE)
        await append(store, [record(2, "SCREENSHOT")], screenshot=IMAGE)
        assert await store.get_screenshot("s1", SHOT_ID) == IMAGE
        assert await store.get_screenshot("s1", "scr_other") is None
        payloads = 2 * len(record(1, "SCREENSHOT").payload)
        assert await store.usage_bytes("s1") == len(PNG) + payloads

    async def test_images_are_freed_with_their_last_event(self, make_store: StoreFactory) -> None:
        """When the last event using a screenshot is trimmed, the image goes too."""
        store = await make_store(2)
        await append(store, [record(1, "SCREENSHOT"), record(2, "SCREENSHOT")], screenshot=IMAGE)
        await append(store, [record(3)])
        assert await store.get_screenshot("s1", SHOT_ID) == IMAGE
        await append(store, [record(4)])
        assert await store.get_screenshot("s1", SHOT_ID) is None

    async def test_streams_sharing_an_image_keep_it(self, make_store: StoreFactory) -> None:
        """The same image in two streams: purging one leaves the other's intact."""
        store = await make_store(100)
        await store.open_stream("s2", StreamConfig())
        shots = [(SHOT_ID, IMAGE)]
        await store.write(
            [
                StreamWrite("s1", [record(1, "SCREENSHOT")], None, shots),
                StreamWrite("s2", [record(1, "SCREENSHOT")], None, shots),
            ]
        )
        await store.drop_stream("s1")
        assert await store.get_screenshot("s1", SHOT_ID) is None
        assert await store.get_screenshot("s2", SHOT_ID) == IMAGE


class TestRegistry:
    def state(self, last_seq: int = 0, status: str = "ACTIVE") -> StreamState:
        return StreamState(
            stream_id="s1",
            workflow_session_id="wf-1",
            status=status,
            config={"max_history_size": 100},
            metadata={"owner": "ada"},
            epoch="e1",
            created_at=T0,
            last_activity=T0 + timedelta(seconds=1),
            last_seq=last_seq,
            running_commands={"cmd_1": "click"},
        )

    async def test_save_and_load(self, store: HistoryStore) -> None:
        """A saved stream state loads back as it was; saving again updates it."""
        await store.save_stream(self.state())
        assert await store.load_streams() == [self.state()]
        await store.save_stream(self.state(status="CLOSED"))
        assert [s.status for s in await store.load_streams()] == ["CLOSED"]

    async def test_append_saves_state_with_the_events(self, store: HistoryStore) -> None:
        """The state passed with an append is stored with it, last seq included."""
        await append(store, [record(1), record(2)], self.state(last_seq=2))
        assert [s.last_seq for s in await store.load_streams()] == [2]
        with pytest.raises(ValueError):
            await append(store, [record(9)], self.state(last_seq=9))
        assert [s.last_seq for s in await store.load_streams()] == [2]

    async def test_drop_forgets_the_stream(self, store: HistoryStore) -> None:
        """Purging removes the registry entry too."""
        await store.save_stream(self.state())
        await store.drop_stream("s1")
        assert await store.load_streams() == []
