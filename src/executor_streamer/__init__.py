"""Executor Streamer: a real-time event hub for AI-agent and browser-automation runs.

The public API is what this module exports: the in-process hub and its types, the ASGI
app over it (``create_app``), the HTTP client (``HubClient``) and every error, which the
client raises as the hub does in-process. docs/architecture.md gives a tour.
"""

from .client import HubClient
from .config import ExecutorStreamerConfig
from .core.clients import ClientSession
from .core.hub import ExecutorStreamer
from .core.lifecycle import LifecycleCallbacks
from .core.subscription import CloseReason, Subscription
from .errors import (
    BatchTooLarge,
    BodyTooLarge,
    ClientNotFound,
    ConfigError,
    EventTooLarge,
    FieldError,
    Forbidden,
    HubNotRunning,
    InvalidInput,
    InvalidStatusTransition,
    NotSubscribed,
    RateLimited,
    RemoteError,
    ReplayNotAllowed,
    ScreenshotNotFound,
    SlowConsumer,
    StorageUnavailable,
    StreamClosed,
    StreamerError,
    StreamNotFound,
    TooManyClients,
    Unauthorized,
    UnsupportedMediaType,
)
from .history.base import HistoryPage
from .logs import configure_logging
from .server import create_app
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
    "BodyTooLarge",
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
    "Forbidden",
    "HistoryFilter",
    "HistoryPage",
    "HubClient",
    "HubNotRunning",
    "InvalidInput",
    "InvalidStatusTransition",
    "LifecycleCallbacks",
    "NotSubscribed",
    "RateLimited",
    "RemoteError",
    "ReplayNotAllowed",
    "ScreenshotInfo",
    "ScreenshotNotFound",
    "SessionStatus",
    "SlowConsumer",
    "StorageUnavailable",
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
    "Unauthorized",
    "UnsupportedMediaType",
    "__version__",
    "configure_logging",
    "create_app",
]
