"""Stream configuration, sessions and clients (docs/protocol.md; the original StreamConfig)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from .base import ConfigModel, Timestamp, WireModel, deep_merge, normalize_keys
from .enums import ClientType, SessionStatus
from .filters import StreamFilter

MODULE_ID: Literal["executor-streamer"] = "executor-streamer"


class StreamPersistence(ConfigModel):
    unsupported: ClassVar[dict[str, str]] = {
        "enabled": "every stream keeps history (maxHistorySize, retentionPeriod)",
        "storageType": "every stream is stored by the hub's persistence.storageBackend",
    }

    retention_period: Annotated[int, Field(ge=1000)] = 86_400_000
    """Events older than this many milliseconds are removed by the retention task."""


class StreamConfig(ConfigModel):
    """Per-stream settings; ``defaultStreamConfig`` in the hub config is the default."""

    unsupported: ClassVar[dict[str, str]] = {
        "compressionEnabled": "HTTP compression is the hub's (compression.*); events are "
        "serialized once and sent to every client alike",
    }

    max_history_size: Annotated[int, Field(ge=1, le=10_000_000)] = 10_000
    buffer_size: Annotated[int, Field(ge=1, le=1_000_000)] = 1000
    """Bound of each subscriber's queue; a subscriber that falls further behind is dropped."""
    enable_replay: bool = True
    heartbeat_interval: Annotated[int, Field(ge=100, le=3_600_000)] = 30_000
    max_clients: Annotated[int, Field(ge=1, le=1_000_000)] = 100
    event_filters: list[StreamFilter] = Field(default_factory=list)
    """Filters applied to a client that subscribes without filters of its own."""
    persistence: StreamPersistence = Field(default_factory=StreamPersistence)

    def merged(self, partial: dict[str, Any] | None) -> StreamConfig:
        """This config with the keys of ``partial`` (camel- or snake-case) laid over it.

        Nested sections merge key by key, so ``{"persistence": {"retentionPeriod": 1000}}``
        keeps the other persistence settings.
        """
        if not partial:
            return self
        base = self.model_dump(by_alias=False)
        return StreamConfig.model_validate(deep_merge(base, normalize_keys(partial)))


class StreamClientInfo(WireModel):
    id: str
    type: ClientType
    connected_at: Timestamp
    last_ping: Timestamp
    filters: list[StreamFilter] = Field(default_factory=list)
    is_active: bool = True


class ModuleSessionInfo(WireModel):
    session_id: str
    module_id: str = MODULE_ID
    linked_workflow_session_id: str
    status: SessionStatus
    created_at: Timestamp
    last_activity: Timestamp
    metadata: dict[str, Any] = Field(default_factory=dict)


class StreamSession(ModuleSessionInfo):
    """A stream as the API shows it. ``sessionId`` is the stream id (docs/protocol.md)."""

    module_id: Literal["executor-streamer"] = MODULE_ID
    stream_id: str
    is_active: bool
    clients: list[StreamClientInfo] = Field(default_factory=list)
    config: StreamConfig
    epoch: str
    last_seq: int


class ManagerHealth(WireModel):
    """The original specification's SessionManagerHealth."""

    module_id: Literal["executor-streamer"] = MODULE_ID
    is_healthy: bool
    active_sessions: int
    total_sessions: int
    errors: list[str] = Field(default_factory=list)
    last_health_check: Timestamp
