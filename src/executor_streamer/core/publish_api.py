"""The original specification's typed publish methods, written once over ``publish_event``.

The in-process publisher and the HTTP client both derive from this, so a producer
switches between them without changing a line.
"""

from __future__ import annotations

import base64
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

from ..types.base import WireModel
from ..types.enums import CommandAction, StreamEventType
from ..types.events import ErrorContext, StreamEvent

JsonObject = dict[str, Any]


class PublishApi(ABC):
    @abstractmethod
    async def publish_event(self, session_id: str, event: Mapping[str, Any]) -> StreamEvent:
        """Publish ``{type, data, metadata?}``; returns the stored event."""

    async def publish_reasoning(
        self,
        session_id: str,
        thought: str,
        confidence: float,
        type: str,
        context: JsonObject | None = None,
        metadata: JsonObject | None = None,
    ) -> StreamEvent:
        data = {"thought": thought, "confidence": confidence, "reasoningType": type}
        if context is not None:
            data["context"] = context
        return await self._publish_one(session_id, StreamEventType.REASONING, data, metadata)

    async def publish_command_started(
        self,
        session_id: str,
        command_name: str,
        action: CommandAction | str,
        parameters: JsonObject | None = None,
        command_id: str | None = None,
        metadata: JsonObject | None = None,
    ) -> StreamEvent:
        data = {
            "commandName": command_name,
            "action": action,
            "parameters": {} if parameters is None else parameters,
            "commandId": command_id,
        }
        return await self._publish_one(session_id, StreamEventType.COMMAND_STARTED, data, metadata)

    async def publish_command_completed(
        self,
        session_id: str,
        command_name: str,
        result: Any,
        duration: float,
        command_id: str | None = None,
        metadata: JsonObject | None = None,
    ) -> StreamEvent:
        data = {
            "commandName": command_name,
            "result": result,
            "duration": duration,
            "commandId": command_id,
        }
        return await self._publish_one(
            session_id, StreamEventType.COMMAND_COMPLETED, data, metadata
        )

    async def publish_command_failed(
        self,
        session_id: str,
        command_name: str,
        error: ErrorContext | JsonObject,
        duration: float,
        command_id: str | None = None,
        metadata: JsonObject | None = None,
    ) -> StreamEvent:
        data = {
            "commandName": command_name,
            "error": error,
            "duration": duration,
            "commandId": command_id,
        }
        return await self._publish_one(session_id, StreamEventType.COMMAND_FAILED, data, metadata)

    async def publish_variable_update(
        self,
        session_id: str,
        name: str,
        value: str,
        previous_value: str | None = None,
        metadata: JsonObject | None = None,
    ) -> StreamEvent:
        data = {"name": name, "value": value, "previousValue": previous_value}
        return await self._publish_one(session_id, StreamEventType.VARIABLE_UPDATE, data, metadata)

    async def publish_status(
        self,
        session_id: str,
        type: str,
        status: str,
        message: str | None = None,
        metadata: JsonObject | None = None,
    ) -> StreamEvent:
        data = {"statusType": type, "status": status, "message": message}
        return await self._publish_one(session_id, StreamEventType.STATUS, data, metadata)

    async def publish_error(
        self,
        session_id: str,
        error: ErrorContext | JsonObject,
        metadata: JsonObject | None = None,
    ) -> StreamEvent:
        return await self._publish_one(session_id, StreamEventType.ERROR, _plain(error), metadata)

    async def publish_screenshot(
        self,
        session_id: str,
        image: bytes,
        mime_type: str = "image/png",
        *,
        width: int | None = None,
        height: int | None = None,
        caption: str | None = None,
        command_id: str | None = None,
        page_url: str | None = None,
        metadata: JsonObject | None = None,
    ) -> StreamEvent:
        """Publish image bytes; the stored event carries ScreenshotInfo with its ``url``."""
        fields = {
            "mimeType": mime_type,
            "width": width,
            "height": height,
            "caption": caption,
            "commandId": command_id,
            "pageUrl": page_url,
        }
        return await self._publish_image(session_id, image, fields, metadata)

    async def _publish_image(
        self, session_id: str, image: bytes, fields: JsonObject, metadata: JsonObject | None
    ) -> StreamEvent:
        """Over the wire an image travels inside its event as base64; the in-process
        publisher overrides this to keep the bytes as they are."""
        data = {"image": base64.b64encode(image).decode("ascii"), **fields}
        return await self._publish_one(session_id, StreamEventType.SCREENSHOT, data, metadata)

    async def _publish_one(
        self,
        session_id: str,
        event_type: StreamEventType,
        data: JsonObject,
        metadata: JsonObject | None,
    ) -> StreamEvent:
        event = {"type": event_type, "data": _plain(data), "metadata": metadata}
        return await self.publish_event(session_id, event)


def _plain(value: Any) -> Any:
    """A model (or a model among a dict's values, like ``error``) as its camelCase dict,
    so the event is plain JSON for every transport. User data is not walked."""
    if isinstance(value, WireModel):
        return value.model_dump(mode="json", by_alias=True, exclude_none=True)
    if isinstance(value, dict):
        return {k: _plain(v) if isinstance(v, WireModel) else v for k, v in value.items()}
    return value
