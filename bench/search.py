"""Search across runs and run analytics over a large corpus (docs/query.md).

    python bench/search.py [--runs 1000] [--per-run 1000] [--backends file,database]

Writes ``runs`` x ``per_run`` events (1,000,000 by default) over the last 24 hours into a
fresh SQLite file and a fresh PostgreSQL database (rows inserted directly, in bulk: this
measures reading, not publishing), starts a hub on each, and times, the median of 5:

- a selective search: ``type == "COMMAND_FAILED" && data.error.code == "TIMEOUT"`` in the
  last hour (``startTime``), the first page of 100;
- a broad search: no filter, the first page of 100, and a page 50 pages deep;
- the run analytics of the last 24 hours (``/api/analytics/runs``'s computation);
- a counter widget's figure over 24 hours.

In-process (no HTTP): the figures are the hub's and the database's. Prints a markdown
table and writes ``bench/results/<date>-search.json``. Needs PostgreSQL for ``database``
(``EXECUTOR_STREAMER_BENCH_POSTGRES``, default ``postgresql+asyncpg://postgres@127.0.0.1:5432/test``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from common import write_report
from executor_streamer import ExecutorStreamer, ExecutorStreamerConfig
from executor_streamer.backends import sql_url
from executor_streamer.core.run_analytics import Window
from executor_streamer.core.search import SearchRequest
from executor_streamer.history.base import StreamState
from executor_streamer.history.search import millis_of
from executor_streamer.history.sql import SqlHistory
from executor_streamer.history.sql_tables import events, state_row, streams
from executor_streamer.security import Scope

POSTGRES = os.environ.get(
    "EXECUTOR_STREAMER_BENCH_POSTGRES", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
ADMIN = Scope(admin=True)
TIMEOUTS = 'type == "COMMAND_FAILED" && data.error.code == "TIMEOUT"'
WIDGETS = [{"title": "Timeouts", "kind": "counter", "filter": TIMEOUTS}]


def run_events(
    run: int, per_run: int, start: datetime, rng: random.Random
) -> list[tuple[Any, ...]]:
    """One run's rows: commands (started, then completed or failed), thoughts, variables,
    a workflow STATUS at the end; ten minutes long."""
    stream_id, session = f"str_bench{run:06d}", f"bench-{run}"
    rows = []
    step = timedelta(minutes=10) / per_run
    command = 0
    data: dict[str, Any]
    for seq in range(1, per_run + 1):
        at = start + step * seq
        if seq == per_run:
            kind, data = (
                "STATUS",
                {"statusType": "workflow", "status": rng.choice(["COMPLETED", "FAILED"])},
            )
        elif seq % 4 == 1:
            command += 1
            action = rng.choice(["CLICK", "NAVIGATE", "TYPE"])
            kind, data = (
                "COMMAND_STARTED",
                {
                    "commandId": f"c{command}",
                    "commandName": f"{action.lower()}_{command % 50}",
                    "action": action,
                },
            )
        elif seq % 4 == 2:
            if rng.random() < 0.1:
                code = "TIMEOUT" if rng.random() < 0.2 else "NOT_FOUND"
                kind, data = (
                    "COMMAND_FAILED",
                    {
                        "commandId": f"c{command}",
                        "commandName": f"cmd_{command % 50}",
                        "error": {"code": code, "message": "m"},
                        "duration": rng.randint(100, 30000),
                    },
                )
            else:
                kind, data = (
                    "COMMAND_COMPLETED",
                    {
                        "commandId": f"c{command}",
                        "commandName": f"cmd_{command % 50}",
                        "duration": rng.randint(10, 5000),
                    },
                )
        elif seq % 4 == 3:
            kind, data = (
                "REASONING",
                {
                    "thought": f"step {seq} of the plan",
                    "confidence": rng.random(),
                    "reasoningType": "planning",
                },
            )
        else:
            kind, data = "VARIABLE_UPDATE", {"name": f"v{seq % 7}", "value": str(seq)}
        stamp = at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"
        event = {
            "id": f"evt_{run}_{seq}",
            "streamId": stream_id,
            "sessionId": session,
            "seq": seq,
            "type": kind,
            "timestamp": stamp,
            "data": data,
        }
        payload = orjson.dumps(event)
        rows.append(
            (stream_id, seq, kind, millis_of(datetime.fromisoformat(stamp)), None, "", payload)
        )
    return rows


async def build(url: str, runs: int, per_run: int) -> float:
    """The corpus, written directly; returns seconds taken."""
    started = time.perf_counter()
    store = SqlHistory(url)
    await store.start()
    await store.close()
    engine = create_async_engine(url)
    rng = random.Random(7)
    now = datetime.now(UTC)
    insert_events = events.insert()
    insert_streams = streams.insert()
    columns = [c.name for c in events.columns]
    async with engine.begin() as connection:
        for run in range(runs):
            start = now - timedelta(hours=24) + timedelta(hours=23.8) * run / runs
            rows = run_events(run, per_run, start, rng)
            await connection.execute(
                insert_events, [dict(zip(columns, row, strict=True)) for row in rows]
            )
            state = StreamState(
                stream_id=f"str_bench{run:06d}",
                workflow_session_id=f"bench-{run}",
                status="CLOSED",
                config={},
                metadata={},
                epoch="bench",
                created_at=start,
                last_activity=start + timedelta(minutes=10),
                last_seq=per_run,
                running_commands={},
            )
            await connection.execute(
                insert_streams,
                dict(zip([c.name for c in streams.columns], state_row(state), strict=True)),
            )
            if run % 100 == 99:
                print(f"  {run + 1} runs written", flush=True)
        if engine.dialect.name == "postgresql":
            await connection.execute(text("ANALYZE es_events"))
    await engine.dispose()
    return time.perf_counter() - started


async def median_ms(action: Callable[[], Awaitable[Any]], repeat: int = 5) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        began = time.perf_counter()
        result = await action()
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times), result


async def measure(backend: str, url: str, runs: int, per_run: int) -> dict[str, Any]:
    print(f"{backend}: writing {runs * per_run:,} events over {runs} runs", flush=True)
    written = await build(sql_url(backend, url), runs, per_run)
    config = ExecutorStreamerConfig().with_overrides(
        {
            "logging": {"level": "ERROR"},
            "persistence": {"storageBackend": backend, "connectionString": url},
            "viewer": {"dashboard": {"widgets": WIDGETS}},
        }
    )
    hub = ExecutorStreamer(config)
    await hub.start()
    try:
        hour_ago = datetime.now(UTC) - timedelta(hours=1)
        selective_ms, selective = await median_ms(
            lambda: hub.runs.search(ADMIN, SearchRequest(expression=TIMEOUTS, start_time=hour_ago))
        )
        broad_ms, broad = await median_ms(lambda: hub.runs.search(ADMIN, SearchRequest(limit=100)))
        cursor = None
        for _ in range(50):
            cursor = (
                await hub.runs.search(ADMIN, SearchRequest(limit=100, cursor=cursor))
            ).next_cursor
        deep_ms, _ = await median_ms(
            lambda: hub.runs.search(ADMIN, SearchRequest(limit=100, cursor=cursor))
        )
        window = Window.of(None, None)
        analytics_ms, report = await median_ms(
            lambda: hub.run_analytics.runs(ADMIN, window, None), repeat=3
        )
        widget_ms, figure = await median_ms(
            lambda: hub.run_analytics.widget(ADMIN, 0, None, None), repeat=3
        )
    finally:
        await hub.stop()
    return {
        "backend": backend,
        "events": runs * per_run,
        "runs": runs,
        "write_seconds": round(written, 1),
        "selective_ms": round(selective_ms, 1),
        "selective_found": len(selective.records),
        "broad_first_page_ms": round(broad_ms, 1),
        "broad_found": len(broad.records),
        "broad_page_51_ms": round(deep_ms, 1),
        "analytics_ms": round(analytics_ms, 1),
        "analytics_runs": report["runs"]["total"],
        "widget_counter_ms": round(widget_ms, 1),
        "widget_value": figure["value"],
    }


async def main_async(args: argparse.Namespace) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        for backend in args.backends.split(","):
            if backend == "file":
                url = str(Path(directory) / "search.db")
            else:
                url = args.postgres
                engine = create_async_engine(url)
                async with engine.begin() as connection:
                    for table in ("es_events", "es_screenshots", "es_streams", "es_schema_version"):
                        await connection.execute(text(f"DROP TABLE IF EXISTS {table}"))
                await engine.dispose()
            rows.append(await measure(backend, url, args.runs, args.per_run))
    header = ["backend", "events", "selective (last hour, TIMEOUT)", "broad page 1"]
    header += ["broad page 51", "analytics 24 h", "counter widget 24 h"]
    print("\n| " + " | ".join(header) + " |")
    print("|---" * len(header) + "|")
    for r in rows:
        cells = [
            r["backend"],
            f"{r['events']:,}",
            f"{r['selective_ms']} ms ({r['selective_found']} found)",
            f"{r['broad_first_page_ms']} ms",
            f"{r['broad_page_51_ms']} ms",
            f"{r['analytics_ms']} ms",
            f"{r['widget_counter_ms']} ms",
        ]
        print("| " + " | ".join(cells) + " |")
    write_report("search", {"runs": args.runs, "per_run": args.per_run, "results": rows})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--per-run", type=int, default=1000)
    parser.add_argument("--backends", default="file,database")
    parser.add_argument("--postgres", default=POSTGRES)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
