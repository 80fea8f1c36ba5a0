"""Hub processes on one Redis (and on a Redis Cluster), one of them SIGKILLed mid-burst,
and the same behind the repository's nginx config (deploy/nginx.conf) with clients
resuming through it.

Everything here is a real process: redis-server, ``executor-streamer serve`` and nginx, on
free loopback ports."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import websockets

from executor_streamer.client import HubClient

from ..live_server import free_port, status
from ..redis_server import RedisCluster, RedisServer, running_cluster, running_redis
from ..waiting import eventually, eventually_async

REPOSITORY = Path(__file__).resolve().parents[2]


class Hub:
    def __init__(self, redis_url: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "executor_streamer", "serve", "--host", "127.0.0.1"]
        command += ["--port", str(self.port), "--storage", "redis"]
        self.process = subprocess.Popen(
            [*command, "--connection-string", redis_url],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={
                **os.environ,
                "EXECUTOR_STREAMER_LOGGING__LEVEL": "WARN",
                "EXECUTOR_STREAMER_SECURITY__RATE_LIMITING__ENABLED": "false",
            },
        )

    async def ready(self) -> Hub:
        async with httpx.AsyncClient(base_url=self.url) as http:
            assert await eventually_async(lambda: answers_ready(http)), (
                f"the hub on {self.port} did not become ready"
            )
        return self

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


@contextlib.asynccontextmanager
async def hub_processes(redis: RedisServer | RedisCluster, count: int) -> AsyncIterator[list[Hub]]:
    started = [Hub(redis.url) for _ in range(count)]
    try:
        for hub in started:
            await hub.ready()
        yield started
    finally:
        for hub in started:
            hub.stop()


@contextlib.contextmanager
def nginx_in_front(directory: Path, hubs: list[Hub]) -> Iterator[str]:
    """The repository's nginx config, with these hubs and a free port."""
    binary = shutil.which("nginx")
    if binary is None:
        pytest.fail("nginx is not installed (apt-get install nginx-light)")
    port = free_port()
    text = (REPOSITORY / "deploy" / "nginx.conf").read_text()
    hub_lines = [line for line in text.splitlines() if line.rstrip().endswith("# hub")]
    assert len(hub_lines) == 3, "deploy/nginx.conf marks one line per hub"
    upstream = "\n".join(
        f"        server 127.0.0.1:{hub.port} max_fails=1 fail_timeout=5s;" for hub in hubs
    )
    text = text.replace("\n".join(hub_lines), upstream)
    text, found = re.subn(r"listen \d+;\s+# listen", f"listen 127.0.0.1:{port};", text)
    assert found == 1
    # Run unprivileged in the test's directory: own pid file, logs and temp paths.
    text = text.replace("worker_processes auto;", "worker_processes 1;")
    text = f"pid {directory}/nginx.pid;\nerror_log {directory}/error.log warn;\n" + text.replace(
        "http {",
        f"http {{\n    access_log off;\n    client_body_temp_path {directory}/body;\n"
        f"    proxy_temp_path {directory}/proxy;\n",
        1,
    )
    config = directory / "nginx.conf"
    config.write_text(text)
    process = subprocess.Popen(
        [binary, "-c", str(config), "-p", str(directory), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


async def post(http: httpx.AsyncClient, url: str, event: dict[str, Any]) -> int | None:
    """Publish; the seq if it was acknowledged, None if it was not."""
    try:
        response = await http.post(f"{url}/api/streams/wf-1/events", json=event)
    except httpx.TransportError:
        return None
    if response.status_code != 201:
        return None
    seq: int = response.json()["events"][0]["seq"]
    return seq


class Tail:
    """A raw WebSocket subscriber that, when its hub dies, resumes on another one with
    its last seq and epoch: what the SDKs do."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self.seqs: list[int] = []
        self.epoch: str | None = None
        self.task = asyncio.create_task(self._run())
        self.connected = asyncio.Event()

    async def _run(self) -> None:
        for url in self.urls:
            with contextlib.suppress(OSError, websockets.ConnectionClosed):
                ws_url = "ws" + url.removeprefix("http") + "/ws"
                async with websockets.connect(ws_url) as ws:
                    await ws.recv()
                    message: dict[str, Any] = {"type": "subscribe", "streamId": "wf-1"}
                    message["since"] = self.seqs[-1] if self.seqs else 0
                    if self.epoch is not None:
                        message["epoch"] = self.epoch
                    await ws.send(orjson.dumps(message).decode())
                    async for raw in ws:
                        frame = orjson.loads(raw)
                        if frame["type"] == "subscribed":
                            assert frame["metadata"]["recovered"] is True
                            self.epoch = frame["metadata"]["epoch"]
                            self.connected.set()
                        elif frame["type"] == "event":
                            self.seqs.append(frame["event"]["seq"])

    async def until(self, count: int) -> list[int]:
        await eventually(lambda: len(self.seqs) >= count)
        return self.seqs

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


@pytest.mark.parametrize("engine", ["redis", "cluster"])
async def test_a_hub_killed_mid_burst_loses_nothing_acknowledged(
    tmp_path: Path, engine: str
) -> None:
    """SIGKILL hub A while it takes publishes: every acknowledged event reaches the
    subscribers on B and C, and A's own subscriber resumes on B with no gap and no
    duplicate. On one Redis server, and on a three-primary Redis Cluster."""
    redis_running = running_redis if engine == "redis" else running_cluster
    with redis_running(tmp_path) as redis:
        async with hub_processes(redis, 3) as (a, b, c), httpx.AsyncClient(timeout=5) as http:
            assert await post(http, a.url, status(0)) == 1
            tails = [Tail([a.url, b.url]), Tail([b.url]), Tail([c.url])]
            for tail in tails:
                await asyncio.wait_for(tail.connected.wait(), 10)
            acknowledged = [1]
            for i in range(400):
                seq = await post(http, a.url, status(i))
                if seq is not None:
                    acknowledged.append(seq)
                if i == 150:
                    a.kill()
            for i in range(50):  # the producer moves to another hub
                seq = await post(http, b.url, status(i))
                assert seq is not None
                acknowledged.append(seq)
            history = (await http.get(f"{c.url}/api/streams/wf-1/history?limit=10000")).json()
            stored = [e["seq"] for e in history["events"]]
            top = stored[-1]
            assert stored == list(range(1, top + 1))
            assert set(acknowledged) <= set(stored)
            for tail in tails:
                assert await tail.until(top) == list(range(1, top + 1))
                await tail.stop()


async def test_clients_behind_nginx_resume_across_a_killed_hub(tmp_path: Path) -> None:
    """Three hubs behind deploy/nginx.conf, no sticky sessions. A WebSocket client (the
    Python SDK) and an SSE client (resuming with Last-Event-ID, as EventSource does)
    watch through nginx; the hubs holding them are killed; both end with exactly the
    stream's events, once each."""
    with running_redis(tmp_path / "redis") as redis:
        async with hub_processes(redis, 3) as hubs:
            (tmp_path / "nginx").mkdir()
            with nginx_in_front(tmp_path / "nginx", hubs) as front:
                async with httpx.AsyncClient(base_url=front, timeout=5) as http:
                    assert await eventually_async(lambda: answers_ready(http)), "nginx"
                    assert (await http.post("/api/streams/wf-1/events", json=status(0))).is_success
                    got_ws: list[int] = []
                    got_sse: list[int] = []
                    ws_task = asyncio.create_task(_sdk_watch(front, got_ws))
                    sse_task = asyncio.create_task(_sse_watch(front, got_sse))
                    await eventually(lambda: got_ws and got_sse)
                    killed: set[int] = set()
                    acknowledged = 1
                    for i in range(240):
                        if await post(http, front, status(i)) is not None:
                            acknowledged += 1
                        if i in (60, 140):
                            holder = await _holder(hubs, killed)
                            killed.add(holder)
                            hubs[holder].kill()
                        await asyncio.sleep(0.002)  # a steady stream, not one burst
                    history = (await http.get("/api/streams/wf-1/history?limit=10000")).json()
                    top = history["events"][-1]["seq"]
                    assert top >= acknowledged
                    await eventually(lambda: len(got_ws) >= top and len(got_sse) >= top)
                    ws_task.cancel()
                    sse_task.cancel()
                    assert got_ws == list(range(1, top + 1))
                    assert got_sse == list(range(1, top + 1))
                    assert killed, "a hub holding a client was killed"


async def _holder(hubs: list[Hub], killed: set[int]) -> int:
    """A live hub that holds one of the stream's clients."""
    async with httpx.AsyncClient(timeout=5) as http:
        for index, hub in enumerate(hubs):
            if index in killed:
                continue
            session = (await http.get(f"{hub.url}/api/streams/wf-1")).json()
            if session["clients"]:
                return index
    raise AssertionError("no live hub holds a client")


async def answers_ready(http: httpx.AsyncClient) -> bool:
    """Whether the server (or the proxy) behind ``http`` answers ``/readyz`` with 200."""
    with contextlib.suppress(httpx.TransportError):
        return (await http.get("/readyz")).status_code == 200
    return False


async def _sdk_watch(url: str, seqs: list[int]) -> None:
    async with HubClient(url) as client:
        async for event in client.subscribe("wf-1", since=0):
            seqs.append(event.seq)


async def _sse_watch(url: str, seqs: list[int]) -> None:
    """EventSource's behaviour: reconnect, sending the last id as Last-Event-ID."""
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(5, read=30)) as http:
        while True:
            headers = {"Last-Event-ID": str(seqs[-1] if seqs else 0)}
            with contextlib.suppress(httpx.HTTPError):
                async with http.stream("GET", "/api/streams/wf-1/events", headers=headers) as r:
                    event = None
                    async for line in r.aiter_lines():
                        if line.startswith("event:"):
                            event = line[6:].strip()
                        elif line.startswith("data:") and event == "stream_event":
                            data = orjson.loads(line[5:])
                            if isinstance(data, dict) and "seq" in data:
                                seqs.append(data["seq"])
                        elif line == "":
                            event = None
            await asyncio.sleep(0.05)  # EventSource's pause before it connects again
