"""``GET /api/search`` over HTTP (docs/query.md): real servers and clients, with and
without authentication, one hub and two hubs on Redis; the Python SDK's ``search``."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from executor_streamer import HubClient, InvalidFilter
from executor_streamer.errors import InvalidInput

from ..live_server import Served, ServerFactory, reasoning, status
from .test_security import AUTH, token

TIMEOUT = 'type == "COMMAND_FAILED" && data.error.code == "TIMEOUT"'


def failed(name: str, code: str) -> dict[str, Any]:
    return {
        "type": "COMMAND_FAILED",
        "data": {
            "commandId": name,
            "commandName": name,
            "error": {"code": code, "message": "m"},
            "duration": 10,
        },
    }


async def everything(served: Served, headers: dict[str, str] | None = None, **params: Any) -> Any:
    found: list[dict[str, Any]] = []
    while True:
        response = await served.http.get("/api/search", params=params, headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        found += body["events"]
        if body["nextCursor"] is None:
            return found
        params["cursor"] = body["nextCursor"]


async def test_search_pages_newest_first(served: Served) -> None:
    await served.publish("wf-1", status(1), failed("click_a", "TIMEOUT"), reasoning())
    await served.publish("wf-2", failed("click_b", "NOT_FOUND"), failed("click_c", "TIMEOUT"))
    all_events = await everything(served, limit=2)
    assert len(all_events) == 5
    keys = [(e["timestamp"], e["seq"], e["streamId"]) for e in all_events]
    assert keys == sorted(keys, reverse=True)
    timeouts = await everything(served, filter=TIMEOUT)
    assert [e["data"]["commandName"] for e in timeouts] == ["click_c", "click_a"]
    assert {e["sessionId"] for e in await everything(served, streams="wf-2")} == {"wf-2"}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"filter": "type =="}, None),
        ({"limit": 0}, "query.limit"),
        ({"limit": 1001}, "query.limit"),
        ({"cursor": "bm90IGEgY3Vyc29y"}, "query.cursor"),
        ({"cursor": "../x"}, "query.cursor"),
        ({"streams": "a b"}, "query.streams"),
        ({"startTime": "2026-01-02T00:00:00Z", "endTime": "2026-01-01T00:00:00Z"}, None),
        ({"startTime": "yesterday"}, "query.startTime"),
    ],
)
async def test_bad_input_is_a_422(served: Served, params: dict[str, Any], field: str) -> None:
    response = await served.http.get("/api/search", params=params)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    if "filter" in params:
        assert error["code"] == "INVALID_FILTER" and error["details"]["position"] == 7
    else:
        assert error["code"] == "VALIDATION_ERROR"
        if field is not None:
            assert field in response.text


async def test_a_caller_finds_only_runs_it_may_watch(make_server: ServerFactory) -> None:
    served = await make_server(security=AUTH)
    admin = {"authorization": f"Bearer {token(admin=True)}"}
    for run in ("team-a:1", "team-b:1"):
        response = await served.http.post(
            f"/api/streams/{run}/events", json=status(run), headers=admin
        )
        assert response.status_code == 201, response.text
    alice = {"authorization": f"Bearer {token('alice', subscribe=('team-a:*',))}"}
    found = await everything(served, alice)
    assert [e["sessionId"] for e in found] == ["team-a:1"]
    assert await everything(served, alice, filter='sessionId == "team-b:1"') == []
    assert len(await everything(served, admin)) == 2
    assert (await served.http.get("/api/search")).status_code == 401


async def test_two_hubs_on_redis_search_each_others_runs(
    make_server: ServerFactory, redis_url: str
) -> None:
    config = {
        "persistence": {"storageBackend": "redis", "connectionString": redis_url},
        "security": {"rateLimiting": {"enabled": False}},
    }
    first, second = await make_server(**config), await make_server(**config)
    await first.publish("wf-1", failed("one", "TIMEOUT"))
    await second.publish("wf-2", failed("two", "TIMEOUT"), status(2))
    for served in (first, second):
        found = await everything(served, filter=TIMEOUT)
        assert [e["data"]["commandName"] for e in found] == ["two", "one"]


async def test_the_python_sdk_follows_pages(served: Served) -> None:
    await served.publish("wf-1", *[status(n) for n in range(7)])
    await served.publish("wf-2", failed("x", "TIMEOUT"))
    async with HubClient(served.base_url) as client:
        seqs = [e.seq async for e in client.search(page_size=3)]
        assert len(seqs) == 8
        assert [e.session_id async for e in client.search(TIMEOUT)] == ["wf-2"]
        assert len([e async for e in client.search(page_size=2, limit=3)]) == 3
        assert [e.seq async for e in client.search(streams="wf-1", limit=2)] == [7, 6]
        with pytest.raises(InvalidFilter):
            [e async for e in client.search("type ==")]
        with pytest.raises(InvalidInput):
            [e async for e in client.search(streams="a b")]


WIDGETS = [
    {"title": "Timeouts", "kind": "counter", "filter": TIMEOUT},
    {"title": "By command", "kind": "top", "filter": "true", "groupBy": "data.commandName"},
]


async def test_run_analytics_and_widgets_over_http(make_server: ServerFactory) -> None:
    served = await make_server(security=AUTH, viewer={"dashboard": {"widgets": WIDGETS}})
    admin = {"authorization": f"Bearer {token(admin=True)}"}
    for run, code in (("team-a:1", "TIMEOUT"), ("team-b:1", "TIMEOUT"), ("team-a:2", "GONE")):
        response = await served.http.post(
            f"/api/streams/{run}/events", json=failed(f"click_{run[-1]}", code), headers=admin
        )
        assert response.status_code == 201, response.text
    alice = {"authorization": f"Bearer {token('alice', subscribe=('team-a:*',))}"}
    runs = (await served.http.get("/api/analytics/runs", headers=alice)).json()
    assert runs["runs"]["total"] == 2 and runs["runs"]["running"] == 2
    assert sorted((f["commandName"], f["errorCode"]) for f in runs["failingCommands"]) == [
        ("click_1", "TIMEOUT"),
        ("click_2", "GONE"),
    ]
    narrowed = await served.http.get(
        "/api/analytics/runs", params={"streams": "team-a:2", "bucket": "day"}, headers=alice
    )
    assert narrowed.json()["runs"]["total"] == 1 and len(narrowed.json()["series"]) == 2
    listed = (await served.http.get("/api/analytics/widgets", headers=alice)).json()
    assert [w["title"] for w in listed] == ["Timeouts", "By command"]
    counter = (await served.http.get("/api/analytics/widgets/0", headers=alice)).json()
    assert counter == {"title": "Timeouts", "kind": "counter", "value": 1}
    assert (await served.http.get("/api/analytics/widgets/0", headers=admin)).json()["value"] == 2
    top = (await served.http.get("/api/analytics/widgets/1", headers=admin)).json()
    assert top["rows"] == [{"key": "click_1", "count": 2}, {"key": "click_2", "count": 1}]
    missing = await served.http.get("/api/analytics/widgets/2", headers=admin)
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "WIDGET_NOT_FOUND")
    for params in (
        {"bucket": "week"},
        {"startTime": "2026-01-02T00:00:00Z", "endTime": "2026-01-01T00:00:00Z"},
        {"startTime": "2000-01-01T00:00:00Z"},  # 200,000+ hours
        {"streams": "a b"},
    ):
        bad = await served.http.get("/api/analytics/runs", params=params, headers=admin)
        assert bad.status_code == 422, (params, bad.text)
    assert (await served.http.get("/api/analytics/runs")).status_code == 401
    async with HubClient(served.base_url, token=token(admin=True)) as client:
        assert (await client.run_analytics())["runs"]["total"] == 3
        assert (await client.run_analytics(streams="team-b:*"))["runs"]["total"] == 1
        assert (await client.widget(0))["value"] == 2


@pytest.mark.parametrize(
    "cursor",
    [
        f"{10**30}:1:str_x",  # past any stamp a backend holds
        "5:0:str_x",  # seqs start at 1
        "5:-3:str_x",
        f"5:{2**63}:str_x",
        "-1:1:str_x",
        "5:1:" + "x" * 65,
    ],
)
async def test_a_forged_cursor_is_a_422(served: Served, cursor: str) -> None:
    await served.publish("wf-1", status(1))
    encoded = base64.urlsafe_b64encode(cursor.encode()).decode().rstrip("=")
    response = await served.http.get("/api/search", params={"cursor": encoded[:400]})
    assert response.status_code == 422 and "query.cursor" in response.text


async def test_bounds_at_the_ends_of_time_are_answered(served: Served) -> None:
    await served.publish("wf-1", status(1))
    for params in (
        {"endTime": "9999-12-31T23:59:59.999Z"},
        {"startTime": "0001-01-01T00:00:00Z"},
    ):
        response = await served.http.get("/api/search", params=params)
        assert response.status_code == 200, response.text
        assert len(response.json()["events"]) == 1
