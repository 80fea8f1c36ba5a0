"""Fan-out inside the core, without sockets: what each published event costs the hub's
Python code with many subscribers.

    python bench/fanout_core.py [--subscribers 100] [--events 2000] [--filters none,...]

An in-process hub (memory backend) with N subscriptions on one stream; events are
published in batches of 1 and of 10, and after each publish every subscription is
drained as the flush pass does (``Subscription.drain_records``). Reports microseconds per
event (publish, queueing and draining for all N), the median of 5 repetitions. Noise on
this machine is a few percent: compare two versions by alternating them in one sitting.

``--filters`` chooses what each subscription filters by: ``none``; ``types`` (one event
type); ``expression`` (one CEL expression, the same text for every subscription: one
compiled program); ``expressions`` (a different expression per subscription). Every
filter matches every event, so each subscription still takes every event; the rows side
by side give what evaluating a filter costs per subscription per event.
Prints a markdown table and writes ``bench/results/<date>-fanout_core.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from common import write_report
from executor_streamer import ExecutorStreamer, ExecutorStreamerConfig, StreamFilter
from executor_streamer.types import StreamEventType

EVENT = {"type": "STATUS", "data": {"statusType": "bench", "status": "running"}}


FILTERS = ("none", "types", "expression", "expressions")


def filters_for(kind: str, n: int) -> list[StreamFilter] | None:
    if kind == "types":
        return [StreamFilter(event_types=[StreamEventType.STATUS])]
    if kind == "expression":
        return [StreamFilter(expression='type == "STATUS" && data.statusType == "bench"')]
    if kind == "expressions":
        return [StreamFilter(expression=f'data.statusType == "bench" && seq > -{n}')]
    return None


async def measure(subscribers: int, batch: int, events: int, kind: str) -> dict[str, Any]:
    config = ExecutorStreamerConfig().with_overrides(
        {"logging": {"level": "ERROR"}, "defaultStreamConfig": {"maxClients": subscribers}}
    )
    async with ExecutorStreamer(config) as hub:
        await hub.create_stream("bench")
        subs = [
            await hub.open_subscription("bench", filters=filters_for(kind, n))
            for n in range(subscribers)
        ]
        timings = []
        taken = 0
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(0, events, batch):
                await hub.publisher.publish_batch("bench", [EVENT] * batch)
                for sub in subs:
                    taken += len(sub.drain_records())
            timings.append((time.perf_counter() - started) / events * 1e6)
        # Every filter matches every event: each subscription took each one.
        assert taken == 5 * events * subscribers, (kind, taken)
        return {
            "subscribers": subscribers,
            "batch": batch,
            "filters": kind,
            "us_per_event": round(statistics.median(timings), 2),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--filters", default="none", help=f"comma-separated: {FILTERS}")
    args = parser.parse_args()
    kinds = [k for k in args.filters.split(",") if k]
    unknown = set(kinds) - set(FILTERS)
    if unknown:
        parser.error(f"unknown --filters {sorted(unknown)}: choose from {FILTERS}")
    rows = [
        asyncio.run(measure(args.subscribers, batch, args.events, kind))
        for kind in kinds
        for batch in (1, 10)
    ]
    print("| subscribers | filters | events per publish | µs per event |")
    print("|---:|---|---:|---:|")
    for row in rows:
        print(
            f"| {row['subscribers']} | {row['filters']} | {row['batch']} | {row['us_per_event']} |"
        )
    write_report("fanout_core", {"results": rows})


if __name__ == "__main__":
    main()
