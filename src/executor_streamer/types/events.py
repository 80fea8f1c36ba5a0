"""Stream events and their data, one model per event type (docs/protocol.md).

Scalar fields are strict: ``"confidence": "0.5"`` is a wrong type, not a number.
Enums accept their wire strings.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, ValidatorFunctionWrapHandler, field_validator

from .base import Timestamp, WireModel
from .enums import CommandAction, StreamEventType
from .internals import construct_trusted
from .json_values import JsonObject, JsonValue

Text = Annotated[str, Field(strict=True)]
Name = Annotated[str, Field(strict=True, min_length=1, max_length=256)]
Identifier = Annotated[
    str, Field(strict=True, min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")
]
"""An id (command, screenshot, event): no NUL or other control characters, which ids end
up in logs, URLs and headers where they do harm."""
Duration = Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False)]
Dimension = Annotated[int, Field(strict=True, ge=1, le=100_000)]

ImageMimeType = Literal["image/png", "image/jpeg", "image/webp"]


class ErrorContext(WireModel):
    code: Name
    message: Text
    details: JsonObject | None = None
    stack: Text | None = None
    recoverable: Annotated[bool, Field(strict=True)] = False
    command_name: Name | None = None


class ScreenshotInfo(WireModel):
    """A stored screenshot: the event carries this, never the image bytes."""

    screenshot_id: Identifier
    mime_type: ImageMimeType
    width: Dimension | None = None
    height: Dimension | None = None
    size_bytes: Annotated[int, Field(strict=True, ge=0)]
    sha256: Annotated[str, Field(strict=True, pattern=r"^[0-9a-f]{64}$")]
    url: Text
    caption: Text | None = None
    command_id: Identifier | None = None
    page_url: Text | None = None


class ScreenshotFields(WireModel):
    """What a producer says about a screenshot besides the image itself."""

    mime_type: ImageMimeType = "image/png"
    width: Dimension | None = None
    height: Dimension | None = None
    caption: Text | None = None
    command_id: Identifier | None = None
    page_url: Text | None = None


class ScreenshotUpload(ScreenshotFields):
    """SCREENSHOT data as a producer sends it over the wire: the image as base64."""

    image: Annotated[str, Field(strict=True, min_length=1)]


class ReasoningData(WireModel):
    thought: Text
    confidence: Annotated[float, Field(strict=True, ge=0, le=1, allow_inf_nan=False)]
    reasoning_type: Name
    context: JsonObject | None = None


class CommandStartedData(WireModel):
    # Optional on input; the publisher assigns one before the event is stored.
    command_id: Identifier | None = None
    command_name: Name
    action: CommandAction
    parameters: JsonObject = Field(default_factory=dict)
    status: Literal["RUNNING"] = "RUNNING"


class CommandCompletedData(WireModel):
    command_id: Identifier | None = None
    command_name: Name
    result: JsonValue = None
    duration: Duration
    status: Literal["COMPLETED"] = "COMPLETED"


class CommandFailedData(WireModel):
    command_id: Identifier | None = None
    command_name: Name
    error: ErrorContext
    duration: Duration
    status: Literal["FAILED"] = "FAILED"


class VariableUpdateData(WireModel):
    name: Name
    value: Text
    previous_value: Text | None = None


class StatusData(WireModel):
    status_type: Name
    status: Name
    message: Text | None = None


StreamEventData = (
    ReasoningData
    | CommandStartedData
    | CommandCompletedData
    | CommandFailedData
    | ScreenshotInfo
    | VariableUpdateData
    | StatusData
    | ErrorContext
)

# The stored shape of ``data`` for each event type.
DATA_MODELS: dict[StreamEventType, type[WireModel]] = {
    StreamEventType.REASONING: ReasoningData,
    StreamEventType.COMMAND_STARTED: CommandStartedData,
    StreamEventType.COMMAND_COMPLETED: CommandCompletedData,
    StreamEventType.COMMAND_FAILED: CommandFailedData,
    StreamEventType.SCREENSHOT: ScreenshotInfo,
    StreamEventType.VARIABLE_UPDATE: VariableUpdateData,
    StreamEventType.STATUS: StatusData,
    StreamEventType.ERROR: ErrorContext,
}

# What a producer sends as ``data``: the stored shape, except screenshots carry bytes.
INPUT_DATA_MODELS: dict[StreamEventType, type[WireModel]] = {
    **DATA_MODELS,
    StreamEventType.SCREENSHOT: ScreenshotUpload,
}

COMMAND_EVENT_TYPES = frozenset(
    {
        StreamEventType.COMMAND_STARTED,
        StreamEventType.COMMAND_COMPLETED,
        StreamEventType.COMMAND_FAILED,
    }
)


InputEventData = (
    ReasoningData
    | CommandStartedData
    | CommandCompletedData
    | CommandFailedData
    | ScreenshotUpload
    | VariableUpdateData
    | StatusData
    | ErrorContext
)


def _data_of_type(
    value: Any,
    handler: ValidatorFunctionWrapHandler,
    info: ValidationInfo,
    models: Mapping[StreamEventType, type[WireModel]],
) -> Any:
    """Validate ``data`` against the one model its event's ``type`` names.

    A wrap validator (not a plain one) so the union's serializer stays in place; it does
    not call ``handler``, since the union would only check again the instance made here
    (that halved the cost of validating an event).
    """
    event_type = info.data.get("type")
    if event_type is None:
        return value  # ``type`` failed, and its own error says why.
    model = models[event_type]
    # The dict test first: a model class test goes through ABCMeta, ~10x slower.
    if isinstance(value, dict):
        value = model.model_validate(value)
    elif not isinstance(value, WireModel):
        raise ValueError("Input should be an object")
    elif not isinstance(value, model):
        raise ValueError(f"{type(value).__name__} is not the data of a {event_type} event")
    return value


class EventInput(WireModel):
    """One event as a producer publishes it: ``{type, data, metadata?}``.

    ``data`` is validated against the model of ``type``, so a wrong field is reported
    as ``data.<field>``.
    """

    type: StreamEventType
    data: InputEventData
    metadata: JsonObject | None = None

    @field_validator("data", mode="wrap")
    @classmethod
    def _data_for_type(
        cls, value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo
    ) -> Any:
        return _data_of_type(value, handler, info, INPUT_DATA_MODELS)


class StreamEvent(WireModel):
    """An event as stored and delivered. Only the hub creates these."""

    id: Identifier
    stream_id: Identifier
    session_id: Identifier
    seq: Annotated[int, Field(strict=True, ge=1)]
    type: StreamEventType
    timestamp: Timestamp
    data: StreamEventData
    metadata: JsonObject | None = None

    @field_validator("data", mode="wrap")
    @classmethod
    def _data_for_type(
        cls, value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo
    ) -> Any:
        return _data_of_type(value, handler, info, DATA_MODELS)

    @classmethod
    def trusted(
        cls,
        id: str,
        stream_id: str,
        session_id: str,
        seq: int,
        type: StreamEventType,
        timestamp: datetime,
        data: StreamEventData,
        metadata: dict[str, Any] | None,
    ) -> StreamEvent:
        """An event from values the hub made and checked itself: what ``model_construct``
        builds, without its per-field alias lookups (``internals.construct_trusted``).
        ``tests/types`` holds it equal to ``model_construct``'s result."""
        return construct_trusted(
            cls,
            {
                "id": id,
                "stream_id": stream_id,
                "session_id": session_id,
                "seq": seq,
                "type": type,
                "timestamp": timestamp,
                "data": data,
                "metadata": metadata,
            },
        )
