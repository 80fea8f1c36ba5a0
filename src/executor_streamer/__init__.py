"""Executor Streamer: a real-time event hub for AI-agent and browser-automation runs.

The public API is what this module exports: the in-process hub and its types, the ASGI
app over it (``create_app``), the HTTP client (``HubClient``) and every error, which the
client raises as the hub does in-process. docs/architecture.md gives a tour.

Every name is imported when first used (PEP 562), not with the package: a producer that
imports ``HubClient`` loads an HTTP client, not the server, the storage backends or the
metrics library, and importing the package changes no other library's settings.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
        IdempotencyKeyReused,
        InvalidFilter,
        InvalidInput,
        InvalidStatusTransition,
        MemoryPressure,
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
        TooManyStreams,
        Unauthorized,
        UnsupportedMediaType,
        WidgetNotFound,
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
    "IdempotencyKeyReused",
    "InvalidFilter",
    "InvalidInput",
    "InvalidStatusTransition",
    "LifecycleCallbacks",
    "MemoryPressure",
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
    "TooManyStreams",
    "Unauthorized",
    "UnsupportedMediaType",
    "WidgetNotFound",
    "__version__",
    "configure_logging",
    "create_app",
]

# Where each public name lives; tests/test_package.py checks it against __all__ and the
# imports above.
_EXPORTS: dict[str, str] = {
    "BatchTooLarge": ".errors",
    "BodyTooLarge": ".errors",
    "ClientActivityReport": ".types",
    "ClientNotFound": ".errors",
    "ClientSession": ".core.clients",
    "ClientType": ".types",
    "CloseReason": ".core.subscription",
    "CommandAction": ".types",
    "CommandStatus": ".types",
    "ConfigError": ".errors",
    "ErrorContext": ".types",
    "EventInput": ".types",
    "EventTooLarge": ".errors",
    "ExecutorStreamer": ".core.hub",
    "ExecutorStreamerConfig": ".config",
    "FieldError": ".errors",
    "Forbidden": ".errors",
    "HistoryFilter": ".types",
    "HistoryPage": ".history.base",
    "HubClient": ".client",
    "HubNotRunning": ".errors",
    "InvalidFilter": ".errors",
    "InvalidInput": ".errors",
    "InvalidStatusTransition": ".errors",
    "LifecycleCallbacks": ".core.lifecycle",
    "NotSubscribed": ".errors",
    "RateLimited": ".errors",
    "RemoteError": ".errors",
    "ReplayNotAllowed": ".errors",
    "ScreenshotInfo": ".types",
    "ScreenshotNotFound": ".errors",
    "WidgetNotFound": ".errors",
    "SessionStatus": ".types",
    "SlowConsumer": ".errors",
    "StorageUnavailable": ".errors",
    "StreamClosed": ".errors",
    "StreamConfig": ".types",
    "StreamEvent": ".types",
    "StreamEventType": ".types",
    "StreamFilter": ".types",
    "StreamMetrics": ".types",
    "StreamNotFound": ".errors",
    "StreamSession": ".types",
    "StreamStats": ".types",
    "StreamerError": ".errors",
    "Subscription": ".core.subscription",
    "TimeRange": ".types",
    "TooManyClients": ".errors",
    "TooManyStreams": ".errors",
    "MemoryPressure": ".errors",
    "IdempotencyKeyReused": ".errors",
    "Unauthorized": ".errors",
    "UnsupportedMediaType": ".errors",
    "configure_logging": ".logs",
    "create_app": ".server",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
