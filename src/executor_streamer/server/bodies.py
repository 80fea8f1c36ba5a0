"""Request bodies: JSON only, capped in size, numbers kept exact."""

from __future__ import annotations

import json as stdlib_json
import re
from typing import Any

import orjson
from starlette.requests import Request

from ..errors import BodyTooLarge, InvalidInput, UnsupportedMediaType


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
