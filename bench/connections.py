"""Memory per idle WebSocket connection: N subscribers held open on one stream.

    python bench/connections.py [--connections 10000]

Starts ``executor-streamer serve`` (memory backend), reads its resident memory, has
``bench/fanout/idle.mjs`` open N WebSocket connections that each subscribe (batched) to
one stream, waits for the process to settle and reads it again. Prints the memory per
connection and writes ``bench/results/<date>-connections.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time

import httpx

from common import rss_kib, serve_command, start_server, write_report
from fanout import FANOUT


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument(
        "--deflate",
        action="store_true",
        help="clients offer permessage-deflate, as browsers do, and the hub accepts it",
    )
    args = parser.parse_args()
    limit = str(args.connections + 100)
    env = {
        "EXECUTOR_STREAMER_DEFAULT_STREAM_CONFIG__MAX_CLIENTS": limit,
        "EXECUTOR_STREAMER_SERVER__MAX_CONNECTIONS": limit,
        "EXECUTOR_STREAMER_COMPRESSION__WEBSOCKET": str(args.deflate).lower(),
    }
    server, base = start_server(serve_command(), env)
    try:
        # One connection first, so imports and first-use caches are not counted.
        warm = subprocess.Popen(
            [
                "node",
                str(FANOUT / "idle.mjs"),
                json.dumps({"base": base, "stream": "warm", "connections": 1}),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert warm.stdout is not None and warm.stdout.readline().startswith("ready")
        time.sleep(1)
        before = rss_kib(server.pid)
        spec = {
            "base": base,
            "stream": "idle",
            "connections": args.connections,
            "deflate": args.deflate,
        }
        idle = subprocess.Popen(
            ["node", str(FANOUT / "idle.mjs"), json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert idle.stdout is not None
        line = idle.stdout.readline()
        if not line.startswith("ready"):
            raise RuntimeError(f"the connections did not open: {line!r}")
        connect_seconds = float(line.split()[1])
        time.sleep(5)
        after = rss_kib(server.pid)
        clients = httpx.get(f"{base}/api/streams/idle").json()["clients"]
        for child in (idle, warm):
            assert child.stdin is not None
            child.stdin.close()
            child.wait(30)
    finally:
        server.terminate()
        server.wait(30)
    per = (after - before) / args.connections
    print(
        f"\n| idle WebSocket connections | server RSS before | after | per connection |\n"
        f"|---:|---:|---:|---:|\n"
        f"| {args.connections:,} ({len(clients):,} subscribed) | {before / 1024:.0f} MiB "
        f"| {after / 1024:.0f} MiB | {per:.1f} KiB |\n"
    )
    report = {
        "connections": args.connections,
        "deflate": args.deflate,
        "subscribed": len(clients),
        "connect_seconds": connect_seconds,
        "rss_kib_before": before,
        "rss_kib_after": after,
        "kib_per_connection": round(per, 2),
    }
    write_report("connections", report)


if __name__ == "__main__":
    main()
