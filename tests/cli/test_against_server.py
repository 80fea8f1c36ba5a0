"""The CLI against a real server: demo --url, tail, and serve's clean shutdown."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import httpx
import jwt
import orjson
import pytest
import structlog
from typer.testing import CliRunner
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from executor_streamer.cli import app
from executor_streamer.types import StreamEventType

from ..live_server import Served, ServerFactory, free_port
from ..waiting import eventually_async

runner = CliRunner()


@pytest.fixture(autouse=True)
def restore_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()


class TestDemoAndTail:
    async def test_demo_over_http_then_tail(self, served: Served) -> None:
        """`demo --url` publishes a whole run over HTTP; `tail --since 0` prints it all."""
        result = await asyncio.to_thread(
            runner.invoke, app, ["demo", "--url", served.base_url, "--pace", "0"]
        )
        assert result.exit_code == 0, result.output
        assert "curl -N" in result.output and "done demo-run-1" in result.output
        history = (await served.http.get("/api/streams/demo-run-1/history?limit=100")).json()
        assert history["total"] == 30
        assert {e["type"] for e in history["events"]} == set(StreamEventType)
        shot = next(e for e in history["events"] if e["type"] == "SCREENSHOT")
        assert (await served.http.get(shot["data"]["url"])).content.startswith(b"\x89PNG")
        tailed = await asyncio.to_thread(
            runner.invoke, app, ["tail", "demo-run-1", "--since", "0", "--url", served.base_url]
        )
        assert tailed.exit_code == 0, tailed.output
        assert "stream closed" in tailed.output
        for event_type in StreamEventType:
            assert event_type.value in tailed.output

    async def test_tail_follows_live_events(self, served: Served) -> None:
        """tail prints events published while it watches, filtered by --types."""
        await served.http.post("/api/streams", json={"workflowSessionId": "wf-1"})
        tailing = asyncio.create_task(
            asyncio.to_thread(
                runner.invoke,
                app,
                ["tail", "wf-1", "--types", "REASONING", "--url", served.base_url],
            )
        )

        async def watching() -> bool:
            return bool((await served.http.get("/api/streams/wf-1/clients")).json())

        assert await eventually_async(watching), "tail never subscribed"
        await served.publish(
            "wf-1",
            {"type": "STATUS", "data": {"statusType": "a", "status": "hidden"}},
            {
                "type": "REASONING",
                "data": {"thought": "visible", "confidence": 1, "reasoningType": "p"},
            },
        )
        await served.http.delete("/api/streams/wf-1")
        result = await asyncio.wait_for(tailing, 10)
        assert "visible" in result.output and "hidden" not in result.output

    async def test_tail_unknown_stream(self, served: Served) -> None:
        """tail of a stream that does not exist says so and exits 1."""
        args = ["tail", "nope", "--url", served.base_url]
        result = await asyncio.to_thread(runner.invoke, app, args)
        assert result.exit_code == 1 and "STREAM_NOT_FOUND" in result.output


class TestSearch:
    async def test_search_prints_matching_events_across_runs(self, served: Served) -> None:
        await served.publish(
            "wf-1", {"type": "STATUS", "data": {"statusType": "a", "status": "one"}}
        )
        failed = {
            "type": "COMMAND_FAILED",
            "data": {
                "commandId": "c1",
                "commandName": "click_login",
                "error": {"code": "TIMEOUT", "message": "no answer"},
                "duration": 30000,
            },
        }
        await served.publish("wf-2", failed)
        args = ["search", 'type == "COMMAND_FAILED"', "--last", "1h", "--url", served.base_url]
        result = await asyncio.to_thread(runner.invoke, app, args)
        assert result.exit_code == 0, result.output
        assert "wf-2" in result.output and "click_login" in result.output
        assert "wf-1" not in result.output and "1 event" in result.output
        every = await asyncio.to_thread(
            runner.invoke, app, ["search", "--limit", "1", "--url", served.base_url]
        )
        assert every.exit_code == 0 and "1 event" in every.output and "wf-2" in every.output

    async def test_a_bad_expression_or_duration_exits_with_why(self, served: Served) -> None:
        bad = await asyncio.to_thread(
            runner.invoke, app, ["search", "type ==", "--url", served.base_url]
        )
        assert bad.exit_code == 1 and "INVALID_FILTER" in bad.output
        late = await asyncio.to_thread(
            runner.invoke, app, ["search", "--last", "soon", "--url", served.base_url]
        )
        assert late.exit_code == 2 and "--last" in late.output


def start_serve(port: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "executor_streamer", "serve"]
    return subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "EXECUTOR_STREAMER_LOGGING__LEVEL": "WARN"},
    )


class TestServe:
    async def test_sigterm_closes_clients_1001_and_exits_cleanly(self) -> None:
        """`executor-streamer serve` on SIGTERM closes WebSockets with 1001, answers every
        acknowledged publish first, and exits 0."""
        port = free_port()
        process = await asyncio.to_thread(start_serve, port)
        base = f"http://127.0.0.1:{port}"
        try:
            async with httpx.AsyncClient(base_url=base) as http:

                async def ready() -> bool:
                    try:
                        return (await http.get("/readyz")).status_code == 200
                    except httpx.TransportError:
                        return False  # not listening yet

                assert await eventually_async(ready, 30), "the hub did not become ready"
                await http.post("/api/streams", json={"workflowSessionId": "wf-1"})
                async with connect(f"ws://127.0.0.1:{port}/ws?streamId=wf-1") as ws:
                    assert orjson.loads(await ws.recv())["type"] == "connection_ack"
                    assert orjson.loads(await ws.recv())["type"] == "subscribed"
                    published = await http.post(
                        "/api/streams/wf-1/events",
                        json={"type": "STATUS", "data": {"statusType": "a", "status": "b"}},
                    )
                    assert published.status_code == 201
                    process.send_signal(signal.SIGTERM)
                    received = []
                    with pytest.raises(ConnectionClosed):
                        while True:
                            received.append(orjson.loads(await asyncio.wait_for(ws.recv(), 10)))
                    assert [m["event"]["seq"] for m in received if m["type"] == "event"] == [1]
                    assert ws.close_code == 1001
            assert await asyncio.to_thread(process.wait, 20) == 0
        finally:
            if process.poll() is None:
                process.kill()
            assert process.stdout is not None
            with process.stdout:
                output = process.stdout.read().decode()
        assert "Traceback" not in output, output


SECRET = "cli-test-secret-" + "c" * 32


class TestWithAuthentication:
    """`token` mints what the hub accepts; `demo` and `tail` carry it."""

    @pytest.fixture
    async def secured(self, make_server: ServerFactory) -> Served:
        return await make_server(
            security={"authenticationRequired": True, "jwt": {"secret": SECRET}}
        )

    def mint(self, monkeypatch: pytest.MonkeyPatch, *args: str) -> str:
        monkeypatch.setenv("EXECUTOR_STREAMER_SECURITY__AUTHENTICATION_REQUIRED", "true")
        monkeypatch.setenv("EXECUTOR_STREAMER_SECURITY__JWT__SECRET", SECRET)
        result = runner.invoke(app, ["token", "--sub", "cli", *args])
        assert result.exit_code == 0, result.output
        return result.output.strip()

    def test_token_carries_its_scope_and_ttl(self, monkeypatch: pytest.MonkeyPatch) -> None:
        minted = self.mint(
            monkeypatch,
            "--subscribe",
            "wf-*",
            "--subscribe",
            "x",
            "--publish",
            "p:*",
            "--ttl",
            "2h",
        )
        claims = jwt.decode(minted, SECRET, algorithms=["HS256"])
        assert claims["sub"] == "cli"
        assert claims["scope"] == {"subscribe": ["wf-*", "x"], "publish": ["p:*"], "admin": False}
        assert claims["exp"] - claims["iat"] == 7200

    def test_token_refuses_bad_input(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.mint(monkeypatch)  # sets the environment
        for args in (["--ttl", "0"], ["--ttl", "1y"], ["--subscribe", "a b"]):
            result = runner.invoke(app, ["token", "--sub", "cli", *args])
            assert result.exit_code == 2, args
        monkeypatch.delenv("EXECUTOR_STREAMER_SECURITY__JWT__SECRET")
        monkeypatch.delenv("EXECUTOR_STREAMER_SECURITY__AUTHENTICATION_REQUIRED")
        result = runner.invoke(app, ["token", "--sub", "cli"])
        assert result.exit_code == 2 and "security.jwt.secret" in result.output

    async def test_demo_and_tail_with_a_token(
        self, secured: Served, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        url = ["--url", secured.base_url]
        refused = await asyncio.to_thread(runner.invoke, app, ["demo", *url, "--pace", "0"])
        assert refused.exit_code == 1 and "UNAUTHORIZED" in refused.output
        admin = self.mint(monkeypatch, "--admin")
        demo = await asyncio.to_thread(
            runner.invoke, app, ["demo", *url, "--pace", "0", "--token", admin]
        )
        assert demo.exit_code == 0, demo.output
        reader = self.mint(monkeypatch, "--subscribe", "demo-*")
        monkeypatch.setenv("EXECUTOR_STREAMER_TOKEN", reader)  # as --token
        tailed = await asyncio.to_thread(
            runner.invoke, app, ["tail", "demo-run-1", "--since", "0", *url]
        )
        assert tailed.exit_code == 0, tailed.output
        assert "stream closed" in tailed.output
        outside = self.mint(monkeypatch, "--subscribe", "other-*")
        forbidden = await asyncio.to_thread(
            runner.invoke, app, ["tail", "demo-run-1", "--token", outside, *url]
        )
        assert forbidden.exit_code == 1 and "FORBIDDEN" in forbidden.output

    async def test_demo_with_a_publish_only_token(
        self, secured: Served, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A producer's token (publish only) runs the demo: it creates the stream,
        publishes and closes it, as a producer may. A token for other streams is refused
        with what was refused."""
        url = ["--url", secured.base_url, "--pace", "0"]
        producer = self.mint(monkeypatch, "--publish", "tenant-a:*")
        demo = await asyncio.to_thread(
            runner.invoke, app, ["demo", *url, "--session", "tenant-a:run", "--token", producer]
        )
        assert demo.exit_code == 0, demo.output
        assert "done tenant-a:run-1" in demo.output and "left open" not in demo.output
        stream = secured.hub.streams.resolve("tenant-a:run-1")
        assert stream.last_seq == 30 and not stream.is_open
        other = await asyncio.to_thread(
            runner.invoke, app, ["demo", *url, "--session", "tenant-b:run", "--token", producer]
        )
        assert other.exit_code == 1
        assert (
            "FORBIDDEN: this credential's scope does not let it create or reopen "
            "'tenant-b:run-1'" in other.output
        )
        assert secured.hub.streams.find("tenant-b:run-1") is None
