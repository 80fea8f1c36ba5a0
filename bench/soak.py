"""Soak: the original specification's 1,000 events/s, compressed, against a real server;
memory must stay flat.

    python bench/soak.py [--seconds 90]

Starts ``executor-streamer serve`` (memory backend, one stream with a 10,000-event
history), publishes batches of 100 events over HTTP as fast as 4 connections go (tens of
times 1,000 events/s, so a run of minutes covers hours of that load,
each event passing through a history 10,000 long), while ``bench/fanout/churn.mjs``
keeps 50 WebSocket clients joining, resuming from the last seq they saw, and leaving
every second or two. The server's resident memory is sampled every second. Reports the
events published (and how many hours of 1,000 events/s that is), client sessions, peak
memory and the memory growth per hour at 1,000 events/s after the first quarter (warm-up);
writes ``bench/results/<date>-soak.json``.
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


async def publish(base: str, seconds: float) -> int:
    deadline = time.monotonic() + seconds
    published = 0

    async def worker(http: httpx.AsyncClient) -> None:
        nonlocal published
        while time.monotonic() < deadline:
            body = {"events": [event(published + i) for i in range(100)]}
            response = await http.post(f"/api/streams/{STREAM}/events", json=body)
            response.raise_for_status()
            published += 100

    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        await asyncio.gather(*(worker(http) for _ in range(4)))
    return published


async def sample(pid: int, seconds: float, into: list[tuple[float, int]]) -> None:
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        into.append((time.monotonic() - started, rss_kib(pid)))
        await asyncio.sleep(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=90)
    args = parser.parse_args()
    history = {"EXECUTOR_STREAMER_DEFAULT_STREAM_CONFIG__MAX_HISTORY_SIZE": "10000"}
    server, base = start_server(serve_command(), history)
    samples: list[tuple[float, int]] = []
    try:
        httpx.post(base + "/api/streams", json={"workflowSessionId": STREAM})
        spec = {"base": base, "stream": STREAM, "concurrent": 50, "lifeMs": 1500}
        churn = subprocess.Popen(
            ["node", str(FANOUT / "churn.mjs"), json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

        async def run() -> int:
            published, _ = await asyncio.gather(
                publish(base, args.seconds), sample(server.pid, args.seconds, samples)
            )
            return published

        published = asyncio.run(run())
        clients = json.loads(churn.communicate(timeout=30)[0])  # closing stdin stops it
    finally:
        server.terminate()
        server.wait(30)
    spec_hours = published / SPEC_RATE / 3600
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
    report = {
        "seconds": args.seconds,
        "events": published,
        "seed_hours": round(spec_hours, 2),
        "client_sessions": clients["sessions"],
        "events_delivered": clients["events"],
        "peak_mib": round(peak, 1),
        "growth_mib_per_spec_hour": round(per_spec_hour, 3),
        "rss_kib_samples": samples,
    }
    write_report("soak", report)


if __name__ == "__main__":
    main()
