"""The shared types of docs/protocol.md as pydantic models (camelCase on the wire)."""

from .analytics import ClientActivityReport, StreamMetrics, StreamStats
from .base import Timestamp, WireModel, format_timestamp, utc_now
from .enums import ClientType, CommandAction, CommandStatus, SessionStatus, StreamEventType
from .events import (
    CommandCompletedData,
    CommandFailedData,
    CommandStartedData,
    ErrorContext,
    EventInput,
    ReasoningData,
    ScreenshotInfo,
    ScreenshotUpload,
    StatusData,
    StreamEvent,
    StreamEventData,
    VariableUpdateData,
)
from .filters import HistoryFilter, StreamFilter, TimeRange
from .streams import (
    ModuleSessionInfo,
    StreamClientInfo,
    StreamConfig,
    StreamPersistence,
    StreamSession,
)

__all__ = [
    "ClientActivityReport",
    "ClientType",
    "CommandAction",
    "CommandCompletedData",
    "CommandFailedData",
    "CommandStartedData",
    "CommandStatus",
    "ErrorContext",
    "EventInput",
    "HistoryFilter",
    "ModuleSessionInfo",
    "ReasoningData",
    "ScreenshotInfo",
    "ScreenshotUpload",
    "SessionStatus",
    "StatusData",
    "StreamClientInfo",
    "StreamConfig",
    "StreamEvent",
    "StreamEventData",
    "StreamEventType",
    "StreamFilter",
    "StreamMetrics",
    "StreamPersistence",
    "StreamSession",
    "StreamStats",
    "TimeRange",
    "Timestamp",
    "VariableUpdateData",
    "WireModel",
    "format_timestamp",
    "utc_now",
]
