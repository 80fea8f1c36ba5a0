"""Errors raised by the hub.

Every error carries a stable ``code`` (the string clients see in
``{"error": {"code", "message", "details"}}`` and in WebSocket ``error`` frames);
transports map codes to HTTP statuses and close codes in one table.

    StreamerError
    ├── InvalidInput                 VALIDATION_ERROR   bad event, filter or argument
    │   ├── EventTooLarge            EVENT_TOO_LARGE    over limits.maxEventBytes
    │   └── BatchTooLarge            BATCH_TOO_LARGE    over limits.maxBatchSize
    ├── InvalidFilter                INVALID_FILTER     a filter expression that does not compile
    ├── BodyTooLarge                 BODY_TOO_LARGE     a request body over the limit
    ├── UnsupportedMediaType         UNSUPPORTED_MEDIA_TYPE a body that is not JSON
    ├── IdempotencyKeyReused         IDEMPOTENCY_KEY_REUSED a key sent again with other events
    ├── ConfigError                  CONFIG_ERROR       an invalid configuration value
    ├── Unauthorized                 UNAUTHORIZED       no credential, or a bad one
    ├── Forbidden                    FORBIDDEN          a good credential, not allowed this
    ├── RateLimited                  RATE_LIMITED       over a rate limit; retry after a while
    ├── StreamNotFound               STREAM_NOT_FOUND
    ├── StreamClosed                 STREAM_CLOSED      publish to a closed stream
    ├── InvalidStatusTransition      INVALID_STATUS_TRANSITION
    ├── ClientNotFound               CLIENT_NOT_FOUND
    ├── NotSubscribed                NOT_SUBSCRIBED     client has no subscription there
    ├── TooManyClients               TOO_MANY_CLIENTS   per-stream or global limit reached
    ├── TooManyStreams               TOO_MANY_STREAMS   limits.maxStreams ACTIVE streams held
    ├── MemoryPressure               MEMORY_PRESSURE    limits.maxMemoryBytes spent; retry later
    ├── SlowConsumer                 SLOW_CONSUMER      a subscriber's queue overflowed
    ├── ReplayNotAllowed             REPLAY_NOT_ALLOWED disabled, or asked of a poller
    ├── ScreenshotNotFound           SCREENSHOT_NOT_FOUND
    ├── WidgetNotFound               WIDGET_NOT_FOUND
    ├── StorageUnavailable           STORAGE_UNAVAILABLE the history backend failed
    ├── HubNotRunning                HUB_NOT_RUNNING    used before start() or after stop()
    └── RemoteError                  (the server's)     an answer whose code has no class here

Over the wire, ``HubClient`` raises these same classes, rebuilt from the server's code
(:func:`error_from_wire`): ``StreamNotFound`` is ``StreamNotFound`` in-process and over HTTP.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import ValidationError


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem with one input field.

    ``path`` is the dotted wire (camelCase) path of the field, e.g. ``data.confidence``;
    ``index`` is the event's position when the input was a batch.
    """

    path: str
    message: str
    index: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "message": self.message}
        if self.index is not None:
            out["index"] = self.index
        return out


class StreamerError(Exception):
    """Base of every error the hub raises on purpose."""

    code: ClassVar[str] = "INTERNAL_ERROR"
    status: int | None = None
    """The HTTP status, when the error came from a server's answer."""

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}

    def to_dict(self) -> dict[str, Any]:
        """The ``error`` object of the wire format."""
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            out["details"] = self.details
        return out


class InvalidInput(StreamerError):
    """Input that breaks a rule of docs/protocol.md; ``errors`` names every offending field."""

    code = "VALIDATION_ERROR"

    def __init__(self, errors: Sequence[FieldError], message: str | None = None) -> None:
        self.errors = list(errors)
        if message is None:
            message = "; ".join(_describe(e) for e in self.errors) or "invalid input"
        super().__init__(message, {"errors": [e.to_dict() for e in self.errors]})

    @classmethod
    def single(cls, path: str, message: str, index: int | None = None) -> InvalidInput:
        return cls([FieldError(path, message, index)])

    @classmethod
    def from_pydantic(
        cls, exc: ValidationError, prefix: str = "", index: int | None = None
    ) -> InvalidInput:
        return cls(field_errors(exc, prefix, index))


class EventTooLarge(InvalidInput):
    code = "EVENT_TOO_LARGE"


class BatchTooLarge(InvalidInput):
    code = "BATCH_TOO_LARGE"


class InvalidFilter(StreamerError):
    """A filter expression (docs/expressions.md) that is too long or does not compile.
    ``details``: ``message`` (what is wrong) and, where the compiler says, ``position``
    (the offset of the problem in the expression, from 0) with its ``line`` and
    ``column`` (from 1)."""

    code = "INVALID_FILTER"

    def __init__(self, message: str, position: tuple[int, int, int] | None = None) -> None:
        details: dict[str, Any] = {"message": message}
        if position is not None:
            details["position"], details["line"], details["column"] = position
        super().__init__(f"invalid filter expression: {message}", details)


class BodyTooLarge(StreamerError):
    code = "BODY_TOO_LARGE"

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body over {limit} bytes", {"limit": limit})


class UnsupportedMediaType(StreamerError):
    code = "UNSUPPORTED_MEDIA_TYPE"

    def __init__(self, content_type: str | None) -> None:
        super().__init__(
            f"request bodies must be application/json, not {content_type or 'untyped'}",
            {"contentType": content_type},
        )


class IdempotencyKeyReused(StreamerError):
    """An ``Idempotency-Key`` sent again within its lifetime with other events than the
    first time: nothing is stored (a retry must repeat its request exactly)."""

    code = "IDEMPOTENCY_KEY_REUSED"


class ConfigError(StreamerError):
    """An invalid configuration value; the message names the key."""

    code = "CONFIG_ERROR"


class Unauthorized(StreamerError):
    """No credential, or one that is not valid. The message never says which check
    failed; ``reason`` does, for the server's log only."""

    code = "UNAUTHORIZED"
    reason = ""

    def __init__(
        self, message: str = "a valid credential is required", *, reason: str = ""
    ) -> None:
        super().__init__(message)
        self.reason = reason or message


class Forbidden(StreamerError):
    code = "FORBIDDEN"

    def __init__(self, message: str = "this credential does not allow that") -> None:
        super().__init__(message)


class RateLimited(StreamerError):
    """Over a rate limit (docs/configuration.md, ``security.rateLimiting``); try again in
    ``retry_after`` seconds (HTTP ``Retry-After``)."""

    code = "RATE_LIMITED"

    def __init__(self, message: str, retry_after: int = 1) -> None:
        retry_after = max(1, retry_after)
        super().__init__(message, {"retryAfter": retry_after})
        self.retry_after = retry_after


class StreamNotFound(StreamerError):
    code = "STREAM_NOT_FOUND"

    def __init__(self, stream: str) -> None:
        super().__init__(f"stream {stream!r} does not exist", {"stream": stream})


class StreamClosed(StreamerError):
    code = "STREAM_CLOSED"

    def __init__(self, stream: str) -> None:
        super().__init__(f"stream {stream!r} is closed", {"stream": stream})


class InvalidStatusTransition(StreamerError):
    code = "INVALID_STATUS_TRANSITION"


class ClientNotFound(StreamerError):
    code = "CLIENT_NOT_FOUND"

    def __init__(self, client_id: str) -> None:
        super().__init__(f"client {client_id!r} is not connected", {"clientId": client_id})


class NotSubscribed(StreamerError):
    code = "NOT_SUBSCRIBED"

    def __init__(self, stream: str) -> None:
        super().__init__(f"not subscribed to stream {stream!r}", {"streamId": stream})


class TooManyClients(StreamerError):
    code = "TOO_MANY_CLIENTS"


class TooManyStreams(StreamerError):
    code = "TOO_MANY_STREAMS"


class MemoryPressure(StreamerError):
    """The memory budget is spent and nothing is left to evict; publishing may work again
    after ``retry_after`` seconds (HTTP ``Retry-After``)."""

    code = "MEMORY_PRESSURE"

    def __init__(self, message: str, retry_after: int = 5) -> None:
        super().__init__(message, {"retryAfter": retry_after})
        self.retry_after = retry_after


class SlowConsumer(StreamerError):
    """The subscriber fell ``bufferSize`` events behind; resume from ``last_seq``."""

    code = "SLOW_CONSUMER"

    def __init__(self, last_seq: int) -> None:
        super().__init__(
            f"subscriber fell too far behind; resume with since={last_seq}",
            {"lastSeq": last_seq},
        )
        self.last_seq = last_seq


class ReplayNotAllowed(StreamerError):
    code = "REPLAY_NOT_ALLOWED"


class ScreenshotNotFound(StreamerError):
    code = "SCREENSHOT_NOT_FOUND"


class WidgetNotFound(StreamerError):
    """No dashboard widget at that index (``viewer.dashboard.widgets``)."""

    code = "WIDGET_NOT_FOUND"


class StorageUnavailable(StreamerError):
    """The backend could not be reached or failed; nothing was half-written."""

    code = "STORAGE_UNAVAILABLE"


class HubNotRunning(StreamerError):
    code = "HUB_NOT_RUNNING"


class RemoteError(StreamerError):
    """A server's error answer whose code names no class here: an HTTP-level one
    (``NOT_FOUND`` for an unknown route, ``METHOD_NOT_ALLOWED``) or a newer hub's."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details)
        self.remote_code = code

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "code": self.remote_code}


def error_from_wire(
    code: str, message: str, details: dict[str, Any] | None, status: int | None = None
) -> StreamerError:
    """The error a server answered with ``{"error": {code, message, details}}``, as the
    class the hub raises in-process for that code."""
    cls = _BY_CODE.get(code)
    if cls is None:
        error: StreamerError = RemoteError(code, message, details)
    else:
        error = cls.__new__(cls)
        StreamerError.__init__(error, message, details)
        if isinstance(error, InvalidInput):
            error.errors = [
                FieldError(str(e.get("path", "")), str(e.get("message", "")), e.get("index"))
                for e in error.details.get("errors", [])
                if isinstance(e, dict)
            ]
        elif isinstance(error, SlowConsumer):
            error.last_seq = int(error.details.get("lastSeq", 0))
        elif isinstance(error, RateLimited | MemoryPressure):
            error.retry_after = int(error.details.get("retryAfter", 1))
        elif isinstance(error, Unauthorized):
            error.reason = message
    error.status = status
    return error


def _with_codes(cls: type[StreamerError]) -> list[type[StreamerError]]:
    found = [cls]
    for sub in cls.__subclasses__():
        found += _with_codes(sub)
    return found


def field_errors(
    exc: ValidationError, prefix: str = "", index: int | None = None
) -> list[FieldError]:
    """Turn a pydantic error into FieldErrors with dotted paths under ``prefix``."""
    out = []
    for err in exc.errors(include_url=False):
        path = _join_path(prefix, err["loc"])
        out.append(FieldError(path or "(root)", err["msg"], index))
    return out


def _join_path(prefix: str, loc: Iterable[int | str]) -> str:
    parts = [prefix] if prefix else []
    for item in loc:
        # Pydantic puts the tag of a function validator into loc; it is not a field.
        if isinstance(item, str) and item.startswith("function-"):
            continue
        parts.append(f"[{item}]" if isinstance(item, int) else item)
    return ".".join(parts).replace(".[", "[")


def _describe(error: FieldError) -> str:
    where = f"events[{error.index}]." if error.index is not None else ""
    return f"{where}{error.path}: {error.message}"


__all__ = [
    "BatchTooLarge",
    "BodyTooLarge",
    "ClientNotFound",
    "ConfigError",
    "EventTooLarge",
    "FieldError",
    "Forbidden",
    "HubNotRunning",
    "IdempotencyKeyReused",
    "InvalidFilter",
    "InvalidInput",
    "InvalidStatusTransition",
    "MemoryPressure",
    "NotSubscribed",
    "RateLimited",
    "RemoteError",
    "ReplayNotAllowed",
    "ScreenshotNotFound",
    "SlowConsumer",
    "StorageUnavailable",
    "StreamClosed",
    "StreamNotFound",
    "StreamerError",
    "TooManyClients",
    "TooManyStreams",
    "Unauthorized",
    "UnsupportedMediaType",
    "WidgetNotFound",
    "error_from_wire",
    "field_errors",
]


_BY_CODE: dict[str, type[StreamerError]] = {
    cls.code: cls for cls in _with_codes(StreamerError) if cls is not RemoteError
}
