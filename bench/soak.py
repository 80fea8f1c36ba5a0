"""Soak: the original specification's 1,000 events/s, compressed, against a real server;
memory must stay flat.

    python bench/soak.py [--seconds 90] [--runs] [--memory-mib 1024]

Starts ``executor-streamer serve`` (memory backend, one stream with a 10,000-event
history), publishes batches of 100 events over HTTP as fast as 4 connections go (tens of
times 1,000 events/s, so a run of minutes covers hours of that load,
each event passing through a history 10,000 long), while ``bench/fanout/churn.mjs``
keeps 50 WebSocket clients joining, resuming from the last seq they saw, and leaving
every second or two. The server's resident memory is sampled every second. Reports the
events published (and how many hours of 1,000 events/s that is), client sessions, peak
memory and the memory growth per hour at 1,000 events/s after the first quarter (warm-up);
writes ``bench/results/<date>-soak.json``.

With ``--runs``, two more connections publish whole runs beside it: a new stream each,
10,000 events, then closed, as agents' runs come and go. Closed runs' history stays in
memory until the hub's memory budget (``limits.maxMemoryBytes``, ``--memory-mib``) evicts
it; the report adds the runs, the streams evicted (and forgotten) and the publishes refused
(``MEMORY_PRESSURE``), read from ``/metrics``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import time

import httpx

from common import rss_kib, serve_command, start_server, write_report
from fanout import FANOUT

SPEC_RATE = 1000
STREAM = "soak"


def event(n: int) -> dict[str, object]:
    return {
        "type": "STATUS",
        "data": {"statusType": "soak", "status": "running"},
        "metadata": {"n": n},
    }


async def refused(response: httpx.Response) -> bool:
    """A publish the memory budget refused (503 ``MEMORY_PRESSURE``): wait as told."""
    if response.status_code == 503 and "MEMORY_PRESSURE" in response.text:
        await asyncio.sleep(int(response.headers.get("retry-after", "1")))
        return True
    response.raise_for_status()
    return False


async def publish(base: str, seconds: float) -> int:
    deadline = time.monotonic() + seconds
    published = 0

    async def worker(http: httpx.AsyncClient) -> None:
        nonlocal published
        while time.monotonic() < deadline:
            body = {"events": [event(published + i) for i in range(100)]}
            response = await http.post(f"/api/streams/{STREAM}/events", json=body)
            if await refused(response):
                continue
            published += 100

    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        await asyncio.gather(*(worker(http) for _ in range(4)))
    return published


async def publish_runs(base: str, seconds: float, workers: int = 2) -> tuple[int, int]:
    """Runs of 10,000 events, each into a new stream closed at its end; returns the runs
    finished and the events they hold."""
    deadline = time.monotonic() + seconds
    runs = events = 0

    async def worker(number: int, http: httpx.AsyncClient) -> None:
        nonlocal runs, events
        run = 0
        while time.monotonic() < deadline:
            stream = f"run-{number}-{run}"
            for batch in range(100):
                body = {"events": [event(batch * 100 + i) for i in range(100)]}
                response = await http.post(f"/api/streams/{stream}/events", json=body)
                if await refused(response):
                    continue
                events += 100
                if time.monotonic() >= deadline:
                    break
            (await http.delete(f"/api/streams/{stream}")).raise_for_status()
            runs += 1
            run += 1

    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        await asyncio.gather(*(worker(n, http) for n in range(workers)))
    return runs, events


def metric(text: str, name: str) -> float:
    """A metric's value in a Prometheus exposition (summed over labels)."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


async def sample(pid: int, seconds: float, into: list[tuple[float, int]]) -> None:
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        into.append((time.monotonic() - started, rss_kib(pid)))
        await asyncio.sleep(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=90)
    parser.add_argument("--runs", action="store_true", help="also publish whole runs")
    parser.add_argument("--memory-mib", type=int, default=1024, help="limits.maxMemoryBytes")
    args = parser.parse_args()
    settings = {
        "EXECUTOR_STREAMER_DEFAULT_STREAM_CONFIG__MAX_HISTORY_SIZE": "10000",
        "EXECUTOR_STREAMER_LIMITS__MAX_MEMORY_BYTES": str(args.memory_mib << 20),
    }
    server, base = start_server(serve_command(), settings)
    samples: list[tuple[float, int]] = []
    runs = run_events = 0
    metrics_text = ""
    try:
        httpx.post(base + "/api/streams", json={"workflowSessionId": STREAM})
        spec = {"base": base, "stream": STREAM, "concurrent": 50, "lifeMs": 1500}
        churn = subprocess.Popen(
            ["node", str(FANOUT / "churn.mjs"), json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

        async def run() -> tuple[int, tuple[int, int]]:
            published, _, finished = await asyncio.gather(
                publish(base, args.seconds),
                sample(server.pid, args.seconds, samples),
                publish_runs(base, args.seconds) if args.runs else asyncio.sleep(0, (0, 0)),
            )
            return published, finished

        published, (runs, run_events) = asyncio.run(run())
        clients = json.loads(churn.communicate(timeout=30)[0])  # closing stdin stops it
        metrics_text = httpx.get(base + "/metrics").text
    finally:
        server.terminate()
        server.wait(30)
    spec_hours = (published + run_events) / SPEC_RATE / 3600
    warm = [s for s in samples if s[0] >= args.seconds / 4]
    slope_kib_per_s = statistics.linear_regression([t for t, _ in warm], [r for _, r in warm]).slope
    per_spec_hour = slope_kib_per_s * args.seconds / spec_hours / 1024 if spec_hours else 0.0
    peak = max(r for _, r in samples) / 1024
    print(
        f"\n| soak | value |\n|---|---:|\n"
        f"| events published | {published:,} ({spec_hours:.1f} h of 1,000 events/s) |\n"
        f"| client sessions (joined and left) | {clients['sessions']:,} |\n"
        f"| events delivered to them | {clients['events']:,} |\n"
        f"| server memory, peak | {peak:.0f} MiB |\n"
        f"| memory after warm-up, first / last sample | {warm[0][1] / 1024:.0f} / "
        f"{warm[-1][1] / 1024:.0f} MiB |\n"
        f"| growth after warm-up per hour at 1,000 events/s | {per_spec_hour:+.2f} MiB |\n"
    )
    evicted = metric(metrics_text, "executor_streamer_memory_evicted_streams_total")
    refused = metric(metrics_text, "executor_streamer_memory_refused_publishes_total")
    forgotten = metric(metrics_text, "executor_streamer_memory_forgotten_streams_total")
    if args.runs:
        print(
            f"| runs of 10,000 events, closed at their end | {runs:,} ({run_events:,} events) |\n"
            f"| memory budget | {args.memory_mib} MiB |\n"
            f"| closed runs evicted / forgotten / publishes refused | {evicted:.0f} / "
            f"{forgotten:.0f} / {refused:.0f} |\n"
        )
    report = {
        "seconds": args.seconds,
        "events": published,
        "seed_hours": round(spec_hours, 2),
        "client_sessions": clients["sessions"],
        "events_delivered": clients["events"],
        "peak_mib": round(peak, 1),
        "runs": runs,
        "run_events": run_events,
        "memory_budget_mib": args.memory_mib,
        "evicted_streams": evicted,
        "forgotten_streams": forgotten,
        "refused_publishes": refused,
        "growth_mib_per_spec_hour": round(per_spec_hour, 3),
        "rss_kib_samples": samples,
    }
    write_report("soak", report)


if __name__ == "__main__":
    main()
