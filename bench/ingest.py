"""Ingest benchmark: how fast events get into the hub, per storage backend.

    python bench/ingest.py [--events N] [--repeat R]

Measures, side by side in one run, the median over R repetitions of:
- in-process single publishes (``hub.publisher.publish_status``) from one publisher
  awaiting each in turn and from 8 concurrent publishers (whose publishes the group
  committer stores together), and 100-event batches from one and from 8 publishers,
  into memory, SQLite (a temporary file), PostgreSQL (127.0.0.1:5432, database test) and
  Redis (a redis-server of its own, without persistence: the engine for several hubs,
  whose publishes are each a Lua script call);
- HTTP single-event and 100-event-batch publishes against a real ``executor-streamer
  serve`` process on each of those backends, over 8 connections, driven by wrk (Debian
  package ``wrk``) when it is installed: a load generator far cheaper than the server it
  loads. Without wrk, httpx in this process drives it, and the row says so: that number
  is bound by the client.
Every row runs with the garbage-collector thresholds ``serve`` sets
(``tune_garbage_collector``), so in-process and HTTP rows measure the same configuration;
each backend's in-process rows run in a fresh process.
Prints a markdown table and writes ``bench/results/<date>-ingest.json``. Numbers are for
comparing runs on the same machine, not absolutes: this machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor

import httpx

from common import RESULTS, serve_command, start_redis, start_server, write_report
from executor_streamer import ExecutorStreamer, ExecutorStreamerConfig
from executor_streamer.history import HistoryStore, MemoryHistory
from executor_streamer.history.sql import SqlHistory
from executor_streamer.redis_engine.store import RedisHistory
from executor_streamer.server.runner import tune_garbage_collector

POSTGRES_URL = os.environ.get(
    "EXECUTOR_STREAMER_BENCH_POSTGRES", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = "EXECUTOR_STREAMER_BENCH_REDIS"
"""Set by main() to the redis-server it started, for the processes it spawns."""
BATCH = 100
CONCURRENCY = 8


def event(n: int) -> dict[str, object]:
    return {"type": "STATUS", "data": {"statusType": "bench", "status": str(n)}}


async def in_process(events: int, batched: bool, storage: str, publishers: int = 1) -> float:
    config = ExecutorStreamerConfig().with_overrides(
        {
            "logging": {"level": "ERROR"},
            "defaultStreamConfig": {"maxHistorySize": 1_000_000},
            "limits": {"maxHistorySize": 1_000_000},
        }
    )
    async with ExecutorStreamer(config, storage=make_storage(storage)) as hub:
        session = f"bench-{time.monotonic_ns()}"
        await hub.create_stream(session)

        async def publisher(share: range) -> None:
            if batched:
                for start in share[::BATCH]:
                    batch = [event(start + i) for i in range(BATCH)]
                    await hub.publisher.publish_batch(session, batch)
            else:
                for n in share:
                    await hub.publisher.publish_status(session, "bench", str(n))

        started = time.perf_counter()
        each = events // publishers
        await asyncio.gather(
            *(publisher(range(p * each, (p + 1) * each)) for p in range(publishers))
        )
        return each * publishers / (time.perf_counter() - started)


def make_storage(storage: str) -> HistoryStore:
    if storage == "memory":
        return MemoryHistory()
    if storage == "redis":
        return RedisHistory(os.environ[REDIS_URL])
    if storage == "sqlite":
        return SqlHistory(f"sqlite+aiosqlite:///{tempfile.mkdtemp()}/bench.db")
    return SqlHistory(POSTGRES_URL)


async def over_http(base: str, events: int, batched: bool) -> float:
    session = f"http-{time.monotonic_ns()}"
    per_request = BATCH if batched else 1
    requests = events // per_request
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        await http.post("/api/streams", json={"workflowSessionId": session})
        queue: asyncio.Queue[int] = asyncio.Queue()
        for n in range(requests):
            queue.put_nowait(n)

        async def worker() -> None:
            while not queue.empty():
                n = queue.get_nowait()
                body = (
                    {"events": [event(n * BATCH + i) for i in range(BATCH)]}
                    if batched
                    else event(n)
                )
                response = await http.post(f"/api/streams/{session}/events", json=body)
                response.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return requests * per_request / (time.perf_counter() - started)


def wrk_rate(base: str, batched: bool, session: str) -> float:
    """Events/s that wrk achieves for 5 s; each request carries 1 or BATCH events."""
    httpx.post(f"{base}/api/streams", json={"workflowSessionId": session})
    body = {"events": [event(i) for i in range(BATCH)]} if batched else event(0)
    script = RESULTS / ".wrk-post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = [[{json.dumps(body)}]]\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    url = f"{base}/api/streams/{session}/events"
    command = ["wrk", "-t1", f"-c{CONCURRENCY}", "-d5s", "-s", str(script), url]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    script.unlink()
    if "Non-2xx" in output:
        raise RuntimeError(f"wrk saw errors:\n{output}")
    requests = float(output.split("Requests/sec:")[1].split()[0])
    return requests * (BATCH if batched else 1)


async def wrk_median(base: str, batched: bool, repeat: int) -> float:
    prefix = "batch" if batched else "single"
    rates = [
        await asyncio.to_thread(wrk_rate, base, batched, f"wrk-{prefix}-{i}") for i in range(repeat)
    ]
    return statistics.median(rates)


SERVE_STORAGE = {
    "memory": [],
    "sqlite": ["--storage", "file", "--connection-string", "{tmp}/serve.db"],
    "postgres": ["--storage", "database", "--connection-string", POSTGRES_URL],
    "redis": ["--storage", "redis", "--connection-string", "{redis}"],
}


def start_hub(storage: str) -> tuple[subprocess.Popen[bytes], str]:
    options = [
        option.format(tmp=tempfile.mkdtemp(), redis=os.environ.get(REDIS_URL, ""))
        for option in SERVE_STORAGE[storage]
    ]
    history = {
        "EXECUTOR_STREAMER_DEFAULT_STREAM_CONFIG__MAX_HISTORY_SIZE": "1000000",
        "EXECUTOR_STREAMER_LIMITS__MAX_HISTORY_SIZE": "1000000",
    }
    return start_server(serve_command(*options), history)


async def http_rows(storage: str, events: int, repeat: int) -> dict[str, float]:
    process, base = start_hub(storage)
    try:
        if shutil.which("wrk"):
            label = "wrk, 8 connections"
            single = await wrk_median(base, False, repeat)
            batch = await wrk_median(base, True, repeat)
        else:
            label = "httpx, client-bound"
            single_run = functools.partial(over_http, base, events // 5, False)
            single = await median_of(repeat, single_run)
            batch = await median_of(repeat, functools.partial(over_http, base, events, True))
    finally:
        process.terminate()
        process.wait(10)
    return {
        f"{storage}: HTTP, single ({label})": single,
        f"{storage}: HTTP, batch of 100 ({label})": batch,
    }


async def median_of(repeat: int, run: Callable[[], Awaitable[float]]) -> float:
    return statistics.median([await run() for _ in range(repeat)])


async def in_process_rows(storage: str, events: int, repeat: int) -> dict[str, float]:
    # One transaction per event is slow on SQL: fewer of them keep the run short.
    singles = events // 4 if storage == "memory" else events // 40
    single = functools.partial(in_process, singles, False, storage)
    concurrent = functools.partial(in_process, singles * 4, False, storage, CONCURRENCY)
    batched = functools.partial(in_process, events, True, storage)
    batched_concurrent = functools.partial(in_process, events, True, storage, CONCURRENCY)
    return {
        f"{storage}: in-process, single": await median_of(repeat, single),
        f"{storage}: in-process, single, 8 publishers": await median_of(repeat, concurrent),
        f"{storage}: in-process, batch of 100": await median_of(repeat, batched),
        f"{storage}: in-process, batch of 100, 8 publishers": await median_of(
            repeat, batched_concurrent
        ),
    }


def in_fresh_process(storage: str, events: int, repeat: int) -> dict[str, float]:
    """The in-process rows of one backend, measured in a process of their own: what
    an earlier backend's run left on the heap slowed later ones by a quarter."""
    tune_garbage_collector()
    return asyncio.run(in_process_rows(storage, events, repeat))


async def main(events: int, repeat: int) -> None:
    rows: dict[str, float] = {}
    spawn = multiprocessing.get_context("spawn")
    redis, os.environ[REDIS_URL] = start_redis()
    try:
        for storage in ("memory", "sqlite", "postgres", "redis"):
            with ProcessPoolExecutor(1, mp_context=spawn) as pool:
                rows |= pool.submit(in_fresh_process, storage, events, repeat).result()
            rows |= await http_rows(storage, events, repeat)
    finally:
        redis.kill()
    print(f"\n| ingest | events/s (median of {repeat}) |\n|---|---:|")
    for name, rate in rows.items():
        print(f"| {name} | {rate:,.0f} |")
    write_report("ingest", {"events": events, "repeat": repeat, "events_per_second": rows})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.events, args.repeat))
