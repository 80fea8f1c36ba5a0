"""Analytics reports (the original StreamMetrics, StreamStats, ClientActivityReport)."""

from __future__ import annotations

from pydantic import Field

from .base import Timestamp, WireModel
from .enums import ClientType


class StreamMetrics(WireModel):
    total_streams: int
    """Streams the hub holds, open or closed."""
    active_streams: int
    total_clients: int
    events_per_second: float
    """Published events per second over the last minute."""
    average_event_size: float
    """Mean serialized size in bytes of every event published since start."""
    memory_usage: int
    """Resident memory of the process in bytes."""
    error_rate: float
    """Share of publish attempts rejected since start (0..1)."""
    uptime: float
    """Seconds since the hub started."""
    clients_by_type: dict[ClientType, int]


class StreamStats(WireModel):
    stream_id: str
    client_count: int
    total_events: int
    events_in_last_hour: int
    average_event_frequency: float
    """Events per second since the stream was created."""
    largest_event_size: int
    """Bytes, serialized."""
    memory_usage: int
    """Bytes held for this stream: retained events plus screenshots."""


class ClientActivityReport(WireModel):
    client_id: str
    client_type: ClientType
    connect_time: Timestamp
    disconnect_time: Timestamp | None = None
    events_received: int
    last_activity: Timestamp
    is_active: bool
    stream_ids: list[str] = Field(default_factory=list)
