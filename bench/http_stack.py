"""The HTTP server stack under the hub: what bounding one connection costs per request.

    python bench/http_stack.py [--rounds 3]

The hub runs on uvicorn's httptools protocol bounded by ``server.internals.
BoundedHttpProtocol`` (headers capped and due in time, pipelining read only as fast as it
is answered, connections waiting for headers few: docs/security.md). Against it, side by
side and alternating within every round: uvicorn's plain httptools protocol (the stack
before the bounds, which a pipelining client could grow without limit) and uvicorn's
h11 protocol (which reads pipelined requests one at a time and caps incomplete events by
itself, but under which the hub's direct writes fall back to ASGI sends: the publish
answer, and every SSE frame). Each hub is a real server process pinned to core 0 (memory
backend, rate limits off); wrk on core 1 drives 8 keep-alive connections for 5 s at a
time: ``GET /healthz`` (the protocol's own cost, nearly nothing else) and single-event
publishes (the hub's hottest request). Prints the medians and each round; writes
``bench/results/<date>-http-stack.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

from common import start_server, write_report
from fanout import cpu_seconds

STACKS = {
    "bounded httptools (the hub)": "from executor_streamer.server.internals import "
    "bounded_http_protocol as stack; stack = stack()",
    "plain httptools": "from uvicorn.protocols.http.httptools_impl import "
    "HttpToolsProtocol as stack",
    "h11": "from uvicorn.protocols.http.h11_impl import H11Protocol as stack",
}
SERVE = """
import sys
from executor_streamer import ExecutorStreamer
from executor_streamer.config import ExecutorStreamerConfig
from executor_streamer.server.runner import build_server
{stack}
hub = ExecutorStreamer(ExecutorStreamerConfig.load())
server = build_server(hub, host="127.0.0.1", port=int(sys.argv[1]))
server.config.http = stack
server.run()
"""
EVENT = {"type": "STATUS", "data": {"statusType": "bench", "status": "running"}}


def wrk(pid: int, url: str, script: str | None = None) -> tuple[float, float]:
    """Requests/s wrk gets over 8 connections in 5 s, and the server's CPU microseconds
    per request meanwhile (steadier than the rate on a noisy machine)."""
    command = ["taskset", "-c", "1", "wrk", "-t1", "-c8", "-d5s", url]
    if script is not None:
        command[-1:-1] = ["-s", script]
    before = cpu_seconds(pid)
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    used = cpu_seconds(pid) - before
    if "Non-2xx" in output:
        raise RuntimeError(f"wrk saw errors:\n{output}")
    requests = int(output.split(" requests in ")[0].split()[-1])
    return float(output.split("Requests/sec:")[1].split()[0]), used / requests * 1e6


def measure(stack: str, post_script: str) -> dict[str, float]:
    command = ["taskset", "-c", "0", sys.executable, "-c", SERVE.format(stack=STACKS[stack])]
    server, base = start_server(command, ready_path="/healthz")
    try:
        httpx.post(f"{base}/api/streams", json={"workflowSessionId": "bench"})
        healthz, healthz_us = wrk(server.pid, f"{base}/healthz")
        publish, publish_us = wrk(server.pid, f"{base}/api/streams/bench/events", post_script)
        return {
            "healthz": healthz,
            "healthzUs": healthz_us,
            "publish": publish,
            "publishUs": publish_us,
        }
    finally:
        server.terminate()
        server.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("EXECUTOR_STREAMER_DEFAULT_STREAM_CONFIG__MAX_HISTORY_SIZE", "1000")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            'wrk.method = "POST"\n'
            f"wrk.body = [[{json.dumps(EVENT)}]]\n"
            'wrk.headers["Content-Type"] = "application/json"\n'
        )
    rounds: dict[str, list[dict[str, float]]] = {stack: [] for stack in STACKS}
    try:
        for number in range(args.rounds):
            for stack in STACKS:
                result = measure(stack, script.name)
                rounds[stack].append(result)
                print(f"round {number + 1}, {stack}: {result}", flush=True)
    finally:
        Path(script.name).unlink()
    keys = ("healthz", "healthzUs", "publish", "publishUs")
    medians = {
        stack: {key: statistics.median(r[key] for r in runs) for key in keys}
        for stack, runs in rounds.items()
    }
    print(
        "\n| stack | GET /healthz req/s | server µs per request | publishes/s "
        "| server µs per publish |"
    )
    print("|---|---:|---:|---:|---:|")
    for stack, row in medians.items():
        print(
            f"| {stack} | {row['healthz']:,.0f} | {row['healthzUs']:.0f} | "
            f"{row['publish']:,.0f} | {row['publishUs']:.0f} |"
        )
    write_report("http-stack", {"medians": medians, "rounds": rounds})


if __name__ == "__main__":
    main()
