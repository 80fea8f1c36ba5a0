"""Free-form JSON in events and streams: only what every client reads back exactly.

Producers put arbitrary JSON in ``context``, ``parameters``, ``result``, ``details`` and
``metadata``. The hub refuses, in-process as over the wire, what would not come back out
as it went in: non-finite numbers (JSON has none; serializers write ``null`` instead) and
integers outside the 64-bit range (``orjson``, the hub's parser and many clients', reads
them as floats and loses their digits). Nesting is bounded too.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import AfterValidator

INTEGER_MIN = -(2**63)
INTEGER_MAX = 2**64 - 1
"""Integers the hub stores and sends exactly: what orjson reads and writes as integers."""
MAX_DEPTH = 64
"""Levels of nested objects and arrays inside one free-form value."""

_LEAVES = (str, bool, type(None))


def checked_json(value: Any) -> Any:
    """``value`` itself, if every number in it can be sent and read back exactly;
    raises ValueError (a validation error) otherwise."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, _LEAVES):
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                raise ValueError(f"holds {item}: numbers must be finite")
        elif isinstance(item, int):
            if not INTEGER_MIN <= item <= INTEGER_MAX:
                raise ValueError(
                    f"holds the integer {item}, outside -2^63..2^64-1 where it can be read "
                    "back exactly: send it as a string"
                )
        elif isinstance(item, dict | list | tuple):
            if depth >= MAX_DEPTH:
                raise ValueError(f"is nested deeper than {MAX_DEPTH} levels")
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children if not isinstance(child, str))
    return value


JsonObject = Annotated[dict[str, Any], AfterValidator(checked_json)]
JsonValue = Annotated[Any, AfterValidator(checked_json)]
