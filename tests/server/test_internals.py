"""The private parts the fast paths use (server/internals.py) are there, and the fast paths
are taken under the hub's own server: a dependency that moves a part fails loudly here."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import httpx
import pytest
from websockets.server import ServerProtocol

from executor_streamer.server import app as app_module
from executor_streamer.server import internals
from executor_streamer.server.internals import ChunkWriter
from executor_streamer.server.writers import FrameWriter
from executor_streamer.server.ws_protocol import HubWebSocketProtocol

from ..live_server import Served, sse_stream, status
from .test_websocket import peer


def test_every_private_part_is_there() -> None:
    """Under the installed versions of uvicorn, Starlette, websockets and
    starlette-compress, nothing the fast paths reach for is missing."""
    assert internals.missing_parts() == []
    internals.verify()


def test_a_missing_part_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """If a dependency drops an attribute, verify() says which, with the versions."""
    original = ServerProtocol.__init__

    def without_flag(self: ServerProtocol, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        del self.expect_continuation_frame

    monkeypatch.setattr(ServerProtocol, "__init__", without_flag)
    assert internals.missing_parts() == ["websockets ServerProtocol.expect_continuation_frame"]
    with pytest.raises(RuntimeError, match=r"expect_continuation_frame.*websockets \d"):
        internals.verify()


class TestTheFastPathsAreTaken:
    async def test_publish_answers_in_one_write(
        self, served: Served, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        written: list[bool] = []
        original = internals.write_whole_response

        def spy(send: Any, response: Any) -> bool:
            written.append(original(send, response))
            return written[-1]

        monkeypatch.setattr(app_module, "write_whole_response", spy)
        # pytest's log capture gives uvicorn's access logger handlers, and a response whose
        # access line is to be logged is left to uvicorn; served, the hub logs none.
        monkeypatch.setattr(logging.getLogger("uvicorn.access"), "handlers", [])
        async with httpx.AsyncClient(base_url=served.base_url) as fresh:  # a new connection
            response = await fresh.post("/api/streams/wf-1/events", json=status(1))
        assert response.status_code == 201 and written == [True]

    async def test_sse_chunks_go_straight_to_the_transport(
        self, served: Served, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        chunks: list[bytes] = []
        original = ChunkWriter.write_now

        def spy(self: ChunkWriter, body: bytes) -> None:
            chunks.append(body)
            original(self, body)

        monkeypatch.setattr(ChunkWriter, "write_now", spy)
        await served.publish("wf-1", status(0))
        async with sse_stream(served, "/api/streams/wf-1/events") as reader:
            await served.publish("wf-1", status(1))
            await reader.events(1)
        assert any(b"stream_event" in chunk for chunk in chunks)

    async def test_websocket_frames_are_written_by_the_hub_s_protocol(
        self, served: Served, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        direct: list[int] = []
        through_asgi: list[bytes] = []
        original = HubWebSocketProtocol.write_text_frames

        def spy(self: HubWebSocketProtocol, frames: Sequence[bytes]) -> None:
            direct.append(len(frames))
            original(self, frames)

        async def asgi(self: FrameWriter, frame: bytes) -> None:
            through_asgi.append(frame)

        monkeypatch.setattr(HubWebSocketProtocol, "write_text_frames", spy)
        monkeypatch.setattr(FrameWriter, "_asgi_send", asgi)
        await served.publish("wf-1", status(0))
        async with peer(served, "?streamId=wf-1") as p:
            await p.expect("subscribed")
            await served.publish("wf-1", status(1))
            await p.expect("event")
        assert direct and not through_asgi


def test_a_changed_uvicorn_server_method_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """DrainingServer overrides uvicorn's shutdown(sockets): a changed signature is named."""
    import uvicorn

    async def shutdown(self: uvicorn.Server, sockets: Any, grace: float) -> None:
        return None

    monkeypatch.setattr(uvicorn.Server, "shutdown", shutdown)
    assert internals.missing_parts() == ["uvicorn Server.shutdown(sockets)"]
