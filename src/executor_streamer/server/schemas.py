"""Request and response bodies of the REST API that are not shared types."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ..types.base import WireModel
from ..types.events import EventInput, StreamEvent
from ..types.json_values import JsonObject


class CreateStreamRequest(WireModel):
    workflow_session_id: str = Field(examples=["wf-123"])
    config: dict[str, Any] | None = Field(
        default=None,
        description="A partial StreamConfig laid over the defaults.",
        examples=[{"maxHistorySize": 5000, "persistence": {"retentionPeriod": 3600000}}],
    )
    metadata: JsonObject | None = None


class PublishBatch(WireModel):
    events: list[EventInput] = Field(max_length=100_000)


class PublishResponse(WireModel):
    events: list[StreamEvent]


class HistoryResponse(WireModel):
    events: list[StreamEvent]
    total: int


class PollResponse(WireModel):
    client_id: str
    events: list[StreamEvent]
    last_seq: int
    epoch: str
    """The epoch ``lastSeq`` belongs to: send it back as ``epoch`` with the next ``since``."""
    recovered: bool
    more: bool
    closed: bool


class ReplayAccepted(WireModel):
    client_id: str
    count: int


class TicketResponse(WireModel):
    ticket: str
    expires_in: int
    """Seconds the ticket stays good for one use."""


class ErrorBody(WireModel):
    error: dict[str, Any] = Field(
        examples=[{"code": "STREAM_NOT_FOUND", "message": "stream 'wf-9' does not exist"}]
    )
