"""Attacks: the adversarial probe's connection-level and hub-wide attacks against a real
hub, one at a time and then all at once under honest clients; memory must stay bounded and
``/healthz`` answering.

    python bench/attacks.py [--seconds 15] [--soak-seconds 30] [--only NAME] [--skip-soak]

The hub (memory backend, authentication off, rate limits off as in every benchmark) runs
pinned to core 0; attackers, the probe and honest clients run on core 1. Each attack runs
alone on a fresh hub for ``--seconds`` while a probe process samples the hub's RSS every
0.2 s and GETs ``/healthz`` on a new connection every 0.5 s: RSS before, peak, and 5 s after
the attack stops. Then every attack at once for ``--soak-seconds`` while a publisher posts
a STATUS event every 2 ms to ``honest`` (awaiting each 201) and 20 WebSocket subscribers
record latency and seqs. Writes ``bench/results/<date>-attacks.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.frames import Frame, Opcode

from common import rss_kib, serve_command, start_server, write_report

MIB = 1 << 20
HEALTH = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
MISSING = b"GET /no-such-page HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
CHUNKED = (
    b"POST /api/streams HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b'Transfer-Encoding: chunked\r\n\r\n22\r\n{"workflowSessionId": "wf", "x": "\r\n'
)
PINGS = Frame(Opcode.PING, b"p" * 125).serialize(mask=True, extensions=[]) * 500
PAD = b"a" * 65_536
STATUS = b'{"type":"STATUS","data":{"statusType":"s","status":"x"}}'
BIG = json.dumps(
    {"type": "STATUS", "data": {"statusType": "s", "status": "x", "message": "m" * 1_040_000}}
).encode()  # ~1,040,300 bytes stored: just under limits.maxEventBytes (1 MiB)
HAY = [{"type": "STATUS", "data": {"statusType": "s", "status": "x", "message": "hay " * 2500}}]
FLOOD, BIGS = "/api/streams/flood-{}/events", "/api/streams/big/events"
SEARCH = "/api/streams/haystack/history?search=needle-not-there&limit=1"
LIMIT = "EXECUTOR_STREAMER_LIMITS__"
STREAMS = {LIMIT + "MAX_STREAMS": "2000"}
HISTORY = {"EXECUTOR_STREAMER_DEFAULT_STREAM_CONFIG__MAX_HISTORY_SIZE": "100000"}
BUDGET = {LIMIT + "MAX_MEMORY_BYTES": str(256 * MIB), **HISTORY}
Raw = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Job = Coroutine[Any, Any, None]


@dataclass
class Tally:
    """What one attack saw: outcomes by name, and durations (ms) of its requests."""

    counts: Counter[str] = field(default_factory=Counter)
    ms: list[float] = field(default_factory=list)

    def notes(self) -> str:
        parts = [
            f"{name} x{n:,}" for name, n in sorted(self.counts.items()) if name != "bytes sent"
        ]
        if sent := self.counts["bytes sent"]:
            parts.append(f"{sent / MIB:,.0f} MiB sent")
        if self.ms:
            parts.append(f"median {statistics.median(self.ms):.1f} ms, max {max(self.ms):.0f}")
        return "; ".join(parts)


def cpu_seconds(pid: int | str = "self") -> float:
    """User and system CPU time of a process (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def runqueue_wait() -> float:
    """Seconds this process was ready to run but waited for its core (/proc/self/schedstat)."""
    return int(Path("/proc/self/schedstat").read_text().split()[1]) / 1e9


async def opened(port: int) -> Raw:
    return await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)


class Http:
    """One keep-alive HTTP/1.1 connection, opened again after the hub closes it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.raw: Raw | None = None

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        if self.raw is None:
            self.raw = await opened(self.port)
        reader, writer = self.raw
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        if body:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        try:
            writer.write(head.encode() + b"\r\n" + body)
            answer = (await reader.readuntil(b"\r\n\r\n")).lower()
            length = re.search(rb"content-length: *(\d+)", answer)
            content = await (reader.readexactly(int(length[1])) if length else reader.read())
        except BaseException:
            self.close()
            raise
        if b"connection: close" in answer or not length:
            self.close()
        return int(answer[9:12]), content

    def close(self) -> None:
        if self.raw is not None:
            self.raw[1].transport.abort()
            self.raw = None


def outcome(status: int, content: bytes) -> str:
    if status < 300:
        return str(status)
    with contextlib.suppress(ValueError, KeyError, TypeError):
        return f"{status} {json.loads(content)['error']['code']}"
    return str(status)


async def crowd(n: int, tally: Tally, one: Callable[[], Job]) -> None:
    """``n`` attackers, each running ``one`` again and again (a new connection each time)."""

    async def again() -> None:
        while True:
            try:
                await one()
            except (OSError, asyncio.IncompleteReadError) as error:
                tally.counts[f"closed ({type(error).__name__})"] += 1
                await asyncio.sleep(0.05)

    await asyncio.gather(*(again() for _ in range(n)))


async def until_answered(port: int, tally: Tally, send: Callable[[Raw], Job]) -> None:
    """One connection: ``send`` writes the attack until the hub answers or closes; then the
    attacker hangs up (and ``crowd`` connects again)."""
    raw = await opened(port)
    tally.counts["connections"] += 1
    sending = asyncio.create_task(send(raw))
    try:
        with contextlib.suppress(ConnectionError):
            if chunk := await raw[0].read(65_536):
                status = re.match(rb"HTTP/1\.1 (\d{3})", chunk)
                tally.counts[status[1].decode() if status else "other answer"] += 1
            else:
                tally.counts["closed unanswered"] += 1
    finally:
        sending.cancel()
        raw[1].transport.abort()
        await asyncio.gather(sending, return_exceptions=True)


async def write_forever(writer: asyncio.StreamWriter, data: bytes, tally: Tally) -> None:
    with contextlib.suppress(ConnectionError):
        while True:
            writer.write(data)
            await writer.drain()
            tally.counts["bytes sent"] += len(data)


async def never_reading(port: int, tally: Tally, data: bytes, upgrade: bool = False) -> None:
    """4 connections writing ``data`` again and again and never reading (after a WebSocket
    upgrade when ``upgrade``); each opened again when the hub closes it."""

    async def one() -> None:
        reader, writer = await opened(port)
        tally.counts["connections"] += 1
        try:
            if upgrade:
                writer.write(UPGRADE)
                if not (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101"):
                    tally.counts["upgrade refused"] += 1
                    return
            await write_forever(writer, data, tally)
            tally.counts["closed by the hub"] += 1
        finally:
            writer.transport.abort()

    await crowd(4, tally, one)


async def answered(port: int, tally: Tally, n: int, head: bytes, then: bytes, pause: float) -> None:
    """``n`` connections sending ``head``, then ``then`` every ``pause`` s (0: as fast as the
    hub reads), reading the answer; each opened again when the hub closes it."""

    async def send(raw: Raw) -> None:
        raw[1].write(head)
        if not pause:
            await write_forever(raw[1], then, tally)
        while pause and then:
            await asyncio.sleep(pause)
            raw[1].write(then)
        await asyncio.Event().wait()

    await crowd(n, tally, lambda: until_answered(port, tally, send))


async def hammer(
    port: int, tally: Tally, n: int, method: str, path: Callable[[int], str], body: bytes = b""
) -> None:
    """``n`` keep-alive connections sending requests back to back (``path`` of a count),
    counting the answers."""
    numbers = itertools.count()

    async def one() -> None:
        http = Http(port)
        while True:
            started = time.monotonic()
            status, content = await http.request(method, path(next(numbers)), body)
            tally.ms.append((time.monotonic() - started) * 1000)
            tally.counts[outcome(status, content)] += 1

    await crowd(n, tally, one)


async def fill_haystack(port: int) -> None:
    """~50 MB of history in one stream: 56 batches of 90 events of 10 KB."""
    http = Http(port)
    body = json.dumps({"events": HAY * 90}).encode()
    for _ in range(56):
        status, content = await http.request("POST", "/api/streams/haystack/events", body)
        assert status == 201, content[:200]
    http.close()


@dataclass(frozen=True)
class Attack:
    run: Callable[[int, Tally], Job]
    env: dict[str, str] = field(default_factory=dict)
    prepare: Callable[[int], Job] | None = None


ATTACKS = {
    "pipelining": Attack(lambda port, tally: never_reading(port, tally, HEALTH * 2000)),
    "pipelined-404": Attack(lambda port, tally: never_reading(port, tally, MISSING * 2000)),
    "big-headers": Attack(
        lambda port, tally: answered(port, tally, 3, HEALTH[:-2] + b"X-Padding: ", PAD, 0)
    ),
    "slowloris": Attack(
        lambda port, tally: answered(port, tally, 200, HEALTH[:-2] + b"X-Slow: ", b"s", 2)
    ),
    "idle-connections": Attack(lambda port, tally: answered(port, tally, 300, b"", b"", 1)),
    "ping-flood": Attack(lambda port, tally: never_reading(port, tally, PINGS, upgrade=True)),
    "stream-flood": Attack(
        lambda port, tally: hammer(port, tally, 8, "POST", FLOOD.format, STATUS), STREAMS
    ),
    "big-events": Attack(
        lambda port, tally: hammer(port, tally, 2, "POST", BIGS.format, BIG), BUDGET
    ),
    "searches": Attack(
        lambda port, tally: hammer(port, tally, 4, "GET", SEARCH.format), prepare=fill_haystack
    ),
    "chunked-bodies": Attack(
        lambda port, tally: answered(port, tally, 4, CHUNKED, b"10000\r\n" + PAD + b"\r\n", 0)
    ),
}


async def probe(pid: int, port: int, seconds: float) -> dict[str, list[Any]]:
    """The hub's RSS every 0.2 s and a ``/healthz`` on a new connection every 0.5 s (ms, or
    None for a failure: no 200 within 5 s)."""
    rss: list[int] = []
    health: list[float | None] = []
    deadline = time.monotonic() + seconds

    async def sample() -> None:
        while time.monotonic() < deadline:
            rss.append(rss_kib(pid))
            await asyncio.sleep(0.2)

    async def check() -> None:
        while (started := time.monotonic()) < deadline:
            try:
                async with asyncio.timeout(5):
                    reader, writer = await opened(port)
                    try:
                        writer.write(HEALTH)
                        head = await reader.readuntil(b"\r\n\r\n")
                    finally:
                        writer.transport.abort()
                ok = head.startswith(b"HTTP/1.1 200")
                health.append((time.monotonic() - started) * 1000 if ok else None)
            except (TimeoutError, OSError, asyncio.IncompleteReadError):
                health.append(None)
            await asyncio.sleep(max(0.0, 0.5 - (time.monotonic() - started)))

    await asyncio.gather(sample(), check())
    return {"rss": rss, "health": health}


def summary(ms: list[float]) -> dict[str, float | None]:
    """Median, p99 and max of ``ms`` (None when empty)."""
    p99 = (
        statistics.quantiles(ms, n=100, method="inclusive")[98] if ms[1:] else max(ms, default=None)
    )
    median = statistics.median(ms) if ms else None
    return {"p50": median, "p99": p99, "max": max(ms, default=None)}


async def honest(port: int, seconds: float) -> dict[str, Any]:
    """A publisher at 500 events/s awaiting each 201, and 20 WebSocket subscribers."""
    received: list[set[int]] = [set() for _ in range(20)]
    latencies: list[float] = []
    acked: list[int] = []
    refused: Counter[str] = Counter()
    subscribed, reconnects = asyncio.Semaphore(0), Counter[str]()

    async def subscriber(i: int) -> None:
        since, first = 0, True
        while True:
            url = f"ws://127.0.0.1:{port}/ws?streamId=honest&since={since}"
            try:
                async with connect(url, max_size=None, open_timeout=30) as ws:
                    async for text in ws:
                        message = json.loads(text)
                        if message["type"] == "subscribed" and first:
                            first = False
                            subscribed.release()
                        elif message["type"] == "event":
                            event = message["event"]
                            received[i].add(event["seq"])
                            since = max(since, event["seq"])
                            latencies.append((time.time() - event["metadata"]["sent"]) * 1000)
                    reconnects[f"closed {ws.close_code}"] += 1
            except (ConnectionClosed, InvalidHandshake, OSError, TimeoutError) as error:
                reconnects[type(error).__name__] += 1
                await asyncio.sleep(0.1)

    listening = [asyncio.create_task(subscriber(i)) for i in range(20)]
    for _ in range(20):
        await asyncio.wait_for(subscribed.acquire(), 60)
    print("ready", flush=True)
    http, deadline, next_at = Http(port), time.monotonic() + seconds, time.monotonic()
    while (now := time.monotonic()) < deadline:
        await asyncio.sleep(max(0.0, next_at - now))
        next_at = max(next_at + 0.002, time.monotonic())
        event = {"type": "STATUS", "data": {"statusType": "s", "status": "x"}}
        body = json.dumps({**event, "metadata": {"sent": time.time()}}).encode()
        try:
            async with asyncio.timeout(10):
                status, content = await http.request("POST", "/api/streams/honest/events", body)
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as error:
            refused[type(error).__name__] += 1
            continue
        if status == 201:
            acked.append(json.loads(content)["events"][0]["seq"])
        else:
            refused[outcome(status, content)] += 1
    wanted = set(acked)
    for _ in range(150):  # up to 15 s for the last deliveries
        if all(wanted <= got for got in received):
            break
        await asyncio.sleep(0.1)
    for task in listening:
        task.cancel()
    return {
        "acked": acked,
        "cpu_s": round(cpu_seconds(), 2),
        "runqueue_wait_s": round(runqueue_wait(), 2),
        "refused": dict(refused),
        "lost_per_subscriber": [len(wanted - got) for got in received],
        "subscriber_reconnects": dict(reconnects),
        "latency_ms": summary(latencies),
    }


async def child(*arguments: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, __file__, *arguments, stdout=asyncio.subprocess.PIPE
    )


async def history_seqs(port: int, stream: str) -> set[int]:
    http, seqs, after = Http(port), set[int](), 0
    while True:
        path = f"/api/streams/{stream}/history?afterSeq={after}&limit=10000"
        events = json.loads((await http.request("GET", path))[1])["events"]
        if not events:
            http.close()
            return seqs
        seqs.update(event["seq"] for event in events)
        after = events[-1]["seq"]


async def measure(pid: int, port: int, names: list[str], seconds: float, soak: bool) -> Any:
    """Run ``names`` at once for ``seconds`` (with honest clients when ``soak``)."""
    for name in names:
        if (prepare := ATTACKS[name].prepare) is not None:
            await prepare(port)
    clients = None
    if soak:
        await Http(port).request("POST", "/api/streams", b'{"workflowSessionId":"honest"}')
        clients = await child("--honest", str(port), str(seconds))
        assert clients.stdout is not None
        assert (await clients.stdout.readline()).strip() == b"ready"
    before, cpu = rss_kib(pid), cpu_seconds(pid)
    watcher = await child("--probe", str(pid), str(port), str(seconds))
    tallies = {name: Tally() for name in names}
    running = [asyncio.create_task(ATTACKS[name].run(port, tallies[name])) for name in names]
    await asyncio.sleep(seconds)
    for task in running:
        task.cancel()
    await asyncio.gather(*running, return_exceptions=True)
    cpu = cpu_seconds(pid) - cpu
    seen = json.loads((await watcher.communicate())[0])
    result: dict[str, Any] = {}
    if clients is not None:
        result["honest"] = json.loads((await clients.communicate())[0])
        in_history = await history_seqs(port, "honest")
        result["honest"]["missing_from_history"] = len(set(result["honest"]["acked"]) - in_history)
    await asyncio.sleep(5)
    health = seen["health"]
    answered = [ms for ms in health if ms is not None]
    return result | {
        "rss_kib": {"before": before, "peak": max(seen["rss"]), "after_5s": rss_kib(pid)},
        "rss_kib_samples": seen["rss"],
        "hub_cpu_percent": round(100 * cpu / seconds),
        "healthz": {"checks": len(health), "failures": len(health) - len(answered)}
        | summary(answered),
        "counts": {name: dict(tally.counts) for name, tally in tallies.items()},
        "notes": {name: tally.notes() for name, tally in tallies.items()},
    }


def run(names: list[str], seconds: float, soak: bool = False) -> Any:
    """A fresh hub pinned to core 0 with the limits ``names`` need, and ``measure``; what
    the hub wrote to stderr is read on a thread (a full pipe would stall it)."""
    env = {key: value for name in names for key, value in ATTACKS[name].env.items()}
    env |= HISTORY if soak else {}  # the honest stream keeps every event it gets
    server, base = start_server(["taskset", "-c", "0", *serve_command()], env)
    assert server.stderr is not None
    stderr: deque[bytes] = deque(maxlen=20)
    threading.Thread(target=stderr.extend, args=(server.stderr,), daemon=True).start()
    try:
        result = asyncio.run(measure(server.pid, int(base.rsplit(":", 1)[1]), names, seconds, soak))
        result["server_exited"] = server.poll()
    finally:
        server.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(30)
        server.kill()  # (a hub still running 30 s after SIGTERM would be a finding)
    stderr_tail = [line.decode(errors="replace").rstrip() for line in stderr]
    stopped = server.wait() != -9
    return result | {"env": env, "stopped_on_sigterm": stopped, "stderr": stderr_tail}


def row(name: str, result: Any, notes: str) -> str:
    rss, health = result["rss_kib"], result["healthz"]
    mib = " | ".join(f"{rss[k] / 1024:.0f}" for k in ("before", "peak", "after_5s"))
    mib += f" | {result['hub_cpu_percent']} %"
    dead = " **hub exited**" if result["server_exited"] is not None else ""
    dead += "" if result["stopped_on_sigterm"] else " **hub did not stop on SIGTERM**"
    slowest = f"{health['max']:.1f}" if health["max"] is not None else "-"
    return f"| {name} | {mib} | {health['failures']} / {slowest} | {notes}{dead} |"


HEADER = (
    "| attack | RSS before (MiB) | peak | 5 s after | hub CPU | healthz failures / max ms "
    "| notes |\n|---|---:|---:|---:|---:|---|---|"
)


def ms(values: dict[str, float | None]) -> str:
    return " / ".join(f"{v:.1f}" if v is not None else "-" for v in values.values())


HONEST: list[tuple[str, Callable[[Any], object]]] = [
    ("publishes acknowledged (201)", lambda h: f"{len(h['acked']):,}"),
    ("publishes refused", lambda h: h["refused"] or 0),
    ("delivery latency p50 / p99 / max (ms)", lambda h: ms(h["latency_ms"])),
    (
        "acknowledged events missing at a subscriber (of 20)",
        lambda h: f"{sum(h['lost_per_subscriber']):,}",
    ),
    ("acknowledged events missing from history", lambda h: h["missing_from_history"]),
    ("subscriber reconnects", lambda h: h["subscriber_reconnects"] or 0),
    (
        "honest process CPU / waiting for core 1 (s)",
        lambda h: f"{h['cpu_s']} / {h['runqueue_wait_s']}",
    ),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--soak-seconds", type=float, default=30)
    parser.add_argument("--only", choices=list(ATTACKS), help="this attack alone, and in the soak")
    parser.add_argument("--skip-soak", action="store_true")
    parser.add_argument("--probe", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--honest", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        pid, port, seconds = args.probe
        print(json.dumps(asyncio.run(probe(int(pid), int(port), float(seconds)))))
        return
    if args.honest:
        print(json.dumps(asyncio.run(honest(int(args.honest[0]), float(args.honest[1])))))
        return
    os.sched_setaffinity(0, {1})  # attackers, probe and honest clients; the hub on core 0
    print("Rate limits are off (bench/common.start_server); authentication off; memory backend.")
    names = [args.only] if args.only else list(ATTACKS)
    alone = {}
    for name in names:
        print(f"{name} ...", flush=True)
        alone[name] = run([name], args.seconds)
    print(f"\nEach attack alone, {args.seconds:g} s on a fresh hub:\n\n{HEADER}")
    for name, result in alone.items():
        print(row(name, result, result["notes"][name]))
    report: dict[str, Any] = {"seconds": args.seconds, "alone": alone}
    if not args.skip_soak:
        print(f"\nhonest clients alone, then under every attack, {args.soak_seconds:g} s ...")
        quiet = report["baseline"] = run([], args.soak_seconds, soak=True)
        soak = report["soak"] = run(names, args.soak_seconds, soak=True)
        report["soak_seconds"] = args.soak_seconds
        print(f"\nHonest clients, {args.soak_seconds:g} s, alone and under every attack:\n")
        print(f"{HEADER}\n{row('no attack', quiet, '')}\n{row('every attack at once', soak, '')}")
        for name in names:
            print(f"- {name}: {soak['notes'][name]}")
        print("\n| honest clients | no attack | every attack at once |\n|---|---|---|")
        for label, cell in HONEST:
            print(f"| {label} | {cell(quiet['honest'])} | {cell(soak['honest'])} |")
        for result in (quiet, soak):
            result["honest"]["acked_count"] = len(result["honest"].pop("acked"))
    write_report("attacks", report)


if __name__ == "__main__":
    main()
