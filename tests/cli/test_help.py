"""What the command line tells a newcomer: its help, and the hints it prints."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
import structlog
from typer.testing import CliRunner

from executor_streamer.cli import app, watch_hint

from ..live_server import Served

runner = CliRunner()
SECRET = "s" * 40


@pytest.fixture(autouse=True)
def restore_structlog() -> Iterator[None]:
    """The commands configure logging to the runner's output, which it closes."""
    yield
    structlog.reset_defaults()


@pytest.mark.parametrize("command", ["serve", "demo", "tail", "token"])
def test_help_names_values_not_python_types(command: str) -> None:
    """Flags show no type (``--admin``, not ``--admin <bool>``); values show what to
    write (``--subscribe PATTERN``), never a Python annotation."""
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    for python_type in ("<bool>", "<list[str]>", "<str>", "<path>", "{"):
        assert python_type not in result.output, python_type


def test_usage_lines_read_as_people_write_them() -> None:
    """A required argument is written plain, as in every other tool's usage line."""
    result = runner.invoke(app, ["tail", "--help"])
    assert " tail [OPTIONS] STREAM\n" in result.output
    token = runner.invoke(app, ["token", "--help"], env={"COLUMNS": "120"}).output
    assert "--subscribe PATTERN" in token and "repeat for more" in token
    assert "  --admin  " in token


def test_token_without_a_secret_says_where_the_secret_comes_from(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("EXECUTOR_STREAMER_SECURITY__JWT__SECRET", raising=False)
    result = runner.invoke(app, ["token", "--sub", "ci"])
    assert result.exit_code == 2
    assert "--config hub.toml" in result.output
    assert "EXECUTOR_STREAMER_SECURITY__JWT__SECRET" in result.output


def test_token_reads_the_secret_from_the_config_file(tmp_path: Path) -> None:
    """``token --config hub.toml`` signs with the hub's own secret."""
    config = tmp_path / "hub.toml"
    config.write_text(
        f'[security]\nauthenticationRequired = true\njwt = {{ secret = "{SECRET}" }}\n'
    )
    result = runner.invoke(
        app, ["token", "--sub", "ci", "--publish", "wf-*", "--config", str(config)]
    )
    assert result.exit_code == 0, result.output
    claims = jwt.decode(result.output.strip(), SECRET, algorithms=["HS256"])
    assert claims["scope"]["publish"] == ["wf-*"]


class TestWatchHint:
    def test_each_line_pastes_as_it_is(self) -> None:
        """The URL is quoted for the shell, and the run is named as the producer named it."""
        hint = watch_hint("http://localhost:3001", "tenant-a:run-1", with_token=False)
        lines = hint.splitlines()
        assert "http://localhost:3001/view/tenant-a:run-1" in lines[0]
        assert lines[1].strip() == (
            "executor-streamer tail tenant-a:run-1 --since 0 --url http://localhost:3001"
        )
        assert lines[2].strip() == (
            "curl -N 'http://localhost:3001/api/streams/tenant-a:run-1/events?since=0'"
        )
        assert "str_" not in hint

    def test_with_authentication_it_asks_for_a_token_that_may_watch(self) -> None:
        """The producer's token may only publish: watching takes another, named once."""
        hint = watch_hint("http://h:1", "r-1", with_token=True)
        assert 'tail r-1 --since 0 --url http://h:1 --token "$WATCH_TOKEN"' in hint
        assert 'curl -N -H "Authorization: Bearer $WATCH_TOKEN" ' in hint
        assert "WATCH_TOKEN is a token that may watch it" in hint

    def test_a_session_id_the_shell_would_split_is_quoted(self) -> None:
        hint = watch_hint("http://h:1", "run;1", with_token=False)
        assert "tail 'run;1' --since" in hint

    async def test_demo_does_not_wrap_the_hint_when_output_is_no_terminal(
        self, served: Served
    ) -> None:
        """Piped or captured, the hint's long lines stay whole (a wrapped command does
        not paste)."""
        session = "a-workflow-session-named-at-some-length"
        result = await asyncio.to_thread(
            runner.invoke,
            app,
            ["demo", "--url", served.base_url, "--pace", "0", "--session", session],
        )
        assert result.exit_code == 0, result.output
        hint = watch_hint(served.base_url, f"{session}-1", with_token=False)
        plain = hint.replace("[bold]", "").replace("[/]", "")
        assert plain in result.output
        assert max(len(line) for line in plain.splitlines()) > 80


def test_token_refuses_a_ttl_no_date_can_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    """A token expiring past the year 10000 would be refused by every hub: none is minted."""
    monkeypatch.setenv("EXECUTOR_STREAMER_SECURITY__AUTHENTICATION_REQUIRED", "true")
    monkeypatch.setenv("EXECUTOR_STREAMER_SECURITY__JWT__SECRET", SECRET)
    result = runner.invoke(app, ["token", "--sub", "ci", "--ttl", "3000000d"])
    assert result.exit_code == 2
    assert "year 10000" in result.output
