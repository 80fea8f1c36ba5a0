"""Fan-out inside the core, without sockets: what each published event costs the hub's
Python code with many subscribers.

    python bench/fanout_core.py [--subscribers 100] [--events 2000]

An in-process hub (memory backend) with N subscriptions on one stream; events are
published in batches of 1 and of 10, and after each publish every subscription is
drained as the flush pass does (``Subscription.drain_records``). Reports microseconds per
event (publish, queueing and draining for all N), the median of 5 repetitions. Noise on
this machine is a few percent: compare two versions by alternating them in one sitting.
Prints a markdown table and writes ``bench/results/<date>-fanout_core.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from common import write_report
from executor_streamer import ExecutorStreamer, ExecutorStreamerConfig

EVENT = {"type": "STATUS", "data": {"statusType": "bench", "status": "running"}}


async def measure(subscribers: int, batch: int, events: int) -> dict[str, Any]:
    config = ExecutorStreamerConfig().with_overrides(
        {"logging": {"level": "ERROR"}, "defaultStreamConfig": {"maxClients": subscribers}}
    )
    async with ExecutorStreamer(config) as hub:
        await hub.create_stream("bench")
        subs = [await hub.open_subscription("bench") for _ in range(subscribers)]
        timings = []
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(0, events, batch):
                await hub.publisher.publish_batch("bench", [EVENT] * batch)
                for sub in subs:
                    sub.drain_records()
            timings.append((time.perf_counter() - started) / events * 1e6)
        return {
            "subscribers": subscribers,
            "batch": batch,
            "us_per_event": round(statistics.median(timings), 2),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--events", type=int, default=2000)
    args = parser.parse_args()
    rows = [asyncio.run(measure(args.subscribers, batch, args.events)) for batch in (1, 10)]
    print("| subscribers | events per publish | µs per event |")
    print("|---:|---:|---:|")
    for row in rows:
        print(f"| {row['subscribers']} | {row['batch']} | {row['us_per_event']} |")
    write_report("fanout_core", {"results": rows})


if __name__ == "__main__":
    main()
