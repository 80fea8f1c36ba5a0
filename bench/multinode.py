"""Several hubs on one Redis: fan-out across hubs, and what one more hub costs.

    python bench/multinode.py [--rounds 3] [--subscribers 100] [--seconds 3]

Side by side in one run, each a fresh set of processes, at rising rates (the Node load
generator of bench/fanout.py: one publisher POSTing single events at a fixed rate,
subscribers on batched WebSocket):

- ``memory, 1 hub``: the single-process hub, every subscriber on it (the reference);
- ``redis, 1 hub``: one hub on Redis, every subscriber on it;
- ``redis, 2 hubs``: the publisher on hub A, half the subscribers on A and half on B;
- ``redis cluster, 2 hubs``: the same on a Redis Cluster of three primaries (the stream
  lives on one of them; publishes are not pipelined there).

A rate passes when 95 % of it was achieved, nothing was lost and p99 latency stayed under
100 ms; capacity is the highest rate that passed, and p99 is also reported at 1,000/s
(the goal: 1,000 events/s to 100 subscribers at p99 ≤ 50 ms on this 2-core machine, with
Redis on it too). The servers' CPU per delivery (hubs and Redis together) shows what one
more hub costs. Hubs and Redis run on ``--server-cpu``, the load generator on
``--loadgen-cpu``. Prints a table and writes ``bench/results/<date>-multinode.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from statistics import median_low
from typing import Any

from common import SERVE, start_redis, start_redis_cluster, start_server, write_report
from fanout import FANOUT, HUB_ENV, children_cpu_seconds, cpu_seconds, passed, pinned

RATES = [250, 500, 1000, 1500, 2000, 2500, 3000, 4000]
SETUPS = ("memory, 1 hub", "redis, 1 hub", "redis, 2 hubs", "redis cluster, 2 hubs")


def start_hubs(setup: str, redis_url: str, cpu: str) -> list[tuple[subprocess.Popen[bytes], str]]:
    count = 2 if setup.endswith("2 hubs") else 1
    storage = [] if setup.startswith("memory") else ["--storage", "redis"]
    storage += [] if setup.startswith("memory") else ["--connection-string", redis_url]
    return [start_server(pinned([*SERVE, *storage, "--port"], cpu), HUB_ENV) for _ in range(count)]


def run(setup: str, hubs: list[str], pids: list[int], rate: int, args: Any) -> dict[str, Any]:
    spec = {
        "kind": "hub-ws-batch",
        "base": hubs[0],
        "subscriberBases": hubs,
        "stream": f"multi-{rate}-{time.monotonic_ns()}",
        "subscribers": args.subscribers,
        "rate": rate,
        "seconds": args.seconds,
    }
    before = sum(cpu_seconds(pid) for pid in pids)
    loadgen_before = children_cpu_seconds()
    started = time.monotonic()
    command = pinned(["node", str(FANOUT / "loadgen.mjs"), json.dumps(spec)], args.loadgen_cpu)
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed on {setup} at {rate}/s: {done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    server_cpu = sum(cpu_seconds(pid) for pid in pids) - before
    result["serverCpu"] = round(server_cpu / wall, 2)
    result["loadgenCpu"] = round((children_cpu_seconds() - loadgen_before) / wall, 2)
    result["serverUsPerDelivery"] = round(server_cpu * 1e6 / max(result["delivered"], 1), 2)
    result["passed"] = passed(result)
    return result


def measure(setup: str, args: Any) -> dict[str, Any]:
    if "cluster" in setup:
        redis, redis_url = start_redis_cluster(args.server_cpu)
    else:
        single, redis_url = start_redis(args.server_cpu)
        redis = [single]
    hubs = start_hubs(setup, redis_url, args.server_cpu)
    pids = [process.pid for process, _ in hubs]
    if not setup.startswith("memory"):
        pids += [node.pid for node in redis]  # Redis' CPU is part of what the engine costs
    runs = []
    try:
        for rate in RATES:
            result = run(setup, [base for _, base in hubs], pids, rate, args)
            runs.append(result)
            print(
                f"  {setup} @ {rate}/s: achieved {result['achievedRate']}/s, p99 {result['p99']}"
                f" ms, lost {result['lost']}, out of order {result['outOfOrder']}, server CPU "
                f"{result['serverCpu']:.0%}, {result['serverUsPerDelivery']} us/delivery, "
                f"{'pass' if result['passed'] else 'FAIL'}",
                flush=True,
            )
            if not result["passed"] and rate >= 1000:
                break
    finally:
        for process, _ in hubs:
            process.terminate()
            process.wait(15)
        for node in redis:
            node.kill()
    capacity = 0
    for result in runs:
        if not result["passed"]:
            break
        capacity = result["rate"]
    return {"setup": setup, "capacity": capacity, "runs": runs}


def at(result: dict[str, Any], rate: int, key: str) -> Any:
    return next((r[key] for r in result["runs"] if r["rate"] == rate), None)


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """The options :func:`measure` reads (``compare.py`` takes them too)."""
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=3)
    parser.add_argument("--server-cpu", default="0")
    parser.add_argument("--loadgen-cpu", default="1")


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over rounds of one setup: capacity, and p99 and CPU per delivery at 1,000/s."""
    p99s = [p for r in results if (p := at(r, 1000, "p99")) is not None]
    costs = [c for r in results if (c := at(r, 1000, "serverUsPerDelivery")) is not None]
    return {
        "capacity": median_low([r["capacity"] for r in results]),
        "p99At1000": median_low(p99s) if p99s else None,
        "usPerDeliveryAt1000": median_low(costs) if costs else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_options(parser)
    args = parser.parse_args()
    rounds: dict[str, list[dict[str, Any]]] = {setup: [] for setup in SETUPS}
    for number in range(args.rounds):
        print(f"round {number + 1} of {args.rounds}", flush=True)
        for setup in SETUPS:
            rounds[setup].append(measure(setup, args))
    print(
        f"\n{args.subscribers} subscribers, batched WebSocket; medians of {args.rounds} rounds\n"
        "\n| setup | capacity (events/s) | p99 at 1,000/s (ms) | server CPU per delivery at"
        " 1,000/s (µs) |\n|---|---:|---:|---:|"
    )
    summary = {}
    for setup, results in rounds.items():
        row = summary[setup] = summarize(results)
        print(
            f"| {setup} | {row['capacity']:,} | {row['p99At1000']} | {row['usPerDeliveryAt1000']} |"
        )
    write_report("multinode", {"args": vars(args), "summary": summary, "rounds": rounds})


if __name__ == "__main__":
    main()
