"""The REST API (docs/rest.md) against a real server with httpx."""

from __future__ import annotations

import asyncio
import base64

import orjson
import pytest

from executor_streamer import ClientType
from executor_streamer.demo import render_png

from ..live_server import Served, ServerFactory, reasoning, status


class TestStreams:
    async def test_create_get_list(self, served: Served) -> None:
        """POST creates (201) then finds (200); GET by either id; the list shows open ones."""
        created = await served.http.post(
            "/api/streams",
            json={
                "workflowSessionId": "wf-1",
                "config": {"maxHistorySize": 50},
                "metadata": {"a": 1},
            },
        )
        assert created.status_code == 201
        body = created.json()
        assert body["linkedWorkflowSessionId"] == "wf-1" and body["sessionId"] == body["streamId"]
        assert body["config"]["maxHistorySize"] == 50 and body["metadata"] == {"a": 1}
        assert body["moduleId"] == "executor-streamer" and body["lastSeq"] == 0
        again = await served.http.post("/api/streams", json={"workflowSessionId": "wf-1"})
        assert again.status_code == 200 and again.json()["streamId"] == body["streamId"]
        for ref in ("wf-1", body["streamId"]):
            got = await served.http.get(f"/api/streams/{ref}")
            assert got.status_code == 200 and got.json()["streamId"] == body["streamId"]
        listed = await served.http.get("/api/streams")
        assert [s["streamId"] for s in listed.json()] == [body["streamId"]]

    @pytest.mark.parametrize(
        ("body", "path"),
        [
            ({"workflowSessionId": "bad id"}, "workflowSessionId"),
            ({"workflowSessionId": "metrics"}, "workflowSessionId"),
            ({}, "body.workflowSessionId"),
            (
                {"workflowSessionId": "wf-1", "config": {"maxHistorySize": 0}},
                "config.max_history_size",
            ),
        ],
    )
    async def test_create_invalid(self, served: Served, body: dict[str, object], path: str) -> None:
        """Invalid creates are 422 with the error body naming the field; nothing is made."""
        response = await served.http.post("/api/streams", json=body)
        assert response.status_code == 422
        error = response.json()["error"]
        assert error["code"] == "VALIDATION_ERROR"
        assert error["details"]["errors"][0]["path"] == path
        assert (await served.http.get("/api/streams")).json() == []

    async def test_unknown_stream_is_404_everywhere(self, served: Served) -> None:
        """Every per-stream endpoint answers 404 STREAM_NOT_FOUND for an unknown id."""
        for method, path in [
            ("GET", "/api/streams/str_nope"),
            ("DELETE", "/api/streams/str_nope"),
            ("GET", "/api/streams/str_nope/history"),
            ("GET", "/api/streams/str_nope/clients"),
            ("GET", "/api/streams/str_nope/stats"),
            ("GET", "/api/streams/str_nope/events"),
            ("GET", "/api/streams/str_nope/poll?timeout=0"),
            ("GET", "/api/streams/str_nope/screenshots/scr_x"),
        ]:
            response = await served.http.request(method, path)
            assert response.status_code == 404, path
            assert response.json()["error"]["code"] == "STREAM_NOT_FOUND", path

    async def test_the_list_holds_closed_streams_on_request(self, served: Served) -> None:
        await served.publish("wf-open", status(1))
        await served.publish("wf-closed", status(1))
        await served.http.delete("/api/streams/wf-closed")

        async def listed(query: str) -> list[str]:
            streams = (await served.http.get(f"/api/streams{query}")).json()
            return sorted(s["linkedWorkflowSessionId"] for s in streams)

        assert await listed("") == ["wf-open"]
        assert await listed("?all=true") == ["wf-closed", "wf-open"]

    async def test_the_list_is_newest_activity_first_in_pages(self, served: Served) -> None:
        """limit (default 100) bounds a page; X-Next-Cursor and Link name the next one,
        absent on the last; the cursor keeps ?all and limit in the Link."""
        for stream in ("wf-a", "wf-b", "wf-c", "wf-d", "wf-a"):
            await served.publish(stream, status(1))
        await served.http.delete("/api/streams/wf-b")  # closing is activity too
        first = await served.http.get("/api/streams?all=true&limit=2")
        assert first.status_code == 200
        assert [s["linkedWorkflowSessionId"] for s in first.json()] == ["wf-b", "wf-a"]
        cursor = first.headers["x-next-cursor"]
        assert (
            first.headers["link"] == f'</api/streams?all=true&limit=2&cursor={cursor}>; rel="next"'
        )
        second = await served.http.get(first.headers["link"][1:].partition(">")[0])
        assert [s["linkedWorkflowSessionId"] for s in second.json()] == ["wf-d", "wf-c"]
        assert "x-next-cursor" not in second.headers and "link" not in second.headers
        open_only = await served.http.get("/api/streams")
        assert [s["linkedWorkflowSessionId"] for s in open_only.json()] == ["wf-a", "wf-d", "wf-c"]
        assert "link" not in open_only.headers

    async def test_the_list_refuses_bad_pages(self, served: Served) -> None:
        await served.publish("wf-1", status(1))
        for query in ("limit=0", "limit=1001", "limit=x", "cursor=", "cursor=abc", "cursor=a%2Fb"):
            response = await served.http.get(f"/api/streams?{query}")
            assert response.status_code == 422, query
            assert response.json()["error"]["code"] == "VALIDATION_ERROR", query
        assert (await served.http.get("/api/streams?limit=1000")).status_code == 200

    async def test_paging_while_streams_are_made(self, served: Served) -> None:
        """Streams made while a client pages come before its cursor: every page after
        the first holds none of them, and no stream is listed twice or left out."""
        before = [f"wf-{n}" for n in range(30)]
        for stream in before:
            await served.http.post("/api/streams", json={"workflowSessionId": stream})
        made = 0

        async def make(count: int) -> None:
            nonlocal made
            for _ in range(count):
                body = {"workflowSessionId": f"new-{made}"}
                made += 1
                assert (await served.http.post("/api/streams", json=body)).status_code == 201

        seen: list[str] = []
        query = "limit=4"
        while True:
            page, _ = await asyncio.gather(served.http.get(f"/api/streams?{query}"), make(3))
            seen += [s["linkedWorkflowSessionId"] for s in page.json()]
            if "x-next-cursor" not in page.headers:
                break
            query = f"limit=4&cursor={page.headers['x-next-cursor']}"
        assert len(seen) == len(set(seen)), "a stream was listed twice"
        assert set(before) <= set(seen), "a stream was left out"
        assert made > 20 and len(served.hub.streams) == 30 + made

    async def test_close_then_purge(self, served: Served) -> None:
        """DELETE closes (history stays, publish is 409); purge removes it entirely."""
        await served.publish("wf-1", status(1))
        assert (await served.http.delete("/api/streams/wf-1")).status_code == 204
        closed = await served.http.get("/api/streams/wf-1")
        assert closed.json()["status"] == "CLOSED" and closed.json()["isActive"] is False
        refused = await served.http.post("/api/streams/wf-1/events", json=status(2))
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "STREAM_CLOSED"
        assert (await served.http.get("/api/streams/wf-1/history")).json()["total"] == 1
        reopened = await served.http.post("/api/streams", json={"workflowSessionId": "wf-1"})
        assert reopened.status_code == 200 and reopened.json()["status"] == "ACTIVE"
        assert (await served.publish("wf-1", status(3)))[0]["seq"] == 2
        assert (await served.http.delete("/api/streams/wf-1?purge=true")).status_code == 204
        assert (await served.http.get("/api/streams/wf-1")).status_code == 404


class TestPublish:
    async def test_single_and_batch(self, served: Served) -> None:
        """One event or a batch; the stored events come back in order with seqs."""
        [one] = await served.publish("wf-1", reasoning())
        assert one["seq"] == 1 and one["id"].startswith("evt_") and one["sessionId"] == "wf-1"
        batch = await served.publish(
            "wf-1",
            {"type": "COMMAND_STARTED", "data": {"commandName": "open", "action": "NAVIGATE"}},
            {"type": "COMMAND_COMPLETED", "data": {"commandName": "open", "duration": 5}},
        )
        assert [e["seq"] for e in batch] == [2, 3]
        assert batch[0]["data"]["commandId"] == batch[1]["data"]["commandId"]

    async def test_invalid_batch_lists_errors_by_index(self, served: Served) -> None:
        """A batch with bad events is 422, lists each error with its index, stores nothing."""
        response = await served.http.post(
            "/api/streams/wf-1/events",
            json={
                "events": [status(1), {"type": "REASONING", "data": {"thought": 1}}, {"type": "X"}]
            },
        )
        assert response.status_code == 422
        errors = response.json()["error"]["details"]["errors"]
        assert {(e["index"], e["path"]) for e in errors} == {
            (1, "data.thought"),
            (1, "data.confidence"),
            (1, "data.reasoningType"),
            (2, "type"),
            (2, "data"),
        }
        assert (await served.http.get("/api/streams/wf-1")).status_code == 404

    @pytest.mark.parametrize(
        ("content", "message"),
        [
            (b"{not json", "not valid JSON"),
            (b"[1, 2]", "must be an event"),
            (b'{"events": 3}', "must be a list"),
            (b'{"events": [], "x": 1}', "not allowed"),
        ],
    )
    async def test_malformed_bodies(self, served: Served, content: bytes, message: str) -> None:
        """Bodies that are not JSON or not an event are 422 with a clear message."""
        response = await served.http.post(
            "/api/streams/wf-1/events",
            content=content,
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 422
        assert message in response.json()["error"]["message"]

    async def test_limits(self, make_server: ServerFactory) -> None:
        """Too-large events and batches are 413; so is a body over the limit."""
        served = await make_server(
            limits={
                "maxEventBytes": 600,
                "maxBatchSize": 2,
                "maxMessageBytes": 4096,
                "maxScreenshotBytes": 1024,
                "maxBodyBytes": 4096,
            }
        )
        big = {"type": "STATUS", "data": {"statusType": "a", "status": "b", "message": "x" * 700}}
        assert (await served.http.post("/api/streams/wf-1/events", json=big)).status_code == 413
        batch = {"events": [status(1)] * 3}
        response = await served.http.post("/api/streams/wf-1/events", json=batch)
        assert response.status_code == 413 and response.json()["error"]["code"] == "BATCH_TOO_LARGE"
        huge = {"type": "STATUS", "data": {"statusType": "a", "status": "b", "message": "x" * 9000}}
        response = await served.http.post("/api/streams/wf-1/events", json=huge)
        assert response.status_code == 413 and response.json()["error"]["code"] == "BODY_TOO_LARGE"
        assert (await served.http.get("/api/streams/wf-1")).status_code == 404

    async def test_auto_create_off(self, make_server: ServerFactory) -> None:
        """With auto-create off, publishing to an unknown session is 404."""
        served = await make_server(server={"autoCreateStreams": False})
        response = await served.http.post("/api/streams/wf-1/events", json=status(1))
        assert response.status_code == 404

    async def test_screenshot_round_trip(self, served: Served) -> None:
        """A base64 screenshot is stored once; its url serves the bytes with ETag caching."""
        png = render_png(16, 9, 0.3, 2)
        [event] = await served.publish(
            "wf-1",
            {"type": "SCREENSHOT", "data": {"image": base64.b64encode(png).decode(), "width": 16}},
        )
        url = event["data"]["url"]
        assert "image" not in event["data"] and event["data"]["sizeBytes"] == len(png)
        got = await served.http.get(url)
        assert got.status_code == 200 and got.content == png
        assert got.headers["content-type"] == "image/png"
        assert "immutable" in got.headers["cache-control"]
        cached = await served.http.get(url, headers={"if-none-match": got.headers["etag"]})
        assert cached.status_code == 304
        missing = await served.http.get(url.rsplit("/", 1)[0] + "/scr_nope")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "SCREENSHOT_NOT_FOUND"

    async def test_cors_on_publish_and_elsewhere(self, make_server: ServerFactory) -> None:
        """Publishing and SSE (answered ahead of the middleware stack) carry the same
        CORS headers as every other route: the allowed origin echoed, others get none."""
        served = await make_server(security={"corsOrigins": ["https://ui.example"]})
        ok = {"origin": "https://ui.example"}
        published = await served.http.post("/api/streams/wf-1/events", json=status(1), headers=ok)
        assert published.status_code == 201
        assert published.headers["access-control-allow-origin"] == "https://ui.example"
        listed = await served.http.get("/api/streams", headers=ok)
        assert listed.headers["access-control-allow-origin"] == "https://ui.example"
        other = {"origin": "https://evil.example"}
        refused = await served.http.post("/api/streams/wf-1/events", json=status(2), headers=other)
        assert refused.status_code == 201 and "access-control-allow-origin" not in refused.headers
        bad = await served.http.post("/api/streams/wf-1/events", json={"type": "X"}, headers=ok)
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "VALIDATION_ERROR"
        assert bad.headers["access-control-allow-origin"] == "https://ui.example"
        async with served.http.stream("GET", "/api/streams/wf-1/events", headers=ok) as sse:
            assert sse.status_code == 200
            assert sse.headers["access-control-allow-origin"] == "https://ui.example"
            assert sse.headers["content-type"].startswith("text/event-stream")
        missing = await served.http.get("/api/streams/nope/events", headers=ok)
        assert missing.status_code == 404
        assert missing.headers["access-control-allow-origin"] == "https://ui.example"


async def raw_http(served: Served, requests: bytes, until_eof: bool = False) -> bytes:
    """Send ``requests`` as they are on one connection; what came back (at EOF, or once
    quiet for a moment)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", served.server.port)
    try:
        writer.write(requests)
        received = b""
        while True:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), 10 if until_eof else 0.5)
            except TimeoutError:
                assert not until_eof, "the server did not close the connection"
                return received
            if not chunk:
                return received
            received += chunk
    finally:
        writer.close()


def post(path: str, body: bytes, *extra: str) -> bytes:
    head = [f"POST {path} HTTP/1.1", "Host: localhost", "Content-Type: application/json"]
    head += [*extra, f"Content-Length: {len(body)}", "", ""]
    return "\r\n".join(head).encode() + body


class TestPublishOnTheWire:
    """Publish answers are written in one piece, head and body, outside uvicorn's send:
    what keep-alive, pipelining and ``Connection: close`` expect still holds."""

    async def test_pipelined_publishes_on_one_connection(self, make_server: ServerFactory) -> None:
        served = await make_server(security={"cors_origins": ["http://x.test"]})
        event = orjson.dumps(status(1))
        answers = await raw_http(
            served,
            post("/api/streams/wf-1/events", event, "Origin: http://x.test")
            + post("/api/streams/wf-1/events", b"{not json")
            + post("/api/streams/wf-1/events", event),
        )
        responses = answers.split(b"HTTP/1.1 ")[1:]
        assert [r[:3] for r in responses] == [b"201", b"422", b"201"]
        for response in responses:
            head, body = response.split(b"\r\n\r\n", 1)
            headers = dict(line.split(b": ", 1) for line in head.lower().split(b"\r\n")[1:])
            assert int(headers[b"content-length"]) == len(body)
            assert headers[b"content-type"] == b"application/json"
            assert b"server" in headers and b"date" in headers and b"connection" not in headers
        assert b"access-control-allow-origin: http://x.test\r\n" in responses[0]
        assert [
            orjson.loads(r.split(b"\r\n\r\n", 1)[1])["events"][0]["seq"]
            for r in (responses[0], responses[2])
        ] == [1, 2]

    async def test_connection_close(self, served: Served) -> None:
        answer = await raw_http(
            served,
            post("/api/streams/wf-1/events", orjson.dumps(status(1)), "Connection: close"),
            until_eof=True,
        )
        assert answer.startswith(b"HTTP/1.1 201") and b"connection: close\r\n" in answer


class TestHistoryAndAnalytics:
    async def test_history_query(self, served: Served) -> None:
        """History takes every HistoryFilter field as query parameters."""
        await served.publish("wf-1", *[status(i) for i in range(5)], reasoning("Login form"))
        page = (await served.http.get("/api/streams/wf-1/history?limit=2&offset=1")).json()
        assert [e["seq"] for e in page["events"]] == [2, 3] and page["total"] == 6
        typed = (await served.http.get("/api/streams/wf-1/history?types=REASONING")).json()
        assert [e["seq"] for e in typed["events"]] == [6]
        found = (await served.http.get("/api/streams/wf-1/history?search=login")).json()
        assert found["total"] == 1
        after = (await served.http.get("/api/streams/wf-1/history?afterSeq=4")).json()
        assert [e["seq"] for e in after["events"]] == [5, 6]
        stamp = page["events"][0]["timestamp"]
        ranged = await served.http.get(
            "/api/streams/wf-1/history", params={"startTime": stamp, "endTime": stamp}
        )
        assert all(e["timestamp"] == stamp for e in ranged.json()["events"])
        for bad in ("limit=0", "types=NOPE", "afterSeq=-1", "startTime=yesterday"):
            response = await served.http.get(f"/api/streams/wf-1/history?{bad}")
            assert response.status_code == 422, bad

    async def test_metrics_stats_analytics(self, served: Served) -> None:
        """Metrics, stream stats and analytics answer from the hub's counters."""
        await served.publish("wf-1", status(1), reasoning())
        metrics = (await served.http.get("/api/streams/metrics")).json()
        assert metrics["totalStreams"] == 1 and set(metrics["clientsByType"]) == set(ClientType)
        stats = (await served.http.get("/api/streams/wf-1/stats")).json()
        assert stats["totalEvents"] == 2 and stats["memoryUsage"] > 0
        window = {"start": "2000-01-01T00:00:00Z", "end": "2100-01-01T00:00:00Z"}
        distribution = (await served.http.get("/api/analytics/events", params=window)).json()
        assert distribution["STATUS"] == 1 and distribution["REASONING"] == 1
        activity = await served.http.get("/api/analytics/clients", params=window)
        assert activity.status_code == 200 and activity.json() == []
        bad = await served.http.get("/api/analytics/events", params={"start": "x", "end": "y"})
        assert bad.status_code == 422

    async def test_prometheus(self, served: Served) -> None:
        """/metrics exposes streams, clients, published and delivered events, latency."""
        await served.publish("wf-1", status(1))
        text = (await served.http.get("/metrics")).text
        assert 'executor_streamer_streams{state="open"} 1.0' in text
        assert 'executor_streamer_events_published_total{type="STATUS"} 1.0' in text
        assert 'executor_streamer_clients{type="WEBSOCKET"} 0.0' in text
        assert "executor_streamer_publish_latency_seconds_count 1.0" in text
        assert "executor_streamer_slow_consumers_dropped_total 0.0" in text


class TestOperational:
    async def test_health_and_docs(self, served: Served) -> None:
        """healthz, readyz, OpenAPI with the publish body, and / the viewer."""
        assert (await served.http.get("/healthz")).json() == {"status": "ok"}
        ready = await served.http.get("/readyz")
        assert ready.status_code == 200 and ready.json()["isHealthy"] is True
        spec = (await served.http.get("/openapi.json")).json()
        assert "/api/streams/{ref}/events" in spec["paths"]
        assert {"EventInput", "PublishBatch", "ReasoningData"} <= set(spec["components"]["schemas"])
        root = await served.http.get("/", follow_redirects=False)
        assert root.status_code == 200 and "text/html" in root.headers["content-type"]

    async def test_unknown_route_uses_the_error_body(self, served: Served) -> None:
        """Even a 404 for an unknown path has the error body."""
        response = await served.http.get("/api/nothing")
        assert response.status_code == 404 and response.json()["error"]["code"] == "NOT_FOUND"

    async def test_gzip_above_threshold(self, served: Served) -> None:
        """JSON responses above the threshold are gzip-compressed when asked for."""
        await served.publish("wf-1", *[status(i) for i in range(40)])
        response = await served.http.get(
            "/api/streams/wf-1/history", headers={"accept-encoding": "gzip"}
        )
        assert response.headers["content-encoding"] == "gzip"
        assert response.json()["total"] == 40
        small = await served.http.get("/healthz", headers={"accept-encoding": "gzip"})
        assert "content-encoding" not in small.headers

    async def test_brotli_when_configured(self, make_server: ServerFactory) -> None:
        """With algorithm brotli, clients that accept br get it; others still get gzip."""
        served = await make_server(compression={"algorithm": "brotli"})
        await served.publish("wf-1", *[status(i) for i in range(40)])
        url = "/api/streams/wf-1/history"
        br = await served.http.get(url, headers={"accept-encoding": "br, gzip"})
        assert br.headers["content-encoding"] == "br" and br.json()["total"] == 40
        gz = await served.http.get(url, headers={"accept-encoding": "gzip"})
        assert gz.headers["content-encoding"] == "gzip"

    async def test_sse_is_never_compressed(self, served: Served) -> None:
        """An SSE response stays uncompressed even when the client accepts gzip and br."""
        await served.publish("wf-1", *[status(i) for i in range(40)])
        async with served.http.stream(
            "GET", "/api/streams/wf-1/events?since=0", headers={"accept-encoding": "gzip, br"}
        ) as response:
            assert "content-encoding" not in response.headers
            async for line in response.aiter_lines():
                assert line.startswith(":")
                break

    async def test_compression_off(self, make_server: ServerFactory) -> None:
        """compression.enabled=false sends every response as it is."""
        served = await make_server(compression={"enabled": False})
        await served.publish("wf-1", *[status(i) for i in range(40)])
        response = await served.http.get(
            "/api/streams/wf-1/history", headers={"accept-encoding": "gzip"}
        )
        assert "content-encoding" not in response.headers
