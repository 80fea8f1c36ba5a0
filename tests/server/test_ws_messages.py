"""Whatever a client sends, the hub answers in kind and stays up: hypothesis-generated
WebSocket messages and URLs (and SSE query strings) against a real hub. Every message gets a reply
or an ``error``; the connection is never dropped; an SSE request is answered 200 or 4xx."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from ..live_server import ThreadedServer, server_in_thread

KINDS = ["subscribe", "unsubscribe", "replay", "filter", "ping"]
REPLIES = {
    "connection_ack",
    "subscribed",
    "unsubscribed",
    "event",
    "events",
    "replay_done",
    "pong",
    "filter_ack",
    "error",
}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3)
    ),
    max_leaves=10,
)
moments = st.sampled_from(
    ["2026-01-01T00:00:00Z", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "x", ""]
)
streams = st.sampled_from(["wf-1", "wf-2", "nope", "str_x", "", "²"]) | st.text(max_size=8)
filters = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "eventTypes": st.lists(st.sampled_from(["STATUS", "ERROR", "BOGUS"]), max_size=3),
            "sessionIds": st.lists(streams, max_size=2),
            "timeRange": st.fixed_dictionaries({"start": moments, "end": moments}),
            "other": json_values,
        },
    ),
    max_size=3,
)
replay_options = st.fixed_dictionaries(
    {},
    optional={
        "limit": st.integers(-5, 20_000),
        "afterSeq": st.integers(-1, 2**64),
        "offset": st.integers(-1, 2**64),
        "startTime": moments,
        "endTime": moments,
        "search": st.text(max_size=5),
        "eventTypes": st.lists(st.sampled_from(["STATUS", "BOGUS"]), max_size=2),
    },
)
structured = st.fixed_dictionaries(
    {"type": st.sampled_from(KINDS) | st.text(max_size=6)},
    optional={
        "streamId": streams | json_values,
        "filters": filters | json_values,
        "since": st.integers(-1, 2**64) | json_values,
        "epoch": st.text(max_size=5) | json_values,
        "batch": st.booleans() | json_values,
        "replayOptions": replay_options | json_values,
        "requestId": st.text(max_size=200) | st.integers(-(2**70), 2**70) | json_values,
        "token": st.text(max_size=5),
    },
)
messages = (
    structured.map(json.dumps)  # the standard library writes integers of any size
    | json_values.map(json.dumps)
    | st.text(max_size=40)
    | st.binary(max_size=20)
)


@pytest.fixture(scope="module")
def hub_server() -> Iterator[ThreadedServer]:
    # Many examples against one server from one address: rate limits have tests of their own.
    with server_in_thread(
        logging={"level": "ERROR"}, security={"rateLimiting": {"enabled": False}}
    ) as server:
        with httpx.Client(base_url=server.base_url) as http:
            for stream in ("wf-1", "wf-2"):
                status = {"type": "STATUS", "data": {"statusType": "a", "status": "b"}}
                http.post(f"/api/streams/{stream}/events", json={"events": [status] * 3})
        yield server


async def _exchange(server: ThreadedServer, sent: list[str | bytes]) -> list[dict[str, Any]]:
    replies: list[dict[str, Any]] = []
    async with connect(server.ws_url, max_size=None) as ws:
        for message in sent:
            await ws.send(message)
        await ws.send(orjson.dumps({"type": "ping", "requestId": "last"}).decode())
        while True:
            reply = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
            replies.append(reply)
            if reply["type"] == "pong" and reply.get("metadata", {}).get("requestId") == "last":
                return replies


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(sent=st.lists(messages, min_size=1, max_size=8))
def test_any_message_gets_an_answer_and_the_socket_stays(
    hub_server: ThreadedServer, sent: list[str | bytes]
) -> None:
    """A malformed, impossible or hostile message gets an ``error`` (or its reply); the
    connection stays open and still answers a ping."""
    replies = asyncio.run(_exchange(hub_server, sent))
    assert {reply["type"] for reply in replies} <= REPLIES
    for reply in replies:
        if reply["type"] == "error":
            assert reply["error"]["code"] != "INTERNAL_ERROR", reply


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    since=st.text(max_size=25) | st.integers(-1, 2**70).map(str),
    last_event_id=st.none()
    | st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255), max_size=25).map(
        lambda value: value.strip(" \t")  # what HTTP allows in a header value
    ),
    types=st.none() | st.text(max_size=20) | st.sampled_from(["STATUS", "STATUS,ERROR", ","]),
    epoch=st.none() | st.text(max_size=10),
)
def test_any_sse_query_is_answered_200_or_4xx(
    hub_server: ThreadedServer,
    since: str,
    last_event_id: str | None,
    types: str | None,
    epoch: str | None,
) -> None:
    params = {"since": since, **({} if types is None else {"types": types})}
    if epoch is not None:
        params["epoch"] = epoch
    headers = {} if last_event_id is None else {b"last-event-id": last_event_id.encode("latin-1")}

    async def ask() -> int:
        async with (
            httpx.AsyncClient(base_url=hub_server.base_url, timeout=10) as http,
            http.stream("GET", "/api/streams/wf-1/events", params=params, headers=headers) as r,
        ):
            return r.status_code

    status = asyncio.run(ask())
    assert status == 200 or 400 <= status < 500, status


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    query=st.fixed_dictionaries(
        {},
        optional={
            "streamId": streams,
            "since": st.text(max_size=25) | st.integers(-1, 2**70).map(str),
            "types": st.text(max_size=20) | st.sampled_from(["STATUS", "STATUS,ERROR", ","]),
            "epoch": st.text(max_size=10),
        },
    )
)
def test_any_websocket_url_is_answered(hub_server: ThreadedServer, query: dict[str, str]) -> None:
    """Query parameters of ``/ws`` never drop the connection: the hub acknowledges it and
    reports what it refuses, or closes with 4004 for a stream that does not exist."""

    async def visit() -> tuple[list[str], int | None]:
        kinds: list[str] = []
        url = hub_server.ws_url + "?" + urlencode(query)
        async with connect(url, max_size=None) as ws:
            with contextlib.suppress(ConnectionClosed):  # closed (4004) before it went out
                await ws.send(orjson.dumps({"type": "ping", "requestId": "last"}).decode())
            try:
                while True:
                    reply = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
                    kinds.append(reply["type"])
                    if reply["type"] == "pong":
                        return kinds, None
            except ConnectionClosed:
                return kinds, ws.close_code

    kinds, closed = asyncio.run(visit())
    assert kinds[0] == "connection_ack" and set(kinds) <= REPLIES
    assert closed in (None, 4004), closed
