"""Find what stalls the server's event loop: run ``executor-streamer serve`` with a watchdog.

    python bench/stalls.py [--threshold-ms 40] [serve options...]

A thread checks every few milliseconds that the event loop has run a callback recently;
when it has not for ``--threshold-ms``, it samples the loop thread's stack until the loop
runs again, and at exit prints each stall (its length and the stack seen most often while
it lasted). Used with ``fanout.py``'s load to name the pauses behind a failing rate: the
collector, a timer, a blocking call or a long flush pass.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import collections
import gc
import sys
import threading
import time
import traceback
from typing import Any

from executor_streamer import ExecutorStreamer
from executor_streamer.cli import main as cli_main

_beat = time.monotonic()
_stalls: list[tuple[float, str]] = []
_gc_pauses: list[tuple[float, int]] = []


def _heartbeat(loop: asyncio.AbstractEventLoop) -> None:
    global _beat
    _beat = time.monotonic()
    loop.call_later(0.002, _heartbeat, loop)


def _watch(loop_thread: int, threshold: float) -> None:
    while True:
        time.sleep(0.002)
        if time.monotonic() - _beat < threshold:
            continue
        started = _beat
        seen: collections.Counter[str] = collections.Counter()
        while _beat == started:
            frame = sys._current_frames().get(loop_thread)
            if frame is not None:
                seen["".join(traceback.format_stack(frame, limit=12))] += 1
            time.sleep(0.001)
        length = time.monotonic() - started
        _stalls.append((length, seen.most_common(1)[0][0] if seen else "(no sample)"))


def _gc_callback(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _gc_callback.started = time.perf_counter()  # type: ignore[attr-defined]
    else:
        elapsed = time.perf_counter() - _gc_callback.started  # type: ignore[attr-defined]
        _gc_pauses.append((elapsed, info["generation"]))


def _report() -> None:
    print(f"\n{len(_stalls)} stalls", file=sys.stderr)
    for length, stack in sorted(_stalls, reverse=True)[:10]:
        print(f"\n--- {length * 1000:.0f} ms ---\n{stack}", file=sys.stderr)
    slow = sorted(_gc_pauses, reverse=True)[:5]
    print(f"\nlongest collections: {[(round(s * 1000, 1), g) for s, g in slow]}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--threshold-ms", type=float, default=40)
    known, rest = parser.parse_known_args()
    start = ExecutorStreamer.start

    async def start_with_heartbeat(hub: ExecutorStreamer) -> None:
        loop = asyncio.get_running_loop()
        loop.call_soon(_heartbeat, loop)
        await start(hub)

    ExecutorStreamer.start = start_with_heartbeat  # type: ignore[method-assign, assignment]
    watcher = threading.Thread(
        target=_watch, args=(threading.get_ident(), known.threshold_ms / 1000), daemon=True
    )
    watcher.start()
    gc.callbacks.append(_gc_callback)
    atexit.register(_report)
    sys.argv = [sys.argv[0], "serve", *rest]
    cli_main()


if __name__ == "__main__":
    main()
