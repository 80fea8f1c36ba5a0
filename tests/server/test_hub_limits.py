"""The hub-wide bounds of docs/configuration.md ("Limits"), against a real server:
``limits.maxStreams``, ``limits.maxMemoryBytes`` and ``limits.maxBodyBytes``. The probe
made 3,000 streams in 5 s, put 150 events of 1 MiB into one stream, and sent bodies of any size
to routes that parse them whole."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import re
import tracemalloc
from collections.abc import AsyncIterator

import orjson
import pytest

from executor_streamer.config import ExecutorStreamerConfig
from executor_streamer.errors import ConfigError

from ..live_server import ServerFactory, reasoning
from ..waiting import eventually

MIB = 1 << 20


class TestMaxStreams:
    async def test_creating_one_more_active_stream_is_a_503(
        self, make_server: ServerFactory
    ) -> None:
        served = await make_server(limits={"maxStreams": 2})
        http = served.http
        for name in ("wf-1", "wf-2"):
            assert (await http.post("/api/streams", json={"workflowSessionId": name})).is_success
        refused = await http.post("/api/streams", json={"workflowSessionId": "wf-3"})
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "TOO_MANY_STREAMS"
        # auto-creating by a publish is refused alike, and leaves nothing behind
        published = await http.post("/api/streams/wf-4/events", json=reasoning())
        assert published.status_code == 503
        assert (await http.get("/api/streams/wf-4")).status_code == 404
        # closing one frees its place; reopening a closed one needs a place too
        assert (await http.delete("/api/streams/wf-1")).status_code == 204
        assert (await http.post("/api/streams", json={"workflowSessionId": "wf-3"})).is_success
        reopened = await http.post("/api/streams", json={"workflowSessionId": "wf-1"})
        assert reopened.status_code == 503
        # publishing to streams that exist goes on
        assert (await http.post("/api/streams/wf-2/events", json=reasoning())).status_code == 201


class TestMemoryBudget:
    async def test_at_the_budget_publishes_are_refused_and_reads_go_on(
        self, make_server: ServerFactory
    ) -> None:
        served = await make_server(limits={"maxMemoryBytes": 1 * MIB})
        http = served.http
        refused = None
        for _ in range(40):  # ~100 KB each: over 1 MiB well before the end
            response = await http.post("/api/streams/wf-1/events", json=reasoning("x" * 100_000))
            if response.status_code != 201:
                refused = response
                break
        assert refused is not None, "the budget never refused a publish"
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "MEMORY_PRESSURE"
        assert int(refused.headers["retry-after"]) >= 1
        assert (await http.get("/healthz")).status_code == 200
        history = await http.get("/api/streams/wf-1/history", params={"limit": 1})
        assert history.status_code == 200
        metrics = (await http.get("/metrics")).text
        limit = re.search(
            r'executor_streamer_memory_bytes\{[^}]*part="limit"[^}]*\} (\S+)', metrics
        )
        assert limit is not None and float(limit.group(1)) == MIB
        assert re.search(
            r"executor_streamer_memory_refused_publishes_total(\{[^}]*\})? [1-9]", metrics
        )

    async def test_a_closed_stream_is_evicted_to_make_room(
        self, make_server: ServerFactory
    ) -> None:
        served = await make_server(limits={"maxMemoryBytes": 1 * MIB})
        http = served.http
        for _ in range(8):
            await served.publish("done", reasoning("x" * 100_000))
        assert (await http.delete("/api/streams/done")).status_code == 204
        for _ in range(8):
            await served.publish("next", reasoning("x" * 100_000))
        history = (await http.get("/api/streams/done/history")).json()
        assert history["total"] == 0

    async def test_runs_that_come_and_go_are_forgotten_oldest_first(
        self, make_server: ServerFactory
    ) -> None:
        served = await make_server(limits={"maxMemoryBytes": 1 * MIB})
        http = served.http
        status = {"type": "STATUS", "data": {"statusType": "run", "status": "done"}}
        for n in range(300):  # ~4 KiB each besides their one event: over the budget
            await served.publish(f"run-{n}", status)
            assert (await http.delete(f"/api/streams/run-{n}")).status_code == 204
        keyed = await http.post(
            "/api/streams/run-keyed/events", json=status, headers={"Idempotency-Key": "k"}
        )
        assert keyed.status_code == 201
        assert (await http.get("/api/streams/run-0")).status_code == 404
        assert (await http.get("/api/streams/run-299")).status_code == 200
        metrics = (await http.get("/metrics")).text
        forgotten = re.search(
            r"^executor_streamer_memory_forgotten_streams_total (\S+)", metrics, re.MULTILINE
        )
        assert forgotten is not None and float(forgotten.group(1)) > 0
        kept = re.search(
            r'executor_streamer_memory_bytes\{[^}]*part="idempotency"[^}]*\} (\S+)', metrics
        )
        assert kept is not None and float(kept.group(1)) > 0


async def chunks(total: int, size: int = 64 << 10) -> AsyncIterator[bytes]:
    sent = 0
    yield b'{"workflowSessionId": "wf-1", "metadata": {"note": "'
    while sent < total:
        yield b"n" * size
        sent += size
    yield b'"}}'


class TestMaxBody:
    async def test_a_declared_body_over_the_cap_is_a_413_unread(
        self, make_server: ServerFactory
    ) -> None:
        served = await make_server(limits={"maxBodyBytes": 2 * MIB, "maxScreenshotBytes": MIB})
        reader, writer = await asyncio.open_connection("127.0.0.1", served.server.port)
        try:
            writer.write(
                b"POST /api/streams HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n{"
            )
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), 10)  # to EOF: the hub closes
        finally:
            writer.close()
        head, _, body = answer.partition(b"\r\n\r\n")  # and then the hub closed
        assert head.startswith(b"HTTP/1.1 413")
        assert orjson.loads(body)["error"]["code"] == "BODY_TOO_LARGE"

    async def test_a_413_tells_a_page_of_another_allowed_origin(
        self, make_server: ServerFactory
    ) -> None:
        """The refusal comes before the CORS middleware, and carries what it would add:
        a page on an allowed origin reads the 413, not a network error."""
        served = await make_server(limits={"maxBodyBytes": 2 * MIB, "maxScreenshotBytes": MIB})
        response = await served.http.post(
            "/api/streams",
            content=chunks(3 * MIB),
            headers={"content-type": "application/json", "origin": "http://localhost:3000"},
        )
        assert response.status_code == 413
        assert response.headers["access-control-allow-origin"] == "http://localhost:3000"

    async def test_a_chunked_body_over_the_cap_is_a_413(self, make_server: ServerFactory) -> None:
        served = await make_server(limits={"maxBodyBytes": 2 * MIB, "maxScreenshotBytes": MIB})
        response = await served.http.post(
            "/api/streams",
            content=chunks(3 * MIB),
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "BODY_TOO_LARGE"
        assert (await served.http.get("/api/streams/wf-1")).status_code == 404

    async def test_refused_chunked_bodies_are_not_kept(self, make_server: ServerFactory) -> None:
        """The attack benchmark: chunked bodies past the cap grew the hub to 2.3 GB,
        the refused chunks kept alive in a reference cycle until a full collection. With
        the collector off, refused bodies leave nothing behind."""
        served = await make_server(limits={"maxBodyBytes": 2 * MIB, "maxScreenshotBytes": MIB})
        gc.disable()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(4):
                response = await served.http.post(
                    "/api/streams",
                    content=chunks(3 * MIB),
                    headers={"content-type": "application/json"},
                )
                assert response.status_code == 413
            await eventually(lambda: not served.server.server_state.tasks)
            held = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
            gc.enable()
        assert held < 2 * MIB, held

    async def test_a_body_that_never_ends_is_not_read_for_ever(
        self, make_server: ServerFactory
    ) -> None:
        """After its 413 the rest of a body is read and dropped for a moment only: the
        attack benchmark's endless bodies made the hub read 31 GB in 15 s."""
        served = await make_server(limits={"maxBodyBytes": 2 * MIB, "maxScreenshotBytes": MIB})
        reader, writer = await asyncio.open_connection("127.0.0.1", served.server.port)
        writer.write(
            b"POST /api/streams HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"10000\r\n" + b"n" * 65_536 + b"\r\n"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        try:
            with contextlib.suppress(ConnectionError):
                while loop.time() < deadline:  # 20 s at most: the hub hangs up well before
                    writer.write(chunk * 16)
                    await asyncio.wait_for(writer.drain(), 10)
            assert loop.time() < deadline, "the hub read the endless body for 20 s"
            with contextlib.suppress(ConnectionError):  # a reset may take the 413 along
                assert (await asyncio.wait_for(reader.read(), 10)).startswith(b"HTTP/1.1 413")
        finally:
            writer.close()

    async def test_a_body_over_the_cap_still_coming_gets_its_413(
        self, make_server: ServerFactory
    ) -> None:
        """An upload over the cap that goes on past the linger pause (3 s here, never
        pausing 2 s) reads its 413: the hub drops the rest while it keeps coming, where
        closing would reset the connection and take the answer along."""
        served = await make_server(limits={"maxBodyBytes": 2 * MIB, "maxScreenshotBytes": MIB})
        reader, writer = await asyncio.open_connection("127.0.0.1", served.server.port)
        total, piece = 6 * MIB, 256 << 10
        writer.write(
            b"POST /api/streams HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % total
        )
        try:
            for _ in range(total // piece):
                writer.write(b"x" * piece)
                await writer.drain()
                await asyncio.sleep(0.125)  # pacing: an upload slower than loopback
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 413"), head
        finally:
            writer.close()

    async def test_a_chunked_body_under_the_cap_is_read(self, make_server: ServerFactory) -> None:
        served = await make_server()
        response = await served.http.post(
            "/api/streams",
            content=chunks(8 << 10, 1024),
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 201, response.text

    async def test_the_cap_must_hold_a_screenshot(self) -> None:
        with pytest.raises(ConfigError, match="maxBodyBytes"):
            ExecutorStreamerConfig().with_overrides({"limits": {"maxBodyBytes": 4 * MIB}})
