"""The command line and the demo run."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from typer.testing import CliRunner

from executor_streamer.cli import app
from executor_streamer.demo import render_png
from executor_streamer.types import StreamEventType

runner = CliRunner()


@pytest.fixture(autouse=True)
def restore_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()


class TestDemo:
    def test_demo_run_shows_every_event_type(self) -> None:
        """`executor-streamer demo` publishes and prints every event type."""
        result = runner.invoke(app, ["demo", "--in-process", "--pace", "0"])
        assert result.exit_code == 0, result.output
        for event_type in StreamEventType:
            assert event_type.value in result.output
        assert "30 events" in result.output

    def test_bad_config_stops_with_a_message(self, tmp_path: Path) -> None:
        """An invalid config file stops the command with exit code 2 naming the key."""
        path = tmp_path / "hub.toml"
        path.write_text("[server]\nport = -1\n")
        result = runner.invoke(app, ["demo", "--in-process", "--config", str(path)])
        assert result.exit_code == 2
        assert "server.port" in result.output

    def test_redis_without_a_url_is_refused(self) -> None:
        """The Redis engine needs to be told where Redis is: a clear error, no guess."""
        result = runner.invoke(app, ["serve", "--storage", "redis"])
        assert result.exit_code == 2
        assert "connectionString" in result.output and "redis" in result.output

    def test_unreachable_redis_is_one_clear_line(self) -> None:
        result = runner.invoke(
            app, ["serve", "--storage", "redis", "--connection-string", "redis://127.0.0.1:1/0"]
        )
        assert result.exit_code == 2
        assert "redis is not reachable" in result.output and "Traceback" not in result.output

    def test_unreachable_database_is_one_clear_line(self) -> None:
        """serve against a database that does not answer exits 2 saying why."""
        result = runner.invoke(
            app,
            [
                "serve",
                "--storage",
                "database",
                "--connection-string",
                "postgresql://postgres@127.0.0.1:1/test",
            ],
        )
        assert result.exit_code == 2
        assert "history storage failed" in result.output and "Traceback" not in result.output


class TestRenderPng:
    def test_is_a_valid_png(self) -> None:
        """The demo's screenshots are real PNGs: signature, IHDR size and CRCs check out."""
        data = render_png(20, 10, 0.5, 7)
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        offset, chunks = 8, []
        while offset < len(data):
            (length,) = struct.unpack(">I", data[offset : offset + 4])
            kind = data[offset + 4 : offset + 8]
            body = data[offset + 8 : offset + 8 + length]
            (crc,) = struct.unpack(">I", data[offset + 8 + length : offset + 12 + length])
            assert crc == zlib.crc32(kind + body)
            chunks.append((kind, body))
            offset += 12 + length
        assert [k for k, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"]
        assert struct.unpack(">II", chunks[0][1][:8]) == (20, 10)
        assert len(zlib.decompress(chunks[1][1])) == 10 * (1 + 20 * 3)
