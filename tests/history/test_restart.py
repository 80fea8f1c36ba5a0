"""A hub on a durable backend comes back with its streams, seqs, epochs and commands."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from executor_streamer import (
    ExecutorStreamer,
    ExecutorStreamerConfig,
    ScreenshotNotFound,
    SessionStatus,
)
from executor_streamer.history.sql import SqlHistory
from executor_streamer.types import CommandCompletedData, CommandStartedData, ScreenshotInfo

from ..conftest import PNG
from ..postgres import POSTGRES_URL, reset_postgres

HubMaker = Callable[[], ExecutorStreamer]


@pytest.fixture(params=["sqlite", "postgres"])
async def make_hub(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[HubMaker]:
    """Hubs that share one durable store, as one process after another would."""
    if request.param == "postgres":
        await reset_postgres()
        url = POSTGRES_URL
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
    config = ExecutorStreamerConfig().with_overrides({"defaultStreamConfig": {"maxHistorySize": 5}})
    hubs: list[ExecutorStreamer] = []

    def factory() -> ExecutorStreamer:
        hub = ExecutorStreamer(config, storage=SqlHistory(url))
        hubs.append(hub)
        return hub

    yield factory
    for hub in hubs:
        await hub.stop()


class TestRestart:
    async def test_everything_comes_back(self, make_hub: HubMaker) -> None:
        """Stream id, epoch, status, config, seqs, history, screenshots and running
        commands are all there after a restart, and publishing carries on."""
        first = make_hub()
        await first.start()
        stream_id = await first.create_stream("wf-1", metadata={"owner": "ada"})
        started = await first.publisher.publish_command_started("wf-1", "click", "CLICK")
        shot = await first.publisher.publish_screenshot("wf-1", PNG, caption="page")
        for i in range(6):  # past maxHistorySize=5: trimming must not lose the seq
            await first.publisher.publish_status("wf-1", "n", str(i))
        epoch = first.streams.resolve("wf-1").epoch
        await first.stop()

        second = make_hub()
        await second.start()
        session = second.get_stream("wf-1")
        assert session is not None
        assert (session.stream_id, session.epoch, session.last_seq) == (stream_id, epoch, 8)
        assert session.status is SessionStatus.ACTIVE and session.metadata == {"owner": "ada"}
        assert session.config.max_history_size == 5
        done = await second.publisher.publish_command_completed("wf-1", "click", None, 3)
        assert done.seq == 9
        assert isinstance(started.data, CommandStartedData)
        assert isinstance(done.data, CommandCompletedData)
        assert done.data.command_id == started.data.command_id
        page = await second.history.get_events("wf-1")
        assert [e.seq for e in page.events] == [5, 6, 7, 8, 9]
        assert isinstance(shot.data, ScreenshotInfo)
        # The screenshot's event was trimmed, so its image is gone with it.
        with pytest.raises(ScreenshotNotFound):
            await second.history.get_screenshot("wf-1", shot.data.screenshot_id)

    async def test_resume_across_a_restart(self, make_hub: HubMaker) -> None:
        """A subscriber resuming with since=N after a restart gets exactly what followed."""
        first = make_hub()
        await first.start()
        for i in range(4):
            await first.publisher.publish_status("wf-1", "n", str(i))
        await first.stop()
        second = make_hub()
        await second.start()
        await second.publisher.publish_status("wf-1", "n", "after")
        async with second.subscribe("wf-1", since=2) as sub:
            assert sub.recovered
            got = [item.seq for item in sub.drain()]  # type: ignore[union-attr]
        assert got == [3, 4, 5]

    async def test_closed_and_purged_streams_stay_so(self, make_hub: HubMaker) -> None:
        """A closed stream is still closed after a restart; a purged one is gone."""
        first = make_hub()
        await first.start()
        await first.publisher.publish_status("wf-closed", "a", "b")
        await first.publisher.publish_status("wf-purged", "a", "b")
        await first.destroy_stream("wf-closed")
        await first.destroy_stream("wf-purged", purge=True)
        await first.stop()
        second = make_hub()
        await second.start()
        closed = second.get_stream("wf-closed")
        assert closed is not None and closed.status is SessionStatus.CLOSED
        assert second.get_stream("wf-purged") is None
        assert (await second.history.get_events("wf-closed")).total == 1
