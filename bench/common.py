"""What the benchmarks share: starting servers, reading process memory, writing results."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

RESULTS = Path(__file__).parent / "results"
SERVE = [sys.executable, "-m", "executor_streamer", "serve", "--host", "127.0.0.1"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(
    command: list[str], env: dict[str, str] | None = None, ready_path: str = "/readyz"
) -> tuple[subprocess.Popen[bytes], str]:
    """Run ``command`` with a free port appended (quiet, logging at ERROR) and wait until
    ``ready_path`` answers 200; returns the process and its base URL."""
    port = free_port()
    environment = {
        **os.environ,
        "EXECUTOR_STREAMER_LOGGING__LEVEL": "ERROR",
        # Benchmarks load one hub from one address at thousands of requests and events a
        # second: the per-address and per-stream rate limits would refuse the load itself.
        "EXECUTOR_STREAMER_SECURITY__RATE_LIMITING__ENABLED": "false",
        **(env or {}),
    }
    process = subprocess.Popen(
        [*command, str(port)],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(150):
        try:
            if httpx.get(base + ready_path).status_code == 200:
                return process, base
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    errors = process.stderr.read().decode() if process.stderr else ""
    raise RuntimeError(f"{command} did not start: {errors}")


def start_redis(cpu: str = "", *, cluster: bool = False) -> tuple[subprocess.Popen[bytes], str]:
    """A redis-server of the benchmark's own on a free port, without persistence (what is
    measured is the hub; Redis' AOF would add Redis' own disk writes), optionally pinned
    to ``cpu``. Returns the process and its URL. ``cluster``: a node of a Cluster, not yet
    joined (:func:`start_redis_cluster`)."""
    port = free_port()
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    command += ["--appendonly", "no", "--dir", tempfile.mkdtemp(), "--loglevel", "warning"]
    if cluster:
        command += ["--cluster-enabled", "yes", "--cluster-port", str(free_port())]
    if cpu:
        command = ["taskset", "-c", cpu, *command]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(100):
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return process, url
        time.sleep(0.05)
    process.kill()
    raise RuntimeError("redis-server did not start")


def start_redis_cluster(cpu: str = "") -> tuple[list[subprocess.Popen[bytes]], str]:
    """A Redis Cluster of three primaries, no replicas. Returns the processes and the
    ``redis+cluster://`` URL."""
    nodes = [start_redis(cpu, cluster=True) for _ in range(3)]
    addresses = [url.removeprefix("redis://").removesuffix("/0") for _, url in nodes]
    create = ["redis-cli", "--cluster", "create", *addresses]
    subprocess.run(
        [*create, "--cluster-replicas", "0", "--cluster-yes"],
        capture_output=True,
        check=True,
        timeout=30,
    )
    first = addresses[0].rpartition(":")[2]
    for _ in range(200):
        info = subprocess.run(
            ["redis-cli", "-p", first, "CLUSTER", "INFO"], capture_output=True, text=True
        )
        if "cluster_state:ok" in info.stdout:
            return [process for process, _ in nodes], "redis+cluster://" + ",".join(addresses)
        time.sleep(0.05)
    raise RuntimeError("the Redis Cluster did not come up")


def serve_command(*options: str) -> list[str]:
    """``executor-streamer serve`` with ``options``, the port to be appended."""
    return [*SERVE, *options, "--port"]


def rss_kib(pid: int) -> int:
    """A process's resident memory."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def write_report(name: str, report: dict[str, Any]) -> Path:
    """``bench/results/<date>-<name>.json``, stamped with the machine it ran on."""
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H%M%SZ")
    machine = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    path = RESULTS / f"{stamp}-{name}.json"
    document = {"benchmark": name, "when": stamp, "machine": machine, **report}
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nwrote {path}")
    return path
