"""Executor Streamer: a real-time event hub for AI-agent and browser-automation runs.

The public API is what this module exports; see DESIGN.md §4 for a tour.
"""

from .config import ExecutorStreamerConfig
from .core.clients import ClientSession
from .core.hub import ExecutorStreamer
from .core.lifecycle import LifecycleCallbacks
from .core.subscription import CloseReason, Subscription
from .errors import (
    BatchTooLarge,
    ClientNotFound,
    ConfigError,
    EventTooLarge,
    FieldError,
    HubNotRunning,
    InvalidInput,
    InvalidStatusTransition,
    ReplayNotAllowed,
    ScreenshotNotFound,
    SlowConsumer,
    StreamClosed,
    StreamerError,
    StreamNotFound,
    TooManyClients,
)
from .history.base import HistoryPage
from .logs import configure_logging
from .types import (
    ClientActivityReport,
    ClientType,
    CommandAction,
    CommandStatus,
    ErrorContext,
    EventInput,
    HistoryFilter,
    ScreenshotInfo,
    SessionStatus,
    StreamConfig,
    StreamEvent,
    StreamEventType,
    StreamFilter,
    StreamMetrics,
    StreamSession,
    StreamStats,
    TimeRange,
)

__version__ = "0.1.0"

__all__ = [
    "BatchTooLarge",
    "ClientActivityReport",
    "ClientNotFound",
    "ClientSession",
    "ClientType",
    "CloseReason",
    "CommandAction",
    "CommandStatus",
    "ConfigError",
    "ErrorContext",
    "EventInput",
    "EventTooLarge",
    "ExecutorStreamer",
    "ExecutorStreamerConfig",
    "FieldError",
    "HistoryFilter",
    "HistoryPage",
    "HubNotRunning",
    "InvalidInput",
    "InvalidStatusTransition",
    "LifecycleCallbacks",
    "ReplayNotAllowed",
    "ScreenshotInfo",
    "ScreenshotNotFound",
    "SessionStatus",
    "SlowConsumer",
    "StreamClosed",
    "StreamConfig",
    "StreamEvent",
    "StreamEventType",
    "StreamFilter",
    "StreamMetrics",
    "StreamNotFound",
    "StreamSession",
    "StreamStats",
    "StreamerError",
    "Subscription",
    "TimeRange",
    "TooManyClients",
    "__version__",
    "configure_logging",
]
