"""Fan-out benchmark: the hub against what a user might pick instead, in one run.

    python bench/fanout.py [--rounds 3] [--subscribers 100] [--seconds 3] [--only hub-ws-batch,...]

For each target, a fresh server process and the Node load generator
(``bench/fanout/loadgen.mjs``: N subscribers on one stream, one publisher POSTing single
events at a fixed rate, each carrying its send time) run at rising rates. A rate passes
when at least 95 % of it was achieved, nothing was lost and p99 latency stayed under
100 ms; a target's capacity is the highest rate that passed. The whole comparison runs
``--rounds`` times, targets interleaved, and the table quotes medians: on a shared
2-core machine one round's capacity can be a rate step off. Targets: the hub over
batched WebSocket, plain WebSocket, SSE and long polling (``executor-streamer serve``,
memory backend; rate limits off, see ``common.start_server``), the batched
WebSocket and SSE again with authentication on (a JWT on every publish and connection,
checked once per request and connection: the cost of auth, side by side), and three
peers (``bench/fanout/peers``): a plain Node ``ws`` broadcast server, python-socketio
broadcasting to a room, FastAPI + sse-starlette with a queue per client. The CPU seconds
the server and the load generator used are read from /proc, to show the generator is the
cheaper side.

Server and load generator run pinned to separate cores (``taskset``: the server on
``--server-cpu``, the load generator on ``--loadgen-cpu``), so neither steals the other's
core and a run on another machine of the same kind compares alike. Beside capacity, each
target's server CPU per delivered event (microseconds) is reported at fixed rates: a
measure of the server's own cost, whatever limits its capacity.

Prints a markdown table and writes ``bench/results/<date>-fanout.json``. Needs Node.js
(``npm ci`` in bench/fanout, which ``make bench`` runs).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median_low
from typing import Any

from common import SERVE, start_server, write_report
from executor_streamer.security import Scope, mint_token

FANOUT = Path(__file__).parent / "fanout"
RATES = [
    100,
    250,
    500,
    1000,
    1250,
    1500,
    1750,
    2000,
    3000,
    4000,
    4500,
    5000,
    6000,
    7000,
    8000,
    9000,
    10000,
]
RATIOS = [
    ("hub-ws-batch", "ws-peer"),
    ("hub-sse", "ws-peer"),
    ("hub-ws", "ws-peer"),
    ("hub-ws-batch-auth", "hub-ws-batch"),
    ("hub-sse-auth", "hub-sse"),
    ("hub-ws-batch-expression", "hub-ws-batch-types"),
    ("hub-ws-batch-expressions", "hub-ws-batch-types"),
]
"""(target, reference): capacity ratios the targets are stated in (auth on within 10 % of
auth off: docs/security.md; expression filters beside type filters: docs/query.md)."""
SECRET = "fanout-benchmark-secret-" + "b" * 32
HUB_ENV = {
    # Subscribers of a run may linger a moment on the server the next run reuses.
    "EXECUTOR_STREAMER_DEFAULT_STREAM_CONFIG__MAX_CLIENTS": "10000",
    "EXECUTOR_STREAMER_SERVER__MAX_CONNECTIONS": "10000",
}
AUTH_ENV = {
    **HUB_ENV,
    "EXECUTOR_STREAMER_SECURITY__AUTHENTICATION_REQUIRED": "true",
    "EXECUTOR_STREAMER_SECURITY__JWT__SECRET": SECRET,
}
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Target:
    name: str
    key: str
    kind: str  # the load generator's subscriber kind
    command: list[str]
    ready_path: str
    env: dict[str, str] = field(default_factory=dict)
    authenticated: bool = False
    filter: str | None = None
    """What each subscriber filters by (``loadgen.mjs``'s FILTERS), all matching every
    event: ``types``, ``expression`` (one text for all) or ``expressions`` (one each)."""


def targets() -> list[Target]:
    hub = [*SERVE, "--port"]
    peers = FANOUT / "peers"
    return [
        Target("hub: WebSocket, batched", "hub-ws-batch", "hub-ws-batch", hub, "/readyz", HUB_ENV),
        Target(
            "hub: WebSocket, batched, auth on",
            "hub-ws-batch-auth",
            "hub-ws-batch",
            hub,
            "/readyz",
            AUTH_ENV,
            authenticated=True,
        ),
        *(
            Target(
                f"hub: WebSocket, batched, {name}",
                f"hub-ws-batch-{kind}",
                "hub-ws-batch",
                hub,
                "/readyz",
                HUB_ENV,
                filter=kind,
            )
            for kind, name in (
                ("types", "a type filter each"),
                ("expression", "one expression for all"),
                ("expressions", "an expression each"),
            )
        ),
        Target("hub: WebSocket", "hub-ws", "hub-ws", hub, "/readyz", HUB_ENV),
        Target("hub: SSE", "hub-sse", "hub-sse", hub, "/readyz", HUB_ENV),
        Target(
            "hub: SSE, auth on",
            "hub-sse-auth",
            "hub-sse",
            hub,
            "/readyz",
            AUTH_ENV,
            authenticated=True,
        ),
        Target("hub: long polling", "hub-poll", "hub-poll", hub, "/readyz", HUB_ENV),
        Target(
            "peer: Node ws broadcast",
            "ws-peer",
            "ws-peer",
            ["node", str(peers / "ws-broadcast.mjs")],
            "/healthz",
        ),
        Target(
            "peer: python-socketio room",
            "socketio-peer",
            "socketio-peer",
            [sys.executable, str(peers / "socketio_peer.py")],
            "/healthz",
        ),
        Target(
            "peer: FastAPI + sse-starlette",
            "sse-peer",
            "sse-peer",
            [sys.executable, str(peers / "sse_peer.py")],
            "/healthz",
        ),
    ]


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def children_cpu_seconds() -> float:
    """CPU of the finished child processes this one has waited for (the load generators)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


FIXED_RATES = (1000, 2000)
"""Rates at which every target's CPU per delivered event is compared."""


def pinned(command: list[str], cpu: str) -> list[str]:
    return ["taskset", "-c", cpu, *command] if cpu else command


def start(target: Target, args: Any) -> tuple[subprocess.Popen[bytes], str]:
    return start_server(pinned(target.command, args.server_cpu), target.env, target.ready_path)


def run_load(target: Target, base: str, server_pid: int, rate: int, args: Any) -> dict[str, Any]:
    spec = {
        "kind": target.kind,
        "base": base,
        "stream": f"bench-{rate}-{time.monotonic_ns()}",
        "subscribers": args.subscribers,
        "rate": rate,
        "seconds": args.seconds,
    }
    if target.filter is not None:
        spec["filter"] = target.filter
    if target.authenticated:
        # Admin: the load generator creates the stream, publishes and subscribes.
        spec["token"] = mint_token(SECRET, "fanout-bench", Scope(admin=True), 3600)
    server_before = cpu_seconds(server_pid)
    loadgen_before = children_cpu_seconds()
    started = time.monotonic()
    loadgen = subprocess.Popen(
        pinned(["node", str(FANOUT / "loadgen.mjs"), json.dumps(spec)], args.loadgen_cpu),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    output, errors = loadgen.communicate(timeout=120)
    wall = time.monotonic() - started
    if loadgen.returncode != 0:
        raise RuntimeError(f"load generator failed on {target.name} at {rate}/s: {errors}")
    result: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    server_cpu = cpu_seconds(server_pid) - server_before
    loadgen_cpu = children_cpu_seconds() - loadgen_before
    result["serverCpu"] = round(server_cpu / wall, 2)
    result["loadgenCpu"] = round(loadgen_cpu / wall, 2)
    # Warm-up and set-up deliveries are not counted, so this slightly overstates the cost.
    delivered = max(result["delivered"], 1)
    result["serverUsPerDelivery"] = round(server_cpu * 1e6 / delivered, 2)
    result["loadgenUsPerDelivery"] = round(loadgen_cpu * 1e6 / delivered, 2)
    result["passed"] = passed(result)
    return result


def passed(result: dict[str, Any]) -> bool:
    return bool(
        result["achievedRate"] >= 0.95 * result["rate"]
        and result["lost"] == 0
        and result["publishFailures"] == 0
        and result["p99"] is not None
        and result["p99"] < 100
    )


def measure(target: Target, args: Any) -> dict[str, Any]:
    """Rising rates on one fresh server until a rate fails (or the list ends)."""
    process, base = start(target, args)
    runs = []
    try:
        for rate in RATES:
            if args.max_rate and rate > args.max_rate:
                break
            result = run_load(target, base, process.pid, rate, args)
            runs.append(result)
            print(f"  {target.name} @ {rate}/s: {summary(result)}", flush=True)
            if not result["passed"] and rate >= max(FIXED_RATES):
                break
    finally:
        process.terminate()
        process.wait(15)
    # Capacity: the highest rate below the first failing one (rates past a failure run
    # only to measure the cost per delivery at the fixed rates).
    capacity = 0
    for run in runs:
        if not run["passed"]:
            break
        capacity = run["rate"]
    return {"target": target.name, "kind": target.key, "capacity": capacity, "runs": runs}


def summary(result: dict[str, Any]) -> str:
    return (
        f"achieved {result['achievedRate']}/s, p50 {result['p50']} p99 {result['p99']} "
        f"max {result['max']} ms, lost {result['lost']}, out of order {result['outOfOrder']}, "
        f"CPU server {result['serverCpu']:.0%} loadgen {result['loadgenCpu']:.0%}, "
        f"server {result['serverUsPerDelivery']} us/delivery, "
        f"{'pass' if result['passed'] else 'FAIL'}"
    )


def table(rounds: dict[str, list[dict[str, Any]]], names: dict[str, str]) -> str:
    lines = [
        "| target | capacity (events/s), median (rounds) | at 1000/s, medians: "
        "p50 / p90 / p99 / max (ms) | lost | out of order | CPU at 1000/s: server / "
        "load generator |",
        "|---|---|---|---:|---:|---|",
    ]
    for kind, measured in rounds.items():
        capacities = [m["capacity"] for m in measured]
        capacity = f"{median_low(capacities):,} ({' / '.join(f'{c:,}' for c in capacities)})"
        at = [r for m in measured for r in m["runs"] if r["rate"] == 1000]
        if not at:
            latency, lost, disorder, cpu = "not reached", "", "", ""
        else:
            latency = " / ".join(
                str(median_low(r[key] for r in at)) for key in ("p50", "p90", "p99", "max")
            )
            lost = str(sum(r["lost"] for r in at))
            disorder = str(sum(r["outOfOrder"] for r in at))
            server = median_low(r["serverCpu"] for r in at)
            loadgen = median_low(r["loadgenCpu"] for r in at)
            cpu = f"{server:.0%} / {loadgen:.0%}"
        cells = [names[kind], capacity, latency, lost, disorder, cpu]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cost_table(rounds: dict[str, list[dict[str, Any]]], names: dict[str, str]) -> str:
    """CPU microseconds per delivered event at fixed rates, medians over rounds."""
    header = " | ".join(f"server / load generator at {rate:,}/s" for rate in FIXED_RATES)
    lines = [f"| target | {header} |", "|---|" + "---|" * len(FIXED_RATES)]
    for kind, measured in rounds.items():
        cells = [names[kind]]
        for rate in FIXED_RATES:
            at = [r for m in measured for r in m["runs"] if r["rate"] == rate]
            if not at:
                cells.append("not run")
                continue
            server = median_low(r["serverUsPerDelivery"] for r in at)
            loadgen = median_low(r["loadgenUsPerDelivery"] for r in at)
            failed = "" if all(r["passed"] for r in at) else " (rate not held)"
            cells.append(f"{server} / {loadgen}{failed}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratios(rounds: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Hub capacity over the peer's, round by round (side by side), and their median."""
    found = []
    for hub, peer in RATIOS:
        if hub not in rounds or peer not in rounds:
            continue
        pairs = zip(rounds[hub], rounds[peer], strict=True)
        each = [round(h["capacity"] / p["capacity"], 2) for h, p in pairs if p["capacity"]]
        if each:
            found.append({"hub": hub, "peer": peer, "median": median_low(each), "rounds": each})
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--only", default="", help="comma-separated target kinds")
    parser.add_argument("--max-rate", type=int, default=0)
    parser.add_argument("--server-cpu", default="0", help="core for the server ('' unpinned)")
    parser.add_argument("--loadgen-cpu", default="1", help="core for the load generator")
    args = parser.parse_args()
    chosen = [t for t in targets() if not args.only or t.key in args.only.split(",")]
    rounds: dict[str, list[dict[str, Any]]] = {t.key: [] for t in chosen}
    for number in range(1, args.rounds + 1):
        for target in chosen:
            print(f"round {number}, {target.name}:", flush=True)
            rounds[target.key].append(measure(target, args))
    print(f"\n{args.subscribers} subscribers on one stream, single-event POSTs\n")
    names = {t.key: t.name for t in chosen}
    print(table(rounds, names))
    print("\nCPU per delivered event (microseconds), medians\n")
    print(cost_table(rounds, names))
    found = ratios(rounds)
    for ratio in found:
        each = ", ".join(f"{r}x" for r in ratio["rounds"])
        print(f"\n{ratio['hub']} / {ratio['peer']}: {ratio['median']}x (rounds: {each})", end="")
    print()
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    report = {
        "node": node,
        "subscribers": args.subscribers,
        "seconds_per_rate": args.seconds,
        "rounds": args.rounds,
        "pass_rule": ">= 95% of the rate achieved, nothing lost, p99 < 100 ms",
        "pinning": {"server": args.server_cpu, "loadgen": args.loadgen_cpu},
        "ratios": found,
        "results": [{"target": t.name, "kind": t.key, "rounds": rounds[t.key]} for t in chosen],
    }
    write_report("fanout", report)


if __name__ == "__main__":
    main()
