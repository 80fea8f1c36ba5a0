"""Checking what producers publish, before anything is stored (docs/protocol.md, docs/rest.md).

Every input is validated here exactly once. A batch is checked whole: if any event is
invalid, the error lists every problem with its index and nothing is published.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from ..config import LimitsConfig
from ..errors import BatchTooLarge, FieldError, InvalidInput, field_errors
from ..history.base import StoredScreenshot
from ..types.base import WireModel
from ..types.enums import StreamEventType
from ..types.events import EventInput, ScreenshotFields, ScreenshotUpload
from ..types.ids import (
    RESERVED_WORKFLOW_SESSION_IDS,
    STREAM_ID_PREFIX,
    WORKFLOW_SESSION_ID,
    screenshot_id_for,
)

# Leading bytes of each image type the hub accepts.
_SIGNATURES: dict[str, tuple[bytes, ...]] = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/webp": (b"RIFF",),
}


@dataclass(frozen=True, slots=True)
class Screenshot:
    """A decoded, checked image waiting to be stored with its event."""

    screenshot_id: str
    image: StoredScreenshot
    fields: ScreenshotFields


@dataclass(frozen=True, slots=True)
class PreparedEvent:
    type: StreamEventType
    data: WireModel
    metadata: dict[str, Any] | None
    screenshot: Screenshot | None = None


def prepare_batch(
    items: Sequence[EventInput | Mapping[str, Any]], limits: LimitsConfig
) -> list[PreparedEvent]:
    """Validate a batch; raises :class:`InvalidInput` naming every bad field by index."""
    if not items:
        raise InvalidInput.single("events", "must hold at least one event")
    if len(items) > limits.max_batch_size:
        raise BatchTooLarge(
            [FieldError("events", f"at most {limits.max_batch_size} events per batch")]
        )
    prepared: list[PreparedEvent] = []
    errors: list[FieldError] = []
    for index, item in enumerate(items):
        try:
            prepared.append(prepare_event(item, limits, index))
        except InvalidInput as exc:
            errors.extend(exc.errors)
    if errors:
        raise InvalidInput(errors)
    return prepared


def prepare_event(
    item: EventInput | Mapping[str, Any], limits: LimitsConfig, index: int | None = None
) -> PreparedEvent:
    if isinstance(item, dict | Mapping):  # dict first: the Mapping test is an ABC's
        try:
            event = EventInput.model_validate(item)
        except ValidationError as exc:
            raise InvalidInput(field_errors(exc, index=index)) from None
    elif isinstance(item, EventInput):
        event = item
    else:
        raise InvalidInput.single("(root)", "an event must be an object", index)
    check_metadata(event.metadata, limits, index)
    screenshot = None
    if isinstance(event.data, ScreenshotUpload):
        image = decode_image(event.data.image, index)
        screenshot = check_screenshot(image, event.data, limits, index)
    return PreparedEvent(event.type, event.data, event.metadata, screenshot)


def check_metadata(
    metadata: dict[str, Any] | None, limits: LimitsConfig, index: int | None = None
) -> None:
    if metadata is None:
        return
    try:
        size = len(orjson.dumps(metadata))
    except (orjson.JSONEncodeError, TypeError) as exc:
        raise InvalidInput.single("metadata", f"must be JSON: {exc}", index) from None
    if size > limits.max_metadata_bytes:
        raise InvalidInput.single(
            "metadata",
            f"is {size} bytes serialized; at most {limits.max_metadata_bytes} allowed",
            index,
        )


def decode_image(encoded: str, index: int | None = None) -> bytes:
    if encoded.startswith("data:"):  # tolerate a data URL, as browsers produce them
        encoded = encoded.partition(",")[2]
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput.single("data.image", "is not valid base64", index) from None


def check_screenshot(
    image: bytes, fields: ScreenshotFields, limits: LimitsConfig, index: int | None = None
) -> Screenshot:
    """Check the image's size and that its bytes are what ``mimeType`` says."""
    if not image:
        raise InvalidInput.single("data.image", "is empty", index)
    if len(image) > limits.max_screenshot_bytes:
        raise InvalidInput.single(
            "data.image",
            f"is {len(image)} bytes; at most {limits.max_screenshot_bytes} allowed",
            index,
        )
    if not _matches_type(image, fields.mime_type):
        raise InvalidInput.single(
            "data.image",
            f"is not a {fields.mime_type} image (its leading bytes say otherwise)",
            index,
        )
    digest = hashlib.sha256(image).hexdigest()
    return Screenshot(
        screenshot_id_for(digest), StoredScreenshot(image, fields.mime_type, digest), fields
    )


def _matches_type(image: bytes, mime_type: str) -> bool:
    if not image.startswith(_SIGNATURES[mime_type]):
        return False
    return mime_type != "image/webp" or image[8:12] == b"WEBP"


def validate_workflow_session_id(value: object) -> str:
    if not isinstance(value, str) or not WORKFLOW_SESSION_ID.fullmatch(value):
        raise InvalidInput.single(
            "workflowSessionId",
            "must be 1-128 characters of letters, digits, '.', '_', ':' or '-', "
            "starting with a letter or digit",
        )
    if value in RESERVED_WORKFLOW_SESSION_IDS:
        raise InvalidInput.single("workflowSessionId", f"{value!r} is reserved")
    if value.startswith(STREAM_ID_PREFIX):
        raise InvalidInput.single(
            "workflowSessionId", f"must not start with {STREAM_ID_PREFIX!r}, which marks stream ids"
        )
    return value
