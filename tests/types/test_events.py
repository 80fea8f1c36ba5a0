"""The event types of docs/protocol.md: what they accept, what they refuse, how they look."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from executor_streamer.errors import InvalidInput
from executor_streamer.types import (
    EventInput,
    ReasoningData,
    StatusData,
    StreamEvent,
    StreamEventType,
    format_timestamp,
)

VALID_DATA: dict[str, dict[str, Any]] = {
    "REASONING": {"thought": "find the form", "confidence": 0.7, "reasoningType": "planning"},
    "COMMAND_STARTED": {"commandName": "click", "action": "CLICK", "parameters": {"s": "#a"}},
    "COMMAND_COMPLETED": {"commandName": "click", "result": {"ok": True}, "duration": 12.5},
    "COMMAND_FAILED": {
        "commandName": "click",
        "error": {"code": "E1", "message": "boom"},
        "duration": 0,
    },
    "SCREENSHOT": {"image": "iVBORw0KGgo=", "mimeType": "image/png"},
    "VARIABLE_UPDATE": {"name": "total", "value": "12", "previousValue": "10"},
    "STATUS": {"statusType": "workflow", "status": "RUNNING", "message": "go"},
    "ERROR": {"code": "E2", "message": "bad", "recoverable": True},
}


def errors_of(raw: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as caught:
        EventInput.model_validate(raw)
    return [(".".join(map(str, e["loc"])), e["type"]) for e in caught.value.errors()]


class TestEventInput:
    @pytest.mark.parametrize("event_type", list(VALID_DATA))
    def test_every_type_accepts_its_data(self, event_type: str) -> None:
        """Each event type validates the data the design gives it."""
        event = EventInput.model_validate({"type": event_type, "data": VALID_DATA[event_type]})
        assert event.type == StreamEventType(event_type)

    def test_snake_case_names_are_accepted_too(self) -> None:
        """Python callers may use snake_case field names."""
        data = {"thought": "x", "confidence": 1, "reasoning_type": "p"}
        event = EventInput.model_validate({"type": "REASONING", "data": data})
        assert isinstance(event.data, ReasoningData)
        assert event.data.reasoning_type == "p"

    def test_unknown_type_is_one_error_on_type(self) -> None:
        """An unknown type is reported once, on ``type``, not again on ``data``."""
        assert errors_of({"type": "NOPE", "data": {}}) == [("type", "enum")]

    @pytest.mark.parametrize(
        ("data", "path"),
        [
            ({"thought": "x", "confidence": "0.5", "reasoningType": "p"}, "data.confidence"),
            ({"thought": 5, "confidence": 0.5, "reasoningType": "p"}, "data.thought"),
            ({"thought": "x", "confidence": True, "reasoningType": "p"}, "data.confidence"),
            ({"thought": "x", "confidence": 1.01, "reasoningType": "p"}, "data.confidence"),
            ({"thought": "x", "confidence": -0.01, "reasoningType": "p"}, "data.confidence"),
            ({"thought": "x", "confidence": float("nan"), "reasoningType": "p"}, "data.confidence"),
            ({"thought": "x", "confidence": 0.5}, "data.reasoningType"),
            ({"thought": "x", "confidence": 0.5, "reasoningType": "p", "x": 1}, "data.x"),
        ],
    )
    def test_reasoning_rules(self, data: dict[str, Any], path: str) -> None:
        """Wrong types, confidence outside 0..1, missing and unknown fields are refused."""
        assert [p for p, _ in errors_of({"type": "REASONING", "data": data})] == [path]

    @pytest.mark.parametrize("event_type", ["COMMAND_COMPLETED", "COMMAND_FAILED"])
    def test_negative_duration_is_refused(self, event_type: str) -> None:
        """Durations are milliseconds and cannot be negative."""
        data = {**VALID_DATA[event_type], "duration": -1}
        assert errors_of({"type": event_type, "data": data}) == [
            ("data.duration", "greater_than_equal")
        ]

    def test_status_of_a_command_event_is_fixed(self) -> None:
        """A started command is RUNNING; a producer cannot say otherwise."""
        data = {**VALID_DATA["COMMAND_STARTED"], "status": "COMPLETED"}
        assert errors_of({"type": "COMMAND_STARTED", "data": data}) == [
            ("data.status", "literal_error")
        ]

    def test_unknown_action_is_refused(self) -> None:
        """Command actions come from the CommandAction enum."""
        data = {**VALID_DATA["COMMAND_STARTED"], "action": "FLY"}
        assert errors_of({"type": "COMMAND_STARTED", "data": data}) == [("data.action", "enum")]

    def test_nested_error_fields_have_full_paths(self) -> None:
        """A bad field inside ErrorContext is named with its whole path."""
        data = {**VALID_DATA["COMMAND_FAILED"], "error": {"code": "E", "message": 3}}
        assert errors_of({"type": "COMMAND_FAILED", "data": data}) == [
            ("data.error.message", "string_type")
        ]

    def test_data_model_of_another_type_is_refused(self) -> None:
        """In Python, handing STATUS data to a REASONING event is an error."""
        with pytest.raises(ValidationError, match="not the data of a REASONING event"):
            EventInput(type=StreamEventType.REASONING, data=StatusData(status_type="a", status="b"))

    def test_screenshot_mime_type_is_limited(self) -> None:
        """Only PNG, JPEG and WebP screenshots are accepted."""
        data = {**VALID_DATA["SCREENSHOT"], "mimeType": "image/gif"}
        assert errors_of({"type": "SCREENSHOT", "data": data}) == [
            ("data.mimeType", "literal_error")
        ]

    def test_field_errors_convert_to_invalid_input(self) -> None:
        """InvalidInput carries each problem's wire path and the batch index."""
        with pytest.raises(ValidationError) as caught:
            EventInput.model_validate({"type": "STATUS", "data": {"status": 1}})
        error = InvalidInput.from_pydantic(caught.value, index=3)
        assert {(e.path, e.index) for e in error.errors} == {
            ("data.statusType", 3),
            ("data.status", 3),
        }
        assert error.to_dict()["code"] == "VALIDATION_ERROR"
        assert "events[3].data.status" in error.message


class TestStreamEvent:
    def make(self) -> StreamEvent:
        return StreamEvent.model_validate(
            {
                "id": "evt_1",
                "streamId": "str_1",
                "sessionId": "wf-1",
                "seq": 1,
                "type": "STATUS",
                "timestamp": "2026-01-01T10:00:00.123Z",
                "data": {"statusType": "a", "status": "b"},
            }
        )

    def test_json_is_camel_case_with_millisecond_utc_timestamps(self) -> None:
        """The wire form uses camelCase and RFC 3339 UTC with milliseconds and Z."""
        wire = self.make().to_wire()
        assert wire["timestamp"] == "2026-01-01T10:00:00.123Z"
        assert wire["data"] == {"statusType": "a", "status": "b"}
        assert set(wire) == {"id", "streamId", "sessionId", "seq", "type", "timestamp", "data"}

    def test_round_trips_through_json(self) -> None:
        """Serializing and parsing gives the same event."""
        event = self.make()
        assert StreamEvent.model_validate_json(event.model_dump_json()) == event

    def test_offsets_are_converted_to_utc(self) -> None:
        """A timestamp with an offset is stored as the same instant in UTC."""
        stamp = StreamEvent.model_validate(
            {**self.make().to_wire(), "timestamp": "2026-01-01T12:00:00.5+02:00"}
        ).timestamp
        assert stamp == datetime(2026, 1, 1, 10, 0, 0, 500000, tzinfo=UTC)

    def test_format_timestamp(self) -> None:
        """Timestamps always have exactly three fraction digits and a Z."""
        text = format_timestamp(datetime(2026, 5, 6, 7, 8, 9, 1999, tzinfo=UTC))
        assert text == "2026-05-06T07:08:09.001Z"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", text)
