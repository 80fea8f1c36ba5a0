"""Logging follows the original specification's logging config."""

from __future__ import annotations

import io
from collections.abc import Iterator

import orjson
import pytest
import structlog

from executor_streamer.config import LoggingConfig
from executor_streamer.logs import configure_logging, redact


@pytest.fixture(autouse=True)
def restore_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def emit(config: LoggingConfig, level: str = "info") -> str:
    out = io.StringIO()
    configure_logging(config, out)
    getattr(structlog.get_logger(), level)("stream_created", session_id="wf-1", stream_id="s")
    return out.getvalue()


class TestConfigureLogging:
    def test_structured_json(self) -> None:
        """structured=true gives one JSON object per line with every enabled field."""
        line = emit(LoggingConfig(structured=True))
        record = orjson.loads(line)
        assert record["event"] == "stream_created" and record["level"] == "info"
        assert record["module_id"] == "executor-streamer"
        assert record["session_id"] == "wf-1" and record["prefix"] == "[ExecutorStreamer]"
        assert record["timestamp"].endswith("Z")

    def test_fields_can_be_left_out(self) -> None:
        """Timestamp, module id and session id each follow their include flag."""
        record = orjson.loads(
            emit(
                LoggingConfig(
                    structured=True,
                    include_timestamp=False,
                    include_module_id=False,
                    include_session_id=False,
                    prefix="",
                )
            )
        )
        assert set(record) == {"event", "level", "stream_id"}

    def test_console_lines_start_with_the_prefix(self) -> None:
        """Console output is human-readable and carries the prefix."""
        line = emit(LoggingConfig(prefix="[hub]"))
        assert "[hub] stream_created" in line and "session_id=wf-1" in line

    def test_level_filters(self) -> None:
        """Messages below the configured level are dropped."""
        assert emit(LoggingConfig(level="WARN"), "info") == ""
        assert "stream_created" in emit(LoggingConfig(level="WARN"), "warning")


class TestRedact:
    @pytest.mark.parametrize(
        "name", ["ticket", "%74icket", "tick%65t", "TOKEN", "access_token", "%74oken"]
    )
    def test_a_secret_query_parameter_is_redacted_however_it_is_spelled(self, name: str) -> None:
        """The server reads ``?%74icket=`` as a ticket, so the log must not print it."""
        line = f"GET /api/streams/wf-1/events?since=0&{name}=SECRET-VALUE HTTP/1.1"
        assert "SECRET-VALUE" not in redact(line)
        assert "since=0" in redact(line)

    def test_other_parameters_are_kept(self) -> None:
        assert redact("GET /x?ticketed=1&tokens=2") == "GET /x?ticketed=1&tokens=2"

    def test_bearer_and_auth_messages_are_redacted(self) -> None:
        assert "abc" not in redact("Authorization: Bearer abc")
        assert "abc" not in redact('{"type": "auth", "token": "abc"}')
