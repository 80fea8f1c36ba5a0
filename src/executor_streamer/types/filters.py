"""Subscription and history filters (docs/protocol.md)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Self

from pydantic import Field, model_validator

from .base import Timestamp, WireModel
from .enums import StreamEventType
from .events import StreamEvent

MAX_HISTORY_LIMIT = 10_000
MAX_SEQ = 2**63 - 1
"""The largest seq, resume position or offset: a signed 64-bit integer, as SQL keeps seqs."""
Seq = Annotated[int, Field(ge=0, le=MAX_SEQ)]


class TimeRange(WireModel):
    start: Timestamp
    end: Timestamp

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.start > self.end:
            raise ValueError("start must not be after end")
        return self


class StreamFilter(WireModel):
    """Fields inside one filter must all match; a list of filters matches if any does.

    ``custom_filter`` exists in the Python API only and is never serialized.
    """

    event_types: list[StreamEventType] | None = None
    session_ids: list[Annotated[str, Field(strict=True, min_length=1)]] | None = None
    time_range: TimeRange | None = None
    expression: Annotated[str, Field(strict=True, min_length=1)] | None = None
    """A CEL expression over the event (docs/expressions.md), ANDed with the fields above;
    compiled once when the filter is taken (``INVALID_FILTER`` if it does not compile)."""
    custom_filter: Callable[[StreamEvent], bool] | None = Field(default=None, exclude=True)

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(
            mode="json", by_alias=True, exclude_none=True, exclude={"custom_filter"}
        )


class HistoryFilter(WireModel):
    """A history query. Results ascend by seq; ``total`` ignores limit and offset."""

    event_types: list[StreamEventType] | None = None
    limit: Annotated[int, Field(ge=1, le=MAX_HISTORY_LIMIT)] = 100
    offset: Seq = 0
    start_time: Timestamp | None = None
    """Inclusive."""
    end_time: Timestamp | None = None
    """Inclusive."""
    search_text: Annotated[str, Field(min_length=1, max_length=1000)] | None = None
    """Case-insensitive substring of the event's ``data`` as JSON text."""
    after_seq: Seq | None = None
    expression: Annotated[str, Field(strict=True, min_length=1)] | None = None
    """A CEL expression over the event (docs/expressions.md), ANDed with the rest: the
    backend answers the rest, the hub evaluates the expression on what remains."""

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.start_time and self.end_time and self.start_time > self.end_time:
            raise ValueError("startTime must not be after endTime")
        return self
