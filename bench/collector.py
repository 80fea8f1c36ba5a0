"""Garbage-collector pauses against retained history.

    python bench/collector.py [--events 10000,100000,500000]

CPython's cyclic collector stops every client while it walks the objects it tracks; a
full collection walks all of them. For each size, an in-process hub (memory backend)
retains that many events (statuses with metadata, published in batches of 100) and the
script reports the objects the collector tracks per retained event, the bytes of Python
objects each retained event takes (tracemalloc), and how long a full collection takes
(median of 5, with tracemalloc off). Prints a markdown table and writes
``bench/results/<date>-collector.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
import tracemalloc
from typing import Any

from common import write_report
from executor_streamer import ExecutorStreamer, ExecutorStreamerConfig

BATCH = 100


async def measure(events: int) -> dict[str, Any]:
    config = ExecutorStreamerConfig().with_overrides(
        {
            "logging": {"level": "ERROR"},
            "defaultStreamConfig": {"maxHistorySize": events},
            "limits": {"maxHistorySize": max(events, 100_000)},
        }
    )
    async with ExecutorStreamer(config) as hub:
        session = f"collector-{events}"
        await hub.create_stream(session)
        gc.collect()
        before = len(gc.get_objects())
        tracemalloc.start()
        allocated = tracemalloc.get_traced_memory()[0]
        for start in range(0, events, BATCH):
            batch = [
                {
                    "type": "STATUS",
                    "data": {"statusType": "bench", "status": f"step {n}"},
                    "metadata": {"n": n, "tags": ["bench"]},
                }
                for n in range(start, start + BATCH)
            ]
            await hub.publisher.publish_batch(session, batch)
        gc.collect()
        retained = tracemalloc.get_traced_memory()[0] - allocated
        tracemalloc.stop()
        tracked = len(gc.get_objects()) - before
        pauses = []
        for _ in range(5):
            started = time.perf_counter()
            gc.collect()
            pauses.append((time.perf_counter() - started) * 1000)
        return {
            "events": events,
            "tracked_per_event": round(tracked / events, 2),
            "bytes_per_event": round(retained / events),
            "full_collection_ms": round(statistics.median(pauses), 1),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", default="10000,100000,500000")
    args = parser.parse_args()
    rows = [asyncio.run(measure(int(n))) for n in args.events.split(",")]
    print(
        "| retained events | tracked objects per event | bytes per event | full collection (ms) |"
    )
    print("|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['events']:,} | {row['tracked_per_event']} | {row['bytes_per_event']} "
            f"| {row['full_collection_ms']} |"
        )
    write_report("collector", {"results": rows})


if __name__ == "__main__":
    main()
