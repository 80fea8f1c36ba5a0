"""Error codes to HTTP statuses and WebSocket close codes, in one table each."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.websockets import WebSocket

from ..core.subscription import CloseReason
from ..errors import (
    FieldError,
    InvalidInput,
    MemoryPressure,
    RateLimited,
    StreamerError,
    Unauthorized,
)

HTTP_STATUS: dict[str, int] = {
    "VALIDATION_ERROR": 422,
    "UNAUTHORIZED": 401,
    "FORBIDDEN": 403,
    "EVENT_TOO_LARGE": 413,
    "BATCH_TOO_LARGE": 413,
    "BODY_TOO_LARGE": 413,
    "UNSUPPORTED_MEDIA_TYPE": 415,
    "STREAM_NOT_FOUND": 404,
    "CLIENT_NOT_FOUND": 404,
    "SCREENSHOT_NOT_FOUND": 404,
    "WIDGET_NOT_FOUND": 404,
    "NOT_FOUND": 404,
    "METHOD_NOT_ALLOWED": 405,
    "STREAM_CLOSED": 409,
    "INVALID_STATUS_TRANSITION": 409,
    "REPLAY_NOT_ALLOWED": 409,
    "NOT_SUBSCRIBED": 409,
    "SLOW_CONSUMER": 409,
    "RATE_LIMITED": 429,
    "TOO_MANY_CLIENTS": 503,
    "TOO_MANY_STREAMS": 503,
    "IDEMPOTENCY_KEY_REUSED": 422,
    "INVALID_FILTER": 422,
    "MEMORY_PRESSURE": 503,
    "HUB_NOT_RUNNING": 503,
    "STORAGE_UNAVAILABLE": 503,
    "CONFIG_ERROR": 500,
    "INTERNAL_ERROR": 500,
}

# WebSocket close codes (docs/protocol.md).
CLOSE_OPERATOR = 4000
CLOSE_UNAUTHORIZED = 4001
CLOSE_FORBIDDEN = 4003
CLOSE_STREAM_NOT_FOUND = 4004
CLOSE_SLOW_CONSUMER = 4008
CLOSE_STREAM_CLOSED = 4010
CLOSE_RATE_LIMITED = 4029
CLOSE_TOO_MANY_CLIENTS = 1013
CLOSE_SHUTDOWN = 1001
CLOSE_RESET = 1012
CLOSE_INTERNAL_ERROR = 1011

CLOSE_FOR_REASON: dict[CloseReason, tuple[int, str]] = {
    CloseReason.DISCONNECTED: (CLOSE_OPERATOR, "disconnected by an operator"),
    CloseReason.IDLE: (CLOSE_OPERATOR, "no sign of life within the idle timeout"),
    CloseReason.SLOW_CONSUMER: (CLOSE_SLOW_CONSUMER, "slow consumer: resume from the last seq"),
    CloseReason.STREAM_CLOSED: (CLOSE_STREAM_CLOSED, "stream closed"),
    CloseReason.SHUTDOWN: (CLOSE_SHUTDOWN, "server shutting down"),
    CloseReason.UNSUBSCRIBED: (1000, "closed"),
    CloseReason.FAILED: (CLOSE_INTERNAL_ERROR, "the server failed: reconnect to resume"),
    CloseReason.EXPIRED: (CLOSE_UNAUTHORIZED, "credential expired: reconnect with a new one"),
    CloseReason.RESET: (CLOSE_RESET, "the stream began a new epoch: reconnect to resume"),
}

MAX_CLOSE_REASON_BYTES = 123
"""A close frame's payload is at most 125 bytes, two of them the code (RFC 6455 §5.5)."""


def fit_close_reason(message: str) -> str:
    """``message`` cut to fit a close frame (a longer one is a protocol error, and the
    close would go out with no code at all), never inside a UTF-8 sequence."""
    return message.encode()[:MAX_CLOSE_REASON_BYTES].decode(errors="ignore")


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> bytes:
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = details
    return orjson.dumps({"error": error})


def error_response(exc: StreamerError, headers: dict[str, str] | None = None) -> Response:
    return Response(
        error_body(exc.code, exc.message, exc.details),
        status_code=HTTP_STATUS.get(exc.code, 500),
        media_type="application/json",
        headers={**(headers or {}), **error_headers(exc)},
    )


def error_headers(exc: StreamerError) -> dict[str, str]:
    """What an HTTP answer to ``exc`` must say besides its body (RFC 6750, RFC 9110)."""
    if isinstance(exc, Unauthorized):
        return {"www-authenticate": "Bearer"}
    if isinstance(exc, RateLimited | MemoryPressure):
        return {"retry-after": str(exc.retry_after)}
    return {}


async def deny_upgrade(websocket: WebSocket, exc: StreamerError) -> None:
    """Refuse an upgrade with the HTTP answer to ``exc`` (401, 403, 429)."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(error_response(exc))
    else:
        await websocket.close()  # 403 is all an ASGI server without the extension can say


def install_error_handlers(app: FastAPI) -> None:
    """Every error leaves the server as ``{"error": {"code", "message", "details?"}}``."""

    async def on_streamer_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StreamerError)
        return error_response(exc)

    async def on_request_validation(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = [FieldError(".".join(str(p) for p in e["loc"]), e["msg"]) for e in exc.errors()]
        return error_response(InvalidInput(errors))

    async def on_http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(exc.status_code, "HTTP_ERROR")
        return Response(
            error_body(code, str(exc.detail)),
            status_code=exc.status_code,
            media_type="application/json",
            headers=getattr(exc, "headers", None),
        )

    app.add_exception_handler(StreamerError, on_streamer_error)
    app.add_exception_handler(RequestValidationError, on_request_validation)
    app.add_exception_handler(HTTPException, on_http_error)
