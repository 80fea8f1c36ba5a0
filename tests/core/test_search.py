"""Search across runs in the hub (docs/query.md) on the memory, file (SQLite), PostgreSQL
and Redis backends: newest first, scoped, expressions pushed down and evaluated, pages
that neither repeat nor skip an event while events are being published."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from executor_streamer import ExecutorStreamer, InvalidFilter
from executor_streamer.config import ExecutorStreamerConfig
from executor_streamer.core import search as search_module
from executor_streamer.core.search import SearchPage, SearchRequest
from executor_streamer.errors import InvalidInput
from executor_streamer.security import Scope

from ..postgres import POSTGRES_URL, reset_postgres

ADMIN = Scope(admin=True)
HubMaker = Callable[..., Awaitable[ExecutorStreamer]]


@pytest.fixture(params=["memory", "file", "postgres", "redis"])
async def make_hub(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[HubMaker]:
    """Hubs on one backend, with config overrides (nested, camelCase); on Redis and
    PostgreSQL the second shares the first's data."""
    made: list[ExecutorStreamer] = []
    persistence: dict[str, Any] = {}
    if request.param == "file":
        persistence = {"storageBackend": "file", "connectionString": str(tmp_path / "h.db")}
    elif request.param == "postgres":
        await reset_postgres()
        persistence = {"storageBackend": "database", "connectionString": POSTGRES_URL}
    elif request.param == "redis":
        url = request.getfixturevalue("redis_url")
        persistence = {"storageBackend": "redis", "connectionString": url}

    async def factory(**overrides: Any) -> ExecutorStreamer:
        config = ExecutorStreamerConfig().with_overrides({"persistence": persistence, **overrides})
        hub = ExecutorStreamer(config)
        await hub.start()
        made.append(hub)
        return hub

    yield factory
    for hub in made:
        await hub.stop()


def step(n: int) -> dict[str, Any]:
    """Events of a run: commands that start, complete or fail, and thoughts."""
    if n % 5 == 4:
        return {
            "type": "COMMAND_FAILED",
            "data": {
                "commandId": f"c{n}",
                "commandName": f"click_{n}",
                "error": {"code": "TIMEOUT" if n % 10 == 4 else "NOT_FOUND", "message": "m"},
                "duration": 100 * n,
            },
        }
    if n % 5 == 2:
        return {
            "type": "COMMAND_STARTED",
            "data": {"commandId": f"c{n}", "commandName": "go", "action": "NAVIGATE"},
        }
    return {
        "type": "REASONING",
        "data": {"thought": f"thought {n}", "confidence": 0.5, "reasoningType": "plan"},
    }


async def publish_runs(hub: ExecutorStreamer, runs: list[str], per_run: int) -> None:
    for n in range(per_run):
        for run in runs:
            await hub.publisher.publish_wire(run, step(n))


async def pages(
    hub: ExecutorStreamer, scope: Scope = ADMIN, limit: int = 7, **fields: Any
) -> list[dict[str, Any]]:
    """Every page to the end, as dicts."""
    seen: list[dict[str, Any]] = []
    cursor = None
    for _ in range(1000):
        page: SearchPage = await hub.runs.search(
            scope, SearchRequest(limit=limit, cursor=cursor, **fields)
        )
        assert len(page.records) <= limit
        seen += [orjson.loads(r.payload) for r in page.records]
        if page.next_cursor is None:
            return seen
        cursor = page.next_cursor
    raise AssertionError("paging did not end")


def newest_first(events: list[dict[str, Any]]) -> bool:
    keys = [(e["timestamp"], e["seq"], e["streamId"]) for e in events]
    return keys == sorted(keys, reverse=True)


async def test_every_event_newest_first_and_filtered(make_hub: HubMaker) -> None:
    hub = await make_hub()
    await publish_runs(hub, ["wf-a", "wf-b", "wf-c"], 20)
    everything = await pages(hub)
    assert len(everything) == 60 and newest_first(everything)
    assert len({e["id"] for e in everything}) == 60
    timeouts = await pages(
        hub, expression='type == "COMMAND_FAILED" && data.error.code == "TIMEOUT"'
    )
    assert newest_first(timeouts)
    assert [(e["sessionId"], e["data"]["commandName"]) for e in timeouts] == [
        (e["sessionId"], e["data"]["commandName"])
        for e in everything
        if e["type"] == "COMMAND_FAILED" and e["data"]["error"]["code"] == "TIMEOUT"
    ] and len(timeouts) == 6
    slow = await pages(hub, limit=2, expression='sessionId == "wf-b" && data.duration > 1000.0')
    assert {e["sessionId"] for e in slow} == {"wf-b"} and len(slow) == 2


async def test_time_bounds_and_run_patterns(make_hub: HubMaker) -> None:
    hub = await make_hub()
    await publish_runs(hub, ["team-a:1", "team-a:2", "team-b:1"], 6)
    everything = await pages(hub)
    middle = sorted(everything, key=lambda e: (e["timestamp"], e["seq"]))[5:12]
    start, end = middle[0]["timestamp"], middle[-1]["timestamp"]
    window = await pages(
        hub, start_time=datetime.fromisoformat(start), end_time=datetime.fromisoformat(end)
    )
    assert window == [e for e in everything if start <= e["timestamp"] <= end]
    team_a = await pages(hub, streams="team-a:*")
    assert {e["sessionId"] for e in team_a} == {"team-a:1", "team-a:2"} and len(team_a) == 12
    assert await pages(hub, streams="team-c:*") == []


async def test_a_caller_sees_only_the_runs_it_may_watch(make_hub: HubMaker) -> None:
    hub = await make_hub()
    await publish_runs(hub, ["team-a:1", "team-b:1", "solo"], 4)
    alice = Scope(subscribe=("team-a:*", "solo"))
    assert {e["sessionId"] for e in await pages(hub, alice)} == {"team-a:1", "solo"}
    # ∩ the streams pattern, and an expression naming another run changes nothing
    assert {e["sessionId"] for e in await pages(hub, alice, streams="team-*")} == {"team-a:1"}
    sneaky = await pages(hub, alice, expression='sessionId == "team-b:1"')
    assert sneaky == []
    publisher_only = Scope(publish=("*",))
    assert await pages(hub, publisher_only) == []


async def test_paging_while_publishing_repeats_and_skips_nothing(make_hub: HubMaker) -> None:
    """Pages taken while other runs publish: every event that was there when paging began
    is seen once; nothing is seen twice; the order holds across pages."""
    hub = await make_hub()
    await publish_runs(hub, ["wf-1", "wf-2", "wf-3"], 15)
    before = {e["id"] for e in await pages(hub, limit=1000)}
    stop = asyncio.Event()

    async def publish_more() -> None:
        n = 100
        while not stop.is_set():
            await hub.publisher.publish_wire(f"wf-{n % 4 + 1}", step(n))
            n += 1
            await asyncio.sleep(0)

    publishing = asyncio.create_task(publish_more())
    try:
        seen = await pages(hub, limit=4)
    finally:
        stop.set()
        await publishing
    ids = [e["id"] for e in seen]
    assert len(ids) == len(set(ids))
    assert before <= set(ids)
    assert newest_first(seen)


async def test_a_page_that_looked_far_enough_goes_on_from_where_it_stopped(
    make_hub: HubMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A search finding little stops after EXAMINED_PER_PAGE events with a short page and a
    cursor; following the cursors gives exactly what one long look would."""
    hub = await make_hub()
    await publish_runs(hub, ["wf-1", "wf-2"], 40)
    expression = 'data.thought.endsWith("3")'
    whole = await pages(hub, limit=100, expression=expression)
    monkeypatch.setattr(search_module, "EXAMINED_PER_PAGE", 3)
    monkeypatch.setattr(search_module, "BATCH", 3)
    first = await hub.runs.search(ADMIN, SearchRequest(limit=100, expression=expression))
    assert len(first.records) < len(whole) and first.next_cursor is not None
    assert await pages(hub, limit=100, expression=expression) == whole


@pytest.mark.parametrize("make_hub", ["redis"], indirect=True)
async def test_runs_published_on_another_hub_are_searched(make_hub: HubMaker) -> None:
    """Hubs sharing Redis search every hub's runs."""
    first = await make_hub()
    await publish_runs(first, ["wf-1"], 3)
    second = await make_hub()
    await publish_runs(second, ["wf-2"], 3)
    found = await pages(first)
    assert {e["sessionId"] for e in found} == {"wf-1", "wf-2"} and len(found) == 6


async def test_bad_input_is_refused(make_hub: HubMaker) -> None:
    hub = await make_hub()
    with pytest.raises(InvalidInput):
        await hub.runs.search(ADMIN, SearchRequest(cursor="bm90IGEgY3Vyc29y"))
    with pytest.raises(InvalidFilter):
        await hub.runs.search(ADMIN, SearchRequest(expression="type =="))
    with pytest.raises(InvalidFilter, match="maxExpressionLength"):
        await hub.runs.search(ADMIN, SearchRequest(expression="true || " * 300 + "true"))
