"""Request bodies: JSON only, capped in size, numbers kept exact."""

from __future__ import annotations

import json as stdlib_json
import re
from collections.abc import Callable
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
    scope: Scope,
    receive: Receive,
    send: Send,
    limit: int,
    cors: Callable[[str | None], dict[str, str]],
) -> Receive | None:
    """``limits.maxBodyBytes`` for a request any route reads: None when it has been
    answered already (413, with the headers ``cors`` gives for the request's origin: the
    CORS middleware it bypasses would add them), else the ``receive`` to hand the app.

    A declared length over the limit is answered before anything is read. A body without
    one (chunked) is read here whole, up to the limit, before the app sees any of it: one
    over it is dropped at once and answered 413, never half-read by the app (Starlette
    reading it piecemeal and then told the client left kept the pieces alive in a
    reference cycle until a full collection: 2.3 GB under a flood, bench/README.md).
    After a 413 the server reads and drops the rest for a moment, then closes
    (``internals.BoundedHttpProtocol``), so a client that sends its body before reading
    still gets the answer."""
    headers = dict(scope["headers"])
    declared = headers.get(b"content-length")
    if declared is not None:
        if declared.isdigit() and int(declared) > limit:
            await _too_large(limit, cors, headers)(scope, receive, send)
            return None
        return receive  # the parser delivers no more than the declared length
    if b"transfer-encoding" not in headers:
        return receive  # no body
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None  # the client left: nobody to answer
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            chunks.clear()
            await _too_large(limit, cors, headers)(scope, receive, send)
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return _Replay(b"".join(chunks), receive).receive


def _too_large(
    limit: int, cors: Callable[[str | None], dict[str, str]], headers: dict[bytes, bytes]
) -> Any:
    origin = headers.get(b"origin")
    return error_response(
        BodyTooLarge(limit), cors(None if origin is None else origin.decode("latin-1"))
    )


class _Replay:
    """A body read whole, handed to the app as one message; then the server's own."""

    def __init__(self, body: bytes, receive: Receive) -> None:
        self._body: bytes | None = body
        self._receive = receive

    async def receive(self) -> Message:
        body, self._body = self._body, None
        if body is None:
            return await self._receive()
        return {"type": "http.request", "body": body, "more_body": False}
