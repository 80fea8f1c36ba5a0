"""Analytics from real counters: metrics, stream stats, distribution, retention."""

from __future__ import annotations

from datetime import timedelta

import pytest

from executor_streamer import ClientType, ExecutorStreamer, InvalidInput, StreamEventType
from executor_streamer.types import utc_now

from ..conftest import PNG, HubFactory


class TestMetrics:
    async def test_hub_metrics(self, hub: ExecutorStreamer) -> None:
        """Totals, rate, mean size, error rate and clients come from what happened."""
        for i in range(9):
            await hub.publisher.publish_status("wf-1", "n", str(i))
        await hub.create_stream("wf-2")
        await hub.destroy_stream("wf-2")
        with pytest.raises(InvalidInput):
            await hub.publisher.publish_reasoning("wf-1", "t", 7, "p")
        hub.connect(ClientType.SERVER_SENT_EVENTS)
        m = hub.analytics.get_metrics()
        assert (m.total_streams, m.active_streams, m.total_clients) == (2, 1, 1)
        assert m.events_per_second == pytest.approx(9 / 60)
        payloads = [len(r.payload) for r in (await hub.history.get_events("wf-1")).records]
        assert m.average_event_size == pytest.approx(sum(payloads) / 9)
        assert m.error_rate == pytest.approx(1 / 10)
        assert m.clients_by_type[ClientType.SERVER_SENT_EVENTS] == 1
        assert m.memory_usage > 10_000_000 and m.uptime > 0
        assert m.to_wire()["clientsByType"]["WEBSOCKET"] == 0

    async def test_stream_stats(self, hub: ExecutorStreamer) -> None:
        """Stream stats count events, the largest one, and the bytes held."""
        await hub.publisher.publish_status("wf-1", "a", "b")
        big = await hub.publisher.publish_status("wf-1", "a", "b", message="m" * 500)
        await hub.publisher.publish_screenshot("wf-1", PNG)
        stats = await hub.analytics.get_stream_stats("wf-1")
        assert (stats.total_events, stats.events_in_last_hour) == (3, 3)
        assert stats.largest_event_size == len(
            big.model_dump_json(by_alias=True, exclude_none=True)
        )
        assert stats.memory_usage > len(PNG) + 500
        assert stats.average_event_frequency > 0
        await hub.history.clear_history("wf-1")
        cleared = await hub.analytics.get_stream_stats("wf-1")
        assert cleared.memory_usage == 0 and cleared.total_events == 3


class TestDistribution:
    async def test_counts_by_type_in_range(self, hub: ExecutorStreamer) -> None:
        """The distribution counts published events by type in the range, minute-wide."""
        await hub.publisher.publish_status("wf-1", "a", "b")
        await hub.publisher.publish_status("wf-2", "a", "b")
        await hub.publisher.publish_error("wf-1", {"code": "E", "message": "m"})
        now = utc_now()
        counts = hub.analytics.get_event_distribution(now - timedelta(minutes=1), now)
        assert counts[StreamEventType.STATUS] == 2 and counts[StreamEventType.ERROR] == 1
        assert set(counts) == set(StreamEventType)
        old = now - timedelta(hours=3)
        assert sum(hub.analytics.get_event_distribution(old, old).values()) == 0

    async def test_counts_survive_trimming(self, make_hub: HubFactory) -> None:
        """Counters keep counting events that history no longer holds."""
        hub = await make_hub(default_stream_config={"max_history_size": 2})
        for i in range(5):
            await hub.publisher.publish_status("wf-1", "a", str(i))
        now = utc_now()
        counts = hub.analytics.get_event_distribution(now - timedelta(minutes=1), now)
        assert counts[StreamEventType.STATUS] == 5
        assert (await hub.history.get_events("wf-1")).total == 2

    async def test_bad_range(self, hub: ExecutorStreamer) -> None:
        """A range whose start is after its end is refused."""
        now = utc_now()
        with pytest.raises(InvalidInput):
            hub.analytics.get_event_distribution(now, now - timedelta(seconds=1))


class TestRetention:
    async def test_old_events_are_removed(self, hub: ExecutorStreamer) -> None:
        """Retention removes events older than the stream's retentionPeriod, and only those."""
        await hub.create_stream("wf-1", config={"persistence": {"retentionPeriod": 60_000}})
        for i in range(3):
            await hub.publisher.publish_status("wf-1", "a", str(i))
        assert await hub.history.apply_retention() == 0
        assert await hub.history.apply_retention(utc_now() + timedelta(minutes=2)) == 3
        assert (await hub.history.get_events("wf-1")).total == 0

    async def test_compact(self, hub: ExecutorStreamer) -> None:
        """compact_history keeps the newest N events."""
        for i in range(5):
            await hub.publisher.publish_status("wf-1", "a", str(i))
        assert await hub.history.compact_history("wf-1", 2) == 3
        page = await hub.history.get_events("wf-1")
        assert [e.seq for e in page.events] == [4, 5]
        with pytest.raises(InvalidInput):
            await hub.history.compact_history("wf-1", -1)
