"""Viewer benchmark: the live viewer in headless Chromium (Debian's, driven by Playwright)
against a hub started here.

    python bench/viewer.py [--events 10000] [--live-events 360000]

1. **First render** of a finished run of ``--events`` events: from navigation until the
   page says it holds them all (history replayed over WebSocket, rows rendered).
2. **Scroll** through that run, a screenful at a time, waiting for each frame: the total
   time and the slowest frame.
3. **Live**: a page left open while ``--live-events`` events arrive (360,000 = an hour at
   100 events/s, sent here as fast as the hub takes batches), then the page's JavaScript
   heap (Chrome DevTools Protocol ``Performance.getMetrics``) and the rows it keeps.

Prints a table and writes ``bench/results/<date>-viewer.json``. Medians of ``--rounds``.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import time
from statistics import median
from typing import Any

import httpx
from playwright.async_api import Browser, Page, async_playwright

from common import serve_command, start_server, write_report

BATCH = 1000


async def publish(base: str, stream: str, count: int) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        for start in range(0, count, BATCH):
            events = [
                {"type": "STATUS", "data": {"statusType": "step", "status": str(n)}}
                for n in range(start, min(count, start + BATCH))
            ]
            response = await http.post(f"/api/streams/{stream}/events", json={"events": events})
            response.raise_for_status()


async def holds(page: Page, count: int, timeout_ms: float) -> None:
    await page.wait_for_function(
        f"document.getElementById('count')?.textContent === '{count} events'",
        timeout=timeout_ms,
    )


async def first_render(browser: Browser, base: str, stream: str, count: int) -> dict[str, Any]:
    # bypass_csp: the measurements evaluate strings in the page, which its policy forbids.
    page = await browser.new_page(viewport={"width": 1400, "height": 900}, bypass_csp=True)
    try:
        started = time.perf_counter()
        await page.goto(f"{base}/view/{stream}")
        await holds(page, count, 120_000)
        render_ms = (time.perf_counter() - started) * 1000
        await page.locator("#follow").uncheck()
        scroll: dict[str, float] = await page.evaluate(
            """async () => {
              const list = document.getElementById('list');
              const frame = () => new Promise((r) => requestAnimationFrame(() => r()));
              list.scrollTop = 0; await frame();
              const started = performance.now(); let slowest = 0; let screens = 0;
              while (list.scrollTop + list.clientHeight < list.scrollHeight) {
                const before = performance.now();
                list.scrollTop += list.clientHeight; await frame(); await frame();
                slowest = Math.max(slowest, performance.now() - before); screens++;
              }
              return { total: performance.now() - started, slowest, screens };
            }"""
        )
        return {
            "first_render_ms": round(render_ms),
            "scroll_total_ms": round(scroll["total"]),
            "scroll_screens": scroll["screens"],
            "slowest_screen_ms": round(scroll["slowest"], 1),
        }
    finally:
        await page.close()


async def live(browser: Browser, base: str, stream: str, count: int) -> dict[str, Any]:
    # bypass_csp: the measurements evaluate strings in the page, which its policy forbids.
    page = await browser.new_page(viewport={"width": 1400, "height": 900}, bypass_csp=True)
    try:
        async with httpx.AsyncClient(base_url=base) as http:
            await http.post("/api/streams", json={"workflowSessionId": stream})
        await page.goto(f"{base}/view/{stream}")
        await page.wait_for_selector(".connection[data-state='live']")
        started = time.perf_counter()
        await publish(base, stream, count)
        await holds(page, count, 600_000)
        seconds = time.perf_counter() - started
        session = await page.context.new_cdp_session(page)
        await session.send("HeapProfiler.collectGarbage")
        await session.send("Performance.enable")
        metrics = {
            m["name"]: m["value"] for m in (await session.send("Performance.getMetrics"))["metrics"]
        }
        kept = await page.evaluate("window.executorStreamerViewer.run.items.length")
        return {
            "live_events": count,
            "live_seconds": round(seconds, 1),
            "js_heap_mib": round(metrics["JSHeapUsedSize"] / 2**20, 1),
            "dom_nodes": int(metrics["Nodes"]),
            "rows_kept": kept,
        }
    finally:
        await page.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--live-events", type=int, default=360_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    server, base = start_server(serve_command())
    rounds: list[dict[str, Any]] = []
    try:
        await publish(base, "bench-finished", args.events)
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                args=["--no-sandbox", "--disable-dev-shm-usage"],
            )
            for number in range(args.rounds):
                result = await first_render(browser, base, "bench-finished", args.events)
                print(f"round {number + 1}: {result}", flush=True)
                rounds.append(result)
            live_result = await live(browser, base, "bench-live", args.live_events)
            print(f"live: {live_result}", flush=True)
            await browser.close()
    finally:
        server.terminate()
        server.wait(15)
    medians = {key: median(r[key] for r in rounds) for key in rounds[0]}
    print(f"\n| measure ({args.events:,} events) | median of {args.rounds} |\n|---|---|")
    for key, value in medians.items():
        print(f"| {key} | {value} |")
    print("\n| live | value |\n|---|---|")
    for key, value in live_result.items():
        print(f"| {key} | {value} |")
    write_report(
        "viewer", {"events": args.events, "rounds": rounds, "medians": medians, "live": live_result}
    )


if __name__ == "__main__":
    asyncio.run(main())
