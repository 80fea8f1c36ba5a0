"""SIGKILL a real hub mid-burst; after a restart every acknowledged event is back."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
from websockets.asyncio.client import connect

from executor_streamer.demo import render_png

from ..live_server import free_port
from ..waiting import eventually_async


def start(port: int, database: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "executor_streamer", "serve", "--host", "127.0.0.1"]
    return subprocess.Popen(
        [*command, "--port", str(port), "--storage", "file", "--connection-string", str(database)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "EXECUTOR_STREAMER_LOGGING__LEVEL": "WARN"},
    )


async def ready(http: httpx.AsyncClient) -> None:
    async def answers() -> bool:
        try:
            return (await http.get("/readyz")).status_code == 200
        except httpx.TransportError:
            return False  # not listening yet

    assert await eventually_async(answers, 30), "the hub did not become ready"


class TestCrashRecovery:
    async def test_sigkill_during_a_burst_loses_no_acknowledged_event(self, tmp_path: Path) -> None:
        """Events and screenshots acknowledged before a SIGKILL are all there after a
        restart, seqs are contiguous, and SSE, long-polling and WebSocket clients all
        resume exactly."""
        database = tmp_path / "hub.db"
        port = free_port()
        image = render_png(32, 20, 0.5, 9)
        acknowledged: dict[int, dict[str, object]] = {}
        process = await asyncio.to_thread(start, port, database)
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, timeout=5) as http:
            await ready(http)

            async def publisher(worker: int) -> None:
                n = 0
                while True:
                    n += 1
                    body: dict[str, object] = {
                        "events": [
                            {
                                "type": "STATUS",
                                "data": {"statusType": f"w{worker}", "status": str(n)},
                            },
                            {
                                "type": "SCREENSHOT",
                                "data": {
                                    "image": base64.b64encode(image).decode(),
                                    "caption": f"{worker}-{n}",
                                },
                            },
                        ]
                    }
                    try:
                        response = await http.post("/api/streams/wf-1/events", json=body)
                    except httpx.TransportError:
                        return  # the hub died; this request was never acknowledged
                    assert response.status_code == 201, response.text
                    for stored in response.json()["events"]:
                        acknowledged[stored["seq"]] = stored
                    if len(acknowledged) >= 400:
                        enough.set()

            enough = asyncio.Event()
            workers = [asyncio.create_task(publisher(w)) for w in range(4)]
            await asyncio.wait_for(enough.wait(), 60)
            process.send_signal(signal.SIGKILL)  # while the workers keep publishing
            await asyncio.gather(*workers)
            await asyncio.to_thread(process.wait, 10)

        process = await asyncio.to_thread(start, port, database)
        try:
            async with httpx.AsyncClient(base_url=base, timeout=10) as http:
                await ready(http)
                history = (await http.get("/api/streams/wf-1/history?limit=10000")).json()
                stored = {e["seq"]: e for e in history["events"]}
                assert list(stored) == list(range(1, len(stored) + 1))  # no gap
                assert set(acknowledged) <= set(stored)
                for seq, event in acknowledged.items():
                    assert stored[seq] == event
                shots = [e for e in acknowledged.values() if e["type"] == "SCREENSHOT"]
                for event in shots[-5:]:
                    got = await http.get(event["data"]["url"])  # type: ignore[index]
                    assert got.status_code == 200 and got.content == image
                last = max(stored)
                resume_from = last - 3
                published = await http.post(
                    "/api/streams/wf-1/events",
                    json={"type": "STATUS", "data": {"statusType": "after", "status": "restart"}},
                )
                assert published.json()["events"][0]["seq"] == last + 1
                async with http.stream(
                    "GET",
                    "/api/streams/wf-1/events",
                    headers={"Last-Event-ID": str(resume_from)},
                    timeout=10,
                ) as sse:
                    seqs: list[int] = []
                    kind = ""
                    async for line in sse.aiter_lines():
                        if line.startswith("event: "):
                            kind = line[7:]
                        elif line.startswith("data: ") and kind == "stream_event":
                            seqs.append(orjson.loads(line[6:])["seq"])
                            if len(seqs) == 4:
                                break
                assert seqs == [last - 2, last - 1, last, last + 1]
                polled = await http.get(f"/api/streams/wf-1/poll?since={resume_from}&timeout=0")
                assert [e["seq"] for e in polled.json()["events"]] == seqs
                ws_url = f"ws://127.0.0.1:{port}/ws?streamId=wf-1&since={resume_from}"
                async with connect(ws_url, max_queue=None) as ws:
                    frames = [orjson.loads(await ws.recv()) for _ in range(6)]
                assert [f["type"] for f in frames[:2]] == ["connection_ack", "subscribed"]
                assert [f["event"]["seq"] for f in frames[2:]] == seqs
        finally:
            process.terminate()
            await asyncio.to_thread(process.wait, 20)
