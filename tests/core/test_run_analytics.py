"""Run analytics and dashboard widgets (docs/query.md) against a corpus counted by hand,
on the memory, file (SQLite), PostgreSQL and Redis backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from executor_streamer import ExecutorStreamer
from executor_streamer.config import ExecutorStreamerConfig
from executor_streamer.core.run_analytics import Window, percentile
from executor_streamer.errors import ConfigError, InvalidInput, WidgetNotFound
from executor_streamer.security import Scope

from .test_search import HubMaker, make_hub

__all__ = ["make_hub"]

ADMIN = Scope(admin=True)
TIMEOUTS = 'type == "COMMAND_FAILED" && data.error.code == "TIMEOUT"'
WIDGETS = [
    {"title": "TIMEOUT failures", "kind": "counter", "filter": TIMEOUTS},
    {"title": "TIMEOUTs per hour", "kind": "timeseries", "filter": TIMEOUTS},
    {
        "title": "Actions started",
        "kind": "top",
        "filter": 'type == "COMMAND_STARTED"',
        "groupBy": "data.action",
    },
    {
        "title": "Failing commands",
        "kind": "table",
        "filter": 'type == "COMMAND_FAILED"',
        "groupBy": "data.commandName",
        "bucket": "day",
    },
]
VIEWER = {"dashboard": {"widgets": WIDGETS}}


def started(command: str, name: str, action: str) -> dict[str, Any]:
    return {
        "type": "COMMAND_STARTED",
        "data": {"commandId": command, "commandName": name, "action": action},
    }


def completed(command: str, name: str, ms: int) -> dict[str, Any]:
    data = {"commandId": command, "commandName": name, "duration": ms, "result": None}
    return {"type": "COMMAND_COMPLETED", "data": data}


def failed(command: str, name: str, code: str, ms: int) -> dict[str, Any]:
    return {
        "type": "COMMAND_FAILED",
        "data": {
            "commandId": command,
            "commandName": name,
            "error": {"code": code, "message": "m"},
            "duration": ms,
        },
    }


def workflow(status: str) -> dict[str, Any]:
    return {"type": "STATUS", "data": {"statusType": "workflow", "status": status}}


async def corpus(hub: ExecutorStreamer) -> None:
    """Six runs: one of each outcome, one running, one closed without an outcome, and one
    of another team."""
    runs: dict[str, list[dict[str, Any]]] = {
        "r-ok": [
            started("c1", "open", "NAVIGATE"),
            completed("c1", "open", 100),
            started("c2", "click_pay", "CLICK"),
            completed("c2", "click_pay", 300),
            workflow("COMPLETED"),
        ],
        "r-bad": [
            started("c1", "click_pay", "CLICK"),
            failed("c1", "click_pay", "TIMEOUT", 5000),
            started("c2", "click_pay", "CLICK"),
            failed("c2", "click_pay", "TIMEOUT", 7000),
            workflow("FAILED"),
        ],
        "r-cancel": [workflow("CANCELLED")],
        "r-live": [started("c1", "open", "NAVIGATE"), completed("c1", "open", 200)],
        "r-closed": [{"type": "STATUS", "data": {"statusType": "step", "status": "x"}}],
        "other:1": [failed("c9", "type_name", "NOT_FOUND", 10)],
    }
    for run, events in runs.items():
        for event in events:
            await hub.publisher.publish_wire(run, event)
    for run in ("r-ok", "r-bad", "r-cancel", "r-closed"):
        await hub.destroy_stream(run)


async def test_run_analytics_as_counted_by_hand(make_hub: HubMaker) -> None:
    hub = await make_hub(viewer=VIEWER)
    await corpus(hub)
    report = await hub.run_analytics.runs(ADMIN, Window.of(None, None), None)
    assert report["runs"] == {
        "total": 6,
        "running": 2,
        "completed": 1,
        "failed": 1,
        "cancelled": 1,
        "closed": 1,
    }
    assert report["failingCommands"][0] == {
        "commandName": "click_pay",
        "errorCode": "TIMEOUT",
        "count": 2,
        "lastStreamId": hub.streams.resolve("r-bad").id,
        "lastSessionId": "r-bad",
    }
    assert [(f["commandName"], f["count"]) for f in report["failingCommands"]] == [
        ("click_pay", 2),
        ("type_name", 1),
    ]
    assert report["actions"] == [
        {"action": "CLICK", "count": 3, "failures": 2, "p50Ms": 5000.0, "p95Ms": 7000.0},
        {"action": "NAVIGATE", "count": 2, "failures": 0, "p50Ms": 100.0, "p95Ms": 200.0},
        {"action": "unknown", "count": 1, "failures": 1, "p50Ms": 10.0, "p95Ms": 10.0},
    ]
    series = report["series"]
    assert len(series) == 25  # the last 24 hours by hour, aligned to the hour
    assert sum(b["started"] for b in series) == 6 and series[-1]["started"] == 6
    assert (series[-1]["completed"], series[-1]["failed"]) == (1, 1)
    slowest = report["slowestRuns"]
    assert len(slowest) == 6 and {s["workflowSessionId"] for s in slowest} >= {"r-ok", "r-bad"}
    assert [s["durationMs"] for s in slowest] == sorted(
        (s["durationMs"] for s in slowest), reverse=True
    )


async def test_scope_pattern_and_window(make_hub: HubMaker) -> None:
    hub = await make_hub(viewer=VIEWER)
    await corpus(hub)
    team = Scope(subscribe=("r-*",))
    report = await hub.run_analytics.runs(team, Window.of(None, None), None)
    assert report["runs"]["total"] == 5
    assert [f["commandName"] for f in report["failingCommands"]] == ["click_pay"]
    only_ok = await hub.run_analytics.runs(ADMIN, Window.of(None, None), "r-ok")
    assert only_ok["runs"] == {
        "total": 1,
        "running": 0,
        "completed": 1,
        "failed": 0,
        "cancelled": 0,
        "closed": 0,
    }
    past = datetime.now(UTC) - timedelta(days=3)
    long_ago = await hub.run_analytics.runs(ADMIN, Window.of(past - timedelta(days=1), past), None)
    assert long_ago["runs"]["total"] == 0 and long_ago["failingCommands"] == []
    by_day = await hub.run_analytics.runs(
        ADMIN, Window.of(datetime.now(UTC) - timedelta(days=6), None, "day"), None
    )
    assert len(by_day["series"]) == 7 and by_day["series"][-1]["started"] == 6


async def test_widgets_from_config(make_hub: HubMaker) -> None:
    hub = await make_hub(viewer=VIEWER)
    await corpus(hub)
    assert await hub.run_analytics.widget(ADMIN, 0, None, None) == {
        "title": "TIMEOUT failures",
        "kind": "counter",
        "value": 2,
    }
    series = await hub.run_analytics.widget(ADMIN, 1, None, None)
    assert series["kind"] == "timeseries" and len(series["series"]) == 25
    assert series["series"][-1]["value"] == 2 and sum(b["value"] for b in series["series"]) == 2
    assert (await hub.run_analytics.widget(ADMIN, 2, None, None))["rows"] == [
        {"key": "CLICK", "count": 3},
        {"key": "NAVIGATE", "count": 2},
    ]
    table = await hub.run_analytics.widget(Scope(subscribe=("r-*",)), 3, None, None)
    assert table == {
        "title": "Failing commands",
        "kind": "table",
        "rows": [{"key": "click_pay", "count": 2}],
    }
    with pytest.raises(WidgetNotFound):
        await hub.run_analytics.widget(ADMIN, 4, None, None)
    # a day-bucket widget over 90 days (2,160 hours: too many for hourly buckets)
    quarter = await hub.run_analytics.widget(ADMIN, 3, datetime.now(UTC) - timedelta(days=90), None)
    assert quarter["rows"] == [
        {"key": "click_pay", "count": 2},
        {"key": "type_name", "count": 1},
    ]


def test_a_widget_that_does_not_compile_stops_the_hub() -> None:
    config = ExecutorStreamerConfig().with_overrides(
        {
            "viewer": {
                "dashboard": {"widgets": [{"title": "t", "kind": "counter", "filter": "x =="}]}
            }
        }
    )
    with pytest.raises(ConfigError, match=r"widgets\[0\]\.filter"):
        ExecutorStreamer(config)


def test_windows_and_percentiles() -> None:
    now = datetime(2026, 12, 7, 10, 30, tzinfo=UTC)
    with pytest.raises(InvalidInput):
        Window.of(now, now - timedelta(seconds=1))
    with pytest.raises(InvalidInput):
        Window.of(now - timedelta(days=365), now)  # 8,760 hours
    with pytest.raises(InvalidInput, match="endTime"):
        Window.of(None, datetime(1, 1, 1, tzinfo=UTC))  # its default start would overflow
    with pytest.raises(InvalidInput, match="startTime"):
        Window.of(datetime(9999, 12, 31, tzinfo=UTC), None)
    assert len(Window.of(now - timedelta(days=365), now, "day").buckets()) == 366
    assert Window.of(None, now).buckets()[0] == datetime(2026, 12, 6, 10, tzinfo=UTC)
    assert percentile([], 50) is None
    assert percentile([3.0], 95) == 3.0
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 95), percentile(values, 100)) == (
        50.0,
        95.0,
        100.0,
    )
