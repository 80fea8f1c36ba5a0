"""Analytics reports (the original StreamAnalytics), from the hub's live counters."""

from __future__ import annotations

from datetime import datetime

from ..errors import InvalidInput
from ..types.analytics import ClientActivityReport, StreamMetrics, StreamStats
from ..types.enums import StreamEventType
from .clients import ClientRegistry
from .counters import HubCounters, resident_memory_bytes
from .stream_history import StreamHistory
from .streams import StreamManager


class StreamAnalytics:
    def __init__(
        self,
        streams: StreamManager,
        clients: ClientRegistry,
        counters: HubCounters,
        history: StreamHistory,
    ) -> None:
        self._streams = streams
        self._clients = clients
        self._counters = counters
        self._history = history

    def get_metrics(self) -> StreamMetrics:
        return StreamMetrics(
            total_streams=len(self._streams),
            active_streams=len(self._streams.list_active_streams()),
            total_clients=len(self._clients),
            events_per_second=self._counters.events_per_second(),
            average_event_size=self._counters.average_event_size(),
            memory_usage=resident_memory_bytes(),
            error_rate=self._counters.error_rate(),
            uptime=self._counters.uptime(),
            clients_by_type=self._clients.counts_by_type(),
        )

    async def get_stream_stats(self, ref: str) -> StreamStats:
        stream = self._streams.resolve(ref)
        counters = stream.counters
        return StreamStats(
            stream_id=stream.id,
            client_count=len(stream.clients),
            total_events=counters.total_events,
            events_in_last_hour=counters.last_hour.total(),
            average_event_frequency=counters.frequency(),
            largest_event_size=counters.largest_event,
            memory_usage=await self._history.usage_bytes(stream.id),
        )

    def get_event_distribution(self, start: datetime, end: datetime) -> dict[StreamEventType, int]:
        """Events published by type in ``[start, end]``, at minute resolution, last 24 h."""
        _check_range(start, end)
        return self._counters.distribution(start, end)

    def get_client_activity(self, start: datetime, end: datetime) -> list[ClientActivityReport]:
        """Clients connected at some moment in ``[start, end]``, including departed ones."""
        _check_range(start, end)
        return self._clients.activity(start, end)


def _check_range(start: datetime, end: datetime) -> None:
    if start.tzinfo is None or end.tzinfo is None:
        raise InvalidInput.single("start", "start and end must carry a time zone")
    if start > end:
        raise InvalidInput.single("start", "must not be after end")
