"""Request bodies: JSON only, capped in size, numbers kept exact."""

from __future__ import annotations

import json as stdlib_json
import re
from typing import Any

import orjson
from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from ..errors import BodyTooLarge, InvalidInput, UnsupportedMediaType
from .errors import error_response


async def json_body(request: Request, limit: int) -> Any:
    """The request body parsed as JSON, refusing bodies over ``limit`` bytes."""
    require_json(request)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    body = b"".join(chunks)
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput.single("(body)", f"not valid JSON: {exc}") from None
    if _LONG_NUMBER.search(body):
        # orjson reads an integer beyond 64 bits as a float, silently losing digits; the
        # standard parser keeps it whole, so validation can refuse it (types.json_values).
        try:
            document = stdlib_json.loads(body)
        except RecursionError:  # orjson takes 1024 levels, the standard parser fewer
            raise InvalidInput.single("(body)", "nested too deeply") from None
    return document


_LONG_NUMBER = re.compile(rb"[0-9]{19,}")
"""Nineteen digits in a row: a body that may hold an integer beyond orjson's 64 bits."""


async def json_content(request: Request) -> None:
    """Routes with a JSON body: a body that is there must say it is JSON. (Async: FastAPI
    runs a plain function dependency in a worker thread, a hop per request.)"""
    if request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers:
        require_json(request)


def require_json(request: Request) -> None:
    """Refuse a body that does not say it is JSON (415). Besides clarity, this keeps
    browsers' cross-origin "simple" requests (``text/plain``, sent without a CORS
    preflight) from publishing or changing anything."""
    content_type = request.headers.get("content-type")
    media_type = (content_type or "").partition(";")[0].strip().lower()
    if media_type != "application/json":
        raise UnsupportedMediaType(content_type)


async def capped_body(
    scope: Scope, receive: Receive, send: Send, limit: int
) -> tuple[Receive, Send] | None:
    """``limits.maxBodyBytes`` for a request any route reads: None when it has been
    answered 413 already (its declared length is over: the connection closes, and the
    body is never read), else the ``receive`` and ``send`` to hand the app; they answer
    413 themselves once a body without a declared length goes over (the app then sees
    the client gone, and what it sends after is dropped). The rest of such a body is read
    and dropped, so a client that sends it all before reading still gets the answer."""
    headers = dict(scope["headers"])
    declared = headers.get(b"content-length")
    if declared is not None:
        if declared.isdigit() and int(declared) > limit:
            await _too_large(limit)(scope, receive, send)
            return None
        return receive, send  # the parser delivers no more than the declared length
    if b"transfer-encoding" not in headers:
        return receive, send  # no body
    counting = _CountingReceive(scope, receive, send, limit)
    return counting.receive, counting.send


def _too_large(limit: int, close: bool = True) -> Any:
    return error_response(BodyTooLarge(limit), {"connection": "close"} if close else {})


class _CountingReceive:
    def __init__(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        self._scope, self._receive, self._send, self._limit = scope, receive, send, limit
        self._size = 0
        self._refused = False
        self._started = False

    async def receive(self) -> Message:
        if self._refused:
            return {"type": "http.disconnect"}
        message = await self._receive()
        if message["type"] == "http.request":
            self._size += len(message.get("body", b""))
            if self._size > self._limit:
                self._refused = True
                if not self._started:
                    answer = _too_large(self._limit, close=False)
                    await answer(self._scope, self._no_more, self._send)
                return {"type": "http.disconnect"}
        return message

    async def send(self, message: Message) -> None:
        if self._refused:
            return  # the app's answer to a body it never got whole
        self._started = True
        await self._send(message)

    async def _no_more(self) -> Message:
        return {"type": "http.disconnect"}
