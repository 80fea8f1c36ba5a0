"""The messages a WebSocket client sends (docs/protocol.md), validated: each a pydantic
model, and :func:`parse_message` to turn a text frame into one, or say why it is not."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.alias_generators import to_camel

from ..errors import InvalidInput, field_errors
from ..security.authenticator import MAX_CREDENTIAL_CHARS
from ..types.filters import HistoryFilter, Seq, StreamFilter

RequestId = Annotated[str, Field(max_length=128)] | Annotated[int, Field(ge=-(2**63), lt=2**63)]
"""Echoed in the reply: bounded, so that a small request cannot ask for a large answer."""


_request_ids: TypeAdapter[str | int] = TypeAdapter(RequestId)


def _echoable(value: object) -> str | int | None:
    """A malformed message's requestId, if it is one that may be echoed."""
    try:
        return _request_ids.validate_python(value, strict=True)
    except ValidationError:
        return None


class ClientMessage(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True, extra="forbid")
    type: str
    request_id: RequestId | None = None


class Subscribe(ClientMessage):
    type: Literal["subscribe"]
    stream_id: str = Field(min_length=1)
    filters: list[StreamFilter] | None = None
    replay_options: HistoryFilter | None = None
    since: Seq | None = None
    epoch: str | None = None
    batch: bool = False


class Unsubscribe(ClientMessage):
    type: Literal["unsubscribe"]
    stream_id: str = Field(min_length=1)


class Replay(ClientMessage):
    type: Literal["replay"]
    stream_id: str = Field(min_length=1)
    replay_options: HistoryFilter = Field(default_factory=HistoryFilter)


class Filter(ClientMessage):
    type: Literal["filter"]
    stream_id: str = Field(min_length=1)
    filters: list[StreamFilter] | None = None


class Ping(ClientMessage):
    type: Literal["ping"]


class Auth(ClientMessage):
    type: Literal["auth"]
    token: str = Field(min_length=1, max_length=MAX_CREDENTIAL_CHARS)


MESSAGES: dict[str, type[ClientMessage]] = {
    "subscribe": Subscribe,
    "unsubscribe": Unsubscribe,
    "replay": Replay,
    "filter": Filter,
    "ping": Ping,
    "auth": Auth,
}


@dataclass(frozen=True, slots=True)
class Invalid:
    """Why a text frame is not a message, and the request id to answer with, if any."""

    message: str
    request_id: str | int | None = None
    details: dict[str, Any] | None = None


def parse_message(text: str | None) -> ClientMessage | Invalid:
    """A client message, validated, or why it is not one."""
    if text is None:
        return Invalid("messages must be JSON text frames")
    try:
        raw = orjson.loads(text)
    except orjson.JSONDecodeError:
        return Invalid("not valid JSON")
    request_id = _echoable(raw.get("requestId")) if isinstance(raw, dict) else None
    kind = raw.get("type") if isinstance(raw, dict) else None
    model = MESSAGES.get(kind) if isinstance(kind, str) else None
    if model is None:
        return Invalid(f"type must be one of: {', '.join(MESSAGES)}", request_id)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        error = InvalidInput(field_errors(exc))
        return Invalid(error.message, request_id, error.details)
