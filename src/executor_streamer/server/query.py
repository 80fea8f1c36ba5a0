"""Resume positions, event types and filters as transports read them from URLs and headers."""

from __future__ import annotations

import re

from ..errors import InvalidInput
from ..types.enums import StreamEventType
from ..types.filters import MAX_SEQ, StreamFilter


def parse_event_types(types: str, path: str = "query.types") -> list[StreamEventType]:
    """``REASONING,STATUS`` as event types; unknown or missing names are an error."""
    names = [name.strip() for name in types.split(",") if name.strip()]
    unknown = [n for n in names if n not in StreamEventType.__members__]
    if unknown or not names:
        raise InvalidInput.single(
            path, f"unknown event types: {', '.join(unknown) or '(none given)'}"
        )
    return [StreamEventType(n) for n in names]


FILTER = (
    'A CEL expression over each event, e.g. `type == "COMMAND_FAILED" && '
    'data.error.code == "TIMEOUT"` (docs/expressions.md); ANDed with `types`'
)


def filters_from_query(
    types: str | None, expression: str | None, path: str = "query.types"
) -> list[StreamFilter] | None:
    """``types=`` and ``filter=`` (an expression, docs/expressions.md) as one filter,
    both to match; None when neither is given (an empty ``filter=`` is none)."""
    if types is None and not expression:
        return None
    event_types = None if types is None else parse_event_types(types, path)
    return [StreamFilter(event_types=event_types, expression=expression or None)]


SEQ = "^[0-9]{1,19}$"
"""A seq in a URL or header: ASCII digits only (``str.isdigit()`` admits "²"), and at
most ``MAX_SEQ``, which :func:`parse_seq` checks."""
_DIGITS = re.compile(SEQ)


def parse_seq(value: str | None, path: str) -> int | None:
    """A resume position from a query string or header."""
    if value is None or value == "":
        return None
    if not _DIGITS.fullmatch(value) or int(value) > MAX_SEQ:
        raise InvalidInput.single(path, f"must be an integer from 0 to {MAX_SEQ}")
    return int(value)
