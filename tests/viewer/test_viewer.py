"""The live viewer in a real headless Chromium (Debian's ``chromium``, driven by
Playwright) against a real hub: the demo run renders with its commands, failures and
screenshots; live events appear; event text is text; filters, search and deep links;
after the hub drops the page's client later events appear once; 10,000 events scroll."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright

from executor_streamer import HubClient
from executor_streamer.demo import SimulatedAgent
from executor_streamer.security import Scope, mint_token

from ..live_server import Served, ServerFactory, status
from ..waiting import eventually_async

CHROMIUM = os.environ.get("CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
README_SCREENSHOT = Path(__file__).parents[2] / "docs" / "viewer.png"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    # No skip when it is missing: .ci/run installs it, and a test that cannot run fails.
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def viewer(served: Served, browser: Browser) -> AsyncIterator[Page]:
    page = await browser.new_page(viewport={"width": 1400, "height": 900}, bypass_csp=True)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    await page.close()
    assert errors == []


async def demo_run(served: Served, session: str = "demo-run-1") -> None:
    async with HubClient(served.base_url) as client:
        await SimulatedAgent(client, session, pace=0, seed=7).run()


async def rows(page: Page) -> list[str]:
    texts: list[str] = await page.locator(".row").all_inner_texts()
    return texts


async def events_shown(page: Page, count: int) -> None:
    await page.wait_for_function(
        f"document.getElementById('count')?.textContent === '{count} events'", timeout=15_000
    )


async def test_the_demo_run_renders(served: Served, viewer: Page) -> None:
    await demo_run(served)
    await viewer.goto(f"{served.base_url}/")
    await viewer.get_by_role("link", name="demo-run-1").click()
    await events_shown(viewer, 30)
    await viewer.wait_for_selector(".connection[data-state='live']")
    shown = await rows(viewer)
    # A command's start and end are one row; the failed click is marked as failed.
    assert any("navigate" in row.lower() and " ms" in row for row in shown)
    failed = await viewer.locator(".row.failed").all_inner_texts()
    assert any("click" in row.lower() and "failed" in row.lower() for row in failed)
    assert len(shown) < 30  # paired commands: fewer rows than events
    # Screenshots load for real: the image has pixels, so do the filmstrip's.
    await viewer.wait_for_function(
        "document.getElementById('shot').naturalWidth > 0", timeout=10_000
    )
    thumbs = viewer.locator("#filmstrip img")
    assert await thumbs.count() >= 3
    await viewer.wait_for_function(
        "[...document.querySelectorAll('#filmstrip img')].every((i) => i.naturalWidth > 0)"
    )
    variables = await viewer.locator("#variables").inner_text()
    assert "=" in variables
    if os.environ.get("UPDATE_VIEWER_SCREENSHOT"):
        await viewer.locator(".row.failed").first.click()
        await viewer.screenshot(path=str(README_SCREENSHOT))


async def test_the_run_list_shows_finished_runs(served: Served, viewer: Page) -> None:
    await served.publish("wf-finished", status(1))
    await served.http.delete("/api/streams/wf-finished")
    await served.publish("wf-running", status(1))
    await viewer.goto(f"{served.base_url}/")
    await viewer.get_by_role("link", name="wf-finished").click()
    await events_shown(viewer, 1)  # its history, though the stream is closed
    await viewer.wait_for_selector(".connection[data-state='closed']")


async def test_the_run_list_finds_runs_where_an_expression_holds(
    served: Served, viewer: Page
) -> None:
    failed = {
        "type": "COMMAND_FAILED",
        "data": {
            "commandId": "c1",
            "commandName": "click_pay",
            "error": {"code": "TIMEOUT", "message": "no answer"},
            "duration": 30000,
        },
    }
    await served.publish("wf-timed-out", status(1), failed, failed)
    await served.publish("wf-fine", status(1))
    await viewer.goto(f"{served.base_url}/")
    await viewer.get_by_role("link", name="wf-fine").wait_for()
    search = viewer.get_by_role("searchbox", name="Runs with an event where (a filter expression)")
    await search.fill('type == "COMMAND_FAILED" && data.error.code == "TIMEOUT"')
    await viewer.get_by_role("button", name="Find runs").click()
    await viewer.get_by_role("link", name="wf-fine").wait_for(state="detached")
    assert await viewer.get_by_role("link", name="wf-timed-out").is_visible()
    assert await viewer.text_content("td.matching") == "2"
    await search.fill("data.error.code ==")
    await viewer.get_by_role("button", name="Find runs").click()
    await viewer.wait_for_function(
        "document.getElementById('run-search-problem').textContent.includes('Syntax error')"
    )
    await search.fill('sessionId == "nobody"')
    await viewer.get_by_role("button", name="Find runs").click()
    await viewer.get_by_text('No run has an event where sessionId == "nobody".').wait_for()
    assert await viewer.text_content("#run-search-problem") == ""
    await search.fill("")
    await viewer.get_by_role("button", name="Find runs").click()
    await viewer.get_by_role("link", name="wf-fine").wait_for()


async def test_an_event_published_after_load_appears_live(served: Served, viewer: Page) -> None:
    await served.publish("wf-live", status(1))
    await viewer.goto(f"{served.base_url}/view/wf-live")
    await events_shown(viewer, 1)
    await served.publish(
        "wf-live", {"type": "STATUS", "data": {"statusType": "s", "status": "late"}}
    )
    await events_shown(viewer, 2)
    assert any("late" in row for row in await rows(viewer))


async def test_event_text_is_text(served: Served, viewer: Page) -> None:
    attack = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
    await served.publish(
        "wf-xss", {"type": "STATUS", "data": {"statusType": "s", "status": attack}}
    )
    await viewer.goto(f"{served.base_url}/view/wf-xss")
    await events_shown(viewer, 1)
    await viewer.locator(".row").first.click()
    assert attack in await viewer.locator(".row").first.inner_text()
    assert attack.replace('"', '\\"') in await viewer.locator("#detail").inner_text()
    # A witness: an image of the same source, made now, fails to load and runs its
    # onerror handler. Had the attack's markup become an element, loaded earlier, its
    # handler would have run by then too.
    witness = await viewer.evaluate(
        "new Promise((resolve) => { const img = new Image();"
        " img.onerror = () => resolve('error'); img.onload = () => resolve('load');"
        " img.src = 'x'; })"
    )
    assert witness == "error"
    assert await viewer.evaluate("window.__pwned") is None
    assert await viewer.locator("#list img, #detail img, #list script").count() == 0


async def test_filters_and_search(served: Served, viewer: Page) -> None:
    await served.publish(
        "wf-filter",
        status("alpha"),
        {"type": "REASONING", "data": {"thought": "beta", "confidence": 1, "reasoningType": "p"}},
        status("gamma"),
    )
    await viewer.goto(f"{served.base_url}/view/wf-filter")
    await events_shown(viewer, 3)
    await viewer.locator("input[data-type='STATUS']").uncheck()
    await viewer.wait_for_function("document.querySelectorAll('.row').length === 1")
    assert "beta" in (await rows(viewer))[0]
    await viewer.locator("input[data-type='STATUS']").check()
    await viewer.fill("#search", "GAMMA")
    await viewer.wait_for_function("document.querySelectorAll('.row').length === 1")
    assert "gamma" in (await rows(viewer))[0]


async def test_a_search_that_starts_with_a_question_mark_is_an_expression(
    served: Served, viewer: Page
) -> None:
    """The hub evaluates it, on the run so far and on live events; one that does not
    compile says why beside the box; clearing the box shows every row again."""
    await served.publish("wf-expr", status("alpha"), status("beta"), status("gamma"))
    await viewer.goto(f"{served.base_url}/view/wf-expr")
    await events_shown(viewer, 3)
    await viewer.fill("#search", "? data.status in ['alpha', 'gamma', 'delta']")
    await viewer.wait_for_function("document.querySelectorAll('.row').length === 2")
    assert ["alpha" in r for r in await rows(viewer)] == [True, False]
    await served.publish("wf-expr", status("delta"), status("epsilon"))
    await viewer.wait_for_function("document.querySelectorAll('.row').length === 3")
    assert "delta" in (await rows(viewer))[2]
    await viewer.fill("#search", "? data.status ==")
    await viewer.wait_for_function(
        "document.getElementById('search-problem').textContent.includes('Syntax error')"
    )
    assert await viewer.locator(".row").count() == 0
    await viewer.fill("#search", "")
    await viewer.wait_for_function("document.querySelectorAll('.row').length === 5")
    assert await viewer.text_content("#search-problem") == ""


async def test_a_deep_link_selects_its_event(served: Served, viewer: Page) -> None:
    await served.publish("wf-deep", *[status(n) for n in range(1, 41)])
    await viewer.goto(f"{served.base_url}/view/wf-deep#seq=17")
    await events_shown(viewer, 40)
    await viewer.wait_for_selector(".row.selected[data-seq='17']")
    assert (await viewer.locator("#detail article").get_attribute("data-seq")) == "17"
    await viewer.locator(".row[data-seq='18']").click()
    assert viewer.url.endswith("#seq=18")


async def test_after_the_hub_drops_the_page_events_appear_once(
    served: Served, viewer: Page
) -> None:
    await served.publish("wf-drop", status(1))
    await viewer.goto(f"{served.base_url}/view/wf-drop")
    await events_shown(viewer, 1)
    clients: list[dict[str, str]] = []

    async def listed() -> bool:
        """Whether the hub lists the page's client: after a drop, once it reconnected."""
        nonlocal clients
        clients = (await served.http.get("/api/streams/wf-drop/clients")).json()
        return bool(clients)

    for round_ in range(3):
        assert await eventually_async(listed), "the page did not (re)connect"
        for client in clients:
            await served.http.delete(f"/api/streams/wf-drop/clients/{client['id']}")
        await served.publish("wf-drop", *[status(f"r{round_}-{n}") for n in range(5)])
    await events_shown(viewer, 16)
    seqs: list[int] = await viewer.evaluate(
        "window.executorStreamerViewer.run.items.flatMap((i) => i.events.map((e) => e.seq))"
    )
    assert seqs == list(range(1, 17))


async def test_ten_thousand_events_open_and_scroll(
    make_server: ServerFactory, browser: Browser
) -> None:
    served = await make_server(security={"rateLimiting": {"enabled": False}})
    for start in range(0, 10_000, 1000):
        await served.publish("wf-big", *[status(n) for n in range(start, start + 1000)])
    page = await browser.new_page(viewport={"width": 1400, "height": 900}, bypass_csp=True)
    try:
        await page.goto(f"{served.base_url}/view/wf-big")
        await events_shown(page, 10_000)
        # Only the rows in view are in the page, whatever the run's length.
        assert await page.locator(".row").count() < 100
        await page.locator("#follow").uncheck()
        await page.evaluate("document.getElementById('list').scrollTop = 0")
        await page.wait_for_selector(".row[data-seq='1']")
        await page.evaluate("document.getElementById('list').scrollTop = 1e9")
        await page.wait_for_selector(".row[data-seq='10000']")
    finally:
        await page.close()


async def test_with_authentication_the_token_comes_from_the_fragment(
    make_server: ServerFactory, browser: Browser
) -> None:
    secret = "viewer-test-secret-" + "v" * 32
    served = await make_server(security={"authenticationRequired": True, "jwt": {"secret": secret}})
    token = mint_token(secret, "viewer", Scope(admin=True), 600)
    async with HubClient(served.base_url, token=token) as client:
        await SimulatedAgent(client, "wf-secure", pace=0, seed=3).run()
    page = await browser.new_page(bypass_csp=True)
    try:
        await page.goto(f"{served.base_url}/view/wf-secure")
        await page.wait_for_selector(".token-form")  # no token: it asks for one
        await page.goto("about:blank")  # (to the same path, only the fragment would change)
        await page.goto(f"{served.base_url}/view/wf-secure#token={token}")
        await events_shown(page, 30)
        assert "token" not in page.url  # taken out of the address bar
        await page.wait_for_function(
            "document.getElementById('shot').naturalWidth > 0", timeout=10_000
        )
    finally:
        await page.close()


async def test_without_a_token_the_run_page_asks_at_once(
    make_server: ServerFactory, browser: Browser
) -> None:
    """With authentication on and no token, /view/{id} asks for one before it opens any
    connection: not an empty run while the hub waits out its time for an auth message."""
    secret = "viewer-test-secret-" + "w" * 32
    served = await make_server(security={"authenticationRequired": True, "jwt": {"secret": secret}})
    page = await browser.new_page()
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    try:
        await page.goto(f"{served.base_url}/view/wf-secure")
        await page.wait_for_selector(".token-form")
        assert sockets == []
        assert await page.locator("#count").count() == 0  # no empty run was drawn
    finally:
        await page.close()


async def test_every_file_the_pages_ask_for_is_there(served: Served, browser: Browser) -> None:
    """The run list and a run page load without a 404, the icon included (browsers ask
    for /favicon.ico by convention too), and run under their Content-Security-Policy
    without a violation. (The other tests' pages bypass the policy: Playwright evaluates
    their string predicates in the page, which the policy forbids, as it should.)"""
    await demo_run(served)
    page = await browser.new_page(viewport={"width": 1400, "height": 900})
    failed: list[str] = []
    refused: list[str] = []
    page.on("response", lambda r: failed.append(r.url) if r.status >= 400 else None)
    page.on("console", lambda m: refused.append(m.text) if "Content Security" in m.text else None)
    try:
        await page.goto(served.base_url + "/", wait_until="networkidle")
        await page.locator("table.runs a").filter(has_text="demo-run-1").wait_for()
        await page.goto(served.base_url + "/view/demo-run-1", wait_until="networkidle")
        await page.locator("#count").filter(has_text="30 events").wait_for()
        await page.locator(".row").first.wait_for()
        icon = await page.locator("link[rel=icon]").get_attribute("href")
    finally:
        await page.close()
    assert failed == [] and refused == []
    for url in (f"{served.base_url}{icon}", f"{served.base_url}/favicon.ico"):
        answer = await served.http.get(url)
        assert (answer.status_code, answer.headers["content-type"]) == (200, "image/svg+xml")


async def test_the_pages_carry_their_security_headers(served: Served, browser: Browser) -> None:
    """Every viewer file says what may run and connect, is never sniffed into another
    type, and no other site may frame the page (a page that tries gets nothing drawn)."""
    for path in (
        "/",
        "/view/x",
        "/dashboard",
        "/viewer/app.js",
        "/viewer/dashboard.js",
        "/viewer/client.js",
        "/favicon.ico",
    ):
        headers = (await served.http.get(path)).headers
        assert "frame-ancestors 'none'" in headers["content-security-policy"], path
        assert "script-src 'self'" in headers["content-security-policy"], path
        assert headers["x-content-type-options"] == "nosniff", path
    page = await browser.new_page()
    try:
        await page.set_content(f'<iframe id="f" src="{served.base_url}/"></iframe>')
        frame = page.frame_locator("#f")
        assert await frame.locator("#main").count() == 0
    finally:
        await page.close()


DASHBOARD_WIDGETS = [
    {
        "title": "TIMEOUT failures",
        "kind": "counter",
        "filter": 'type == "COMMAND_FAILED" && data.error.code == "TIMEOUT"',
    },
    {"title": "Errors per hour", "kind": "timeseries", "filter": 'type == "ERROR"'},
    {
        "title": "Slowest commands",
        "kind": "top",
        "filter": 'type == "COMMAND_COMPLETED" && data.duration > 0.0',
        "groupBy": "data.commandName",
    },
]


async def test_the_dashboard_draws_runs_failures_durations_and_widgets(
    make_server: ServerFactory, browser: Browser
) -> None:
    """Under the page's own Content-Security-Policy: counters, the runs-over-time chart,
    the failing commands linking to their run, action durations and the configured
    widgets; a failing command's name with markup stays text."""
    served = await make_server(viewer={"dashboard": {"widgets": DASHBOARD_WIDGETS}})
    await demo_run(served, "demo-ok")
    failed = {
        "type": "COMMAND_FAILED",
        "data": {
            "commandId": "c1",
            "commandName": "<b>click_pay</b>",
            "error": {"code": "TIMEOUT", "message": "no answer"},
            "duration": 30000,
        },
    }
    started = {
        "type": "COMMAND_STARTED",
        "data": {"commandId": "c1", "commandName": "<b>click_pay</b>", "action": "CLICK"},
    }
    await served.publish("wf-timeout", started, failed)
    await served.publish(
        "wf-timeout", {"type": "STATUS", "data": {"statusType": "workflow", "status": "FAILED"}}
    )
    page = await browser.new_page(viewport={"width": 1200, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda m: errors.append(m.text) if "Content Security" in m.text else None)
    try:
        await page.goto(served.base_url + "/")
        await page.get_by_role("link", name="Dashboard").click()
        await page.wait_for_url("**/dashboard")
        runs = page.get_by_role("region", name="Runs", exact=True)
        await runs.locator("[data-counter=total]").filter(has_text="2").wait_for()
        assert await runs.locator("[data-counter=failed]").inner_text() == "2"  # the demo fails
        chart = page.get_by_role(
            "img", name="Runs started, completed and failed, last 24 hours, by hour"
        )
        assert await chart.locator("rect").count() == 25 * 3
        failing = page.get_by_role("region", name="Top failing commands")
        row = failing.get_by_role("row").filter(has_text="<b>click_pay</b>")
        assert "TIMEOUT" in await row.inner_text()
        assert await failing.locator("b").count() == 0  # text, never markup
        await row.get_by_role("link", name="wf-timeout").wait_for()
        durations = page.get_by_role("region", name="Action durations")
        assert "CLICK" in await durations.inner_text()
        counter = page.get_by_role("region", name="TIMEOUT failures")
        assert (await counter.inner_text()).strip().endswith("1")
        await page.get_by_role("img", name="Errors per hour").wait_for()
        top = page.get_by_role("region", name="Slowest commands")
        assert await top.get_by_role("row").count() > 1
        await page.get_by_role("combobox", name="Time range").select_option("week")
        week = page.get_by_role(
            "img", name="Runs started, completed and failed, last 7 days, by day"
        )
        await week.wait_for()
        assert await week.locator("rect").count() in (7 * 3, 8 * 3)
        await failing.get_by_role("link", name="wf-timeout").click()
        await page.wait_for_url("**/view/wf-timeout")
    finally:
        await page.close()
    assert errors == []
