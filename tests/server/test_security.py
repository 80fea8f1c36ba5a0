"""Security on a real server with real clients (docs/security.md): credentials on every
route and transport, scopes per stream, tickets, expiry of open connections, origins and
rate limits. Each attack is one test."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import http.server
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import jwt
import orjson
import pytest
import structlog
import structlog.testing
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from executor_streamer.security import Scope, mint_token
from executor_streamer.security.tickets import TICKET_TTL_SECONDS, LocalOnceStore, Tickets
from executor_streamer.server import websocket as websocket_module
from executor_streamer.server.runner import HubServer, build_server

from .. import live_server
from ..conftest import PNG
from ..live_server import Served, ServerFactory, sse_stream, status
from ..waiting import clear_of_a_minute_edge, eventually
from .test_websocket import Peer

SECRET = "test-secret-" + "k" * 40
API_KEY = "es_producer_key_for_tests"
PRODUCER = {
    "name": "producer",
    "keySha256": hashlib.sha256(API_KEY.encode()).hexdigest(),
    "scope": {"publish": ["*"]},
}
AUTH = {
    "authenticationRequired": True,
    "jwt": {"secret": SECRET},
    "apiKeys": [PRODUCER],
    "corsOrigins": ["https://app.example"],
}


SECRETS = {SECRET, API_KEY}
"""Every credential and ticket these tests use: none may appear in any log."""


def token(
    sub: str = "alice",
    *,
    subscribe: tuple[str, ...] = ("*",),
    publish: tuple[str, ...] = (),
    admin: bool = False,
    ttl: int = 600,
) -> str:
    minted = mint_token(SECRET, sub, Scope(subscribe, publish, admin), ttl)
    SECRETS.add(minted)
    return minted


CLIENT_LOGGERS = ("websockets.client", "httpx", "httpcore")
"""The tests' own clients, which log what they send at DEBUG: not the hub's logs."""


@pytest.fixture(autouse=True)
def no_secret_in_any_log(
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[None]:
    """Everything logged while a test runs (the hub's logs, uvicorn's access and error
    logs at DEBUG, anything written to stdout or stderr) holds no token, ticket or key.
    Set up first, so it is torn down last: the servers' shutdowns are in it too."""
    caplog.set_level(logging.DEBUG)

    def with_access_log(*args: Any, **kwargs: Any) -> HubServer:
        # uvicorn's access log, which logs paths with their queries (the hub runs without
        # one; uvicorn turns it off as it configures a server, so it is turned on after).
        server = build_server(*args, **kwargs)
        monkeypatch.setattr(logging.getLogger("uvicorn.access"), "propagate", True)
        return server

    monkeypatch.setattr(live_server, "build_server", with_access_log)
    yield
    out, err = capfd.readouterr()
    records = [
        record
        for record in [*caplog.get_records("setup"), *caplog.get_records("call"), *caplog.records]
        if not record.name.startswith(CLIENT_LOGGERS)
    ]
    logged = "\n".join([out, err, *(caplog.handler.format(r) for r in records)])
    assert "HTTP/1.1" in logged, "no access log was captured: the check would see nothing"
    leaked = [secret[:12] + "..." for secret in SECRETS if secret in logged]
    assert leaked == []


ADMIN = Scope(admin=True)


def bearer(credential: str) -> dict[str, str]:
    return {"authorization": f"Bearer {credential}"}


def admin_headers() -> dict[str, str]:
    return bearer(token("root", admin=True))


async def secured(make_server: ServerFactory, **security: Any) -> Served:
    return await make_server(security={**AUTH, **security})


async def publish(served: Served, stream: str, credential: str, n: int = 1) -> httpx.Response:
    return await served.http.post(
        f"/api/streams/{stream}/events", json=status(n), headers=bearer(credential)
    )


async def denial_status(url: str, headers: dict[str, str] | None = None) -> int:
    """The HTTP status a WebSocket upgrade is refused with."""
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, additional_headers=headers or {}):
            pass
    return refused.value.response.status_code


@contextlib.asynccontextmanager
async def ws_peer(
    served: Served, query: str = "", headers: dict[str, str] | None = None
) -> AsyncIterator[Peer]:
    async with connect(served.ws_url + query, additional_headers=headers or {}) as ws:
        yield Peer(ws)


# -- credentials over HTTP ------------------------------------------------------------------

ROUTES = [
    ("GET", "/api/streams"),
    ("POST", "/api/streams"),
    ("GET", "/api/streams/metrics"),
    ("GET", "/api/streams/wf-1"),
    ("DELETE", "/api/streams/wf-1"),
    ("DELETE", "/api/streams/wf-1?purge=true"),
    ("POST", "/api/streams/wf-1/events"),
    ("GET", "/api/streams/wf-1/events"),
    ("GET", "/api/streams/wf-1/poll?timeout=0"),
    ("GET", "/api/streams/wf-1/history"),
    ("GET", "/api/streams/wf-1/clients"),
    ("DELETE", "/api/streams/wf-1/clients/cl_x"),
    ("POST", "/api/streams/wf-1/replay/cl_x"),
    ("GET", "/api/streams/wf-1/screenshots/scr_x"),
    ("GET", "/api/streams/wf-1/stats"),
    ("GET", "/api/analytics/events?start=2026-01-01T00:00:00Z&end=2026-01-02T00:00:00Z"),
    ("GET", "/api/analytics/clients?start=2026-01-01T00:00:00Z&end=2026-01-02T00:00:00Z"),
    ("POST", "/api/auth/tickets"),
    ("GET", "/metrics"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_every_route_needs_a_credential(
    make_server: ServerFactory, method: str, path: str
) -> None:
    served = await secured(make_server)
    # The stream does not exist: 401 still comes first, so nobody can probe for streams.
    response = await served.http.request(method, path, json={})
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"]["code"] == "UNAUTHORIZED"


async def test_health_and_readiness_stay_open(make_server: ServerFactory) -> None:
    served = await secured(make_server)
    assert (await served.http.get("/healthz")).status_code == 200
    assert (await served.http.get("/readyz")).status_code == 200


async def test_a_valid_token_is_let_in(make_server: ServerFactory) -> None:
    served = await secured(make_server)
    response = await publish(served, "wf-1", token(publish=("wf-*",)))
    assert response.status_code == 201, response.text
    history = await served.http.get("/api/streams/wf-1/history", headers=bearer(token()))
    assert history.json()["total"] == 1


async def test_a_forged_signature_is_refused(make_server: ServerFactory) -> None:
    served = await secured(make_server)
    forged = mint_token("another-secret-" + "x" * 40, "alice", ADMIN, 600)
    SECRETS.add(forged)
    response = await served.http.get("/api/streams", headers=bearer(forged))
    assert response.status_code == 401
    # The answer does not say what was wrong with it.
    assert "signature" not in response.text.lower()


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
async def test_alg_none_is_refused(make_server: ServerFactory, alg: str) -> None:
    served = await secured(make_server)
    header = _b64({"alg": alg, "typ": "JWT"})
    claims = _b64({"sub": "alice", "exp": int(time.time()) + 600, "scope": {"admin": True}})
    for unsigned in (f"{header}.{claims}.", f"{header}.{claims}.c2ln"):
        response = await served.http.get("/api/streams", headers=bearer(unsigned))
        assert response.status_code == 401


async def test_an_expired_token_is_refused(make_server: ServerFactory) -> None:
    served = await secured(make_server)
    claims = {"sub": "alice", "exp": int(time.time()) - 120, "scope": {"admin": True}}
    expired = jwt.encode(claims, SECRET, algorithm="HS256")
    assert (await served.http.get("/api/streams", headers=bearer(expired))).status_code == 401


async def test_a_token_without_exp_is_refused(make_server: ServerFactory) -> None:
    served = await secured(make_server)
    forever = jwt.encode({"sub": "alice", "scope": {"admin": True}}, SECRET, algorithm="HS256")
    assert (await served.http.get("/api/streams", headers=bearer(forever))).status_code == 401


async def test_other_schemes_and_garbage_are_refused(make_server: ServerFactory) -> None:
    served = await secured(make_server)
    for header in (f"Basic {token()}", "Bearer", "Bearer x y", "Bearer " + "x" * 9000, token()):
        response = await served.http.get("/api/streams", headers={"authorization": header})
        assert response.status_code == 401, header


async def test_an_api_key_acts_with_its_scope(make_server: ServerFactory) -> None:
    served = await secured(make_server)
    assert (await publish(served, "wf-1", API_KEY)).status_code == 201
    # Publish-only: it may not read history...
    history = await served.http.get("/api/streams/wf-1/history", headers=bearer(API_KEY))
    assert history.status_code == 403
    # ...and a key that is almost right is no key.
    assert (await publish(served, "wf-1", API_KEY + "x")).status_code == 401


async def test_a_subscribe_only_token_may_not_publish(make_server: ServerFactory) -> None:
    served = await secured(make_server)
    response = await publish(served, "wf-1", token(subscribe=("*",)))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "FORBIDDEN"
    # A refused publish stores nothing (not even a stream).
    assert served.hub.streams.find("wf-1") is None


async def test_a_refusal_says_what_was_refused(make_server: ServerFactory) -> None:
    """A 403 names the action and what it needs, never which other check passed."""
    served = await secured(make_server)
    viewer = bearer(token(subscribe=("wf-*",)))
    cases = [
        (
            "POST",
            "/api/streams",
            {"workflowSessionId": "wf-1"},
            "not let it create or reopen 'wf-1'",
        ),
        ("DELETE", "/api/streams/wf-1", None, "does not let it close 'wf-1'"),
        ("DELETE", "/api/streams/wf-1?purge=true", None, "purge=true needs an admin credential"),
        ("POST", "/api/streams/x-1/events", status(1), "does not let it publish into 'x-1'"),
        ("GET", "/api/streams/x-1/history", None, "does not let it watch 'x-1'"),
    ]
    for method, path, body, message in cases:
        answer = await served.http.request(method, path, json=body, headers=viewer)
        assert answer.status_code == 403, path
        assert message in answer.json()["error"]["message"], answer.text


async def test_a_prefix_scope_stops_at_its_prefix(make_server: ServerFactory) -> None:
    served = await secured(make_server)
    writer = token("w", publish=("*",))
    for stream in ("tenant-a:1", "tenant-b:1", "TENANT-A:2"):
        assert (await publish(served, stream, writer)).status_code == 201
    reader = bearer(token("a", subscribe=("tenant-a:*",)))
    assert (await served.http.get("/api/streams/tenant-a:1/history", headers=reader)).is_success
    for stream in ("tenant-b:1", "TENANT-A:2"):
        response = await served.http.get(f"/api/streams/{stream}/history", headers=reader)
        assert response.status_code == 403, stream
    # The stream list shows only what the caller may see.
    listed = await served.http.get("/api/streams", headers=reader)
    assert [s["linkedWorkflowSessionId"] for s in listed.json()] == ["tenant-a:1"]


async def test_a_stream_id_is_judged_by_its_workflow_session(make_server: ServerFactory) -> None:
    served = await secured(make_server)
    await publish(served, "tenant-b:1", token("w", publish=("*",)))
    stream_id = served.hub.streams.resolve("tenant-b:1").id
    reader = bearer(token("a", subscribe=("tenant-a:*", f"{stream_id}*")))
    for path in ("history", "stats"):
        response = await served.http.get(f"/api/streams/{stream_id}/{path}", headers=reader)
        assert response.status_code == 403, path
    response = await served.http.get(f"/api/streams/{stream_id}/events", headers=reader)
    assert response.status_code == 403


async def test_admin_routes_need_admin(make_server: ServerFactory) -> None:
    served = await secured(make_server)
    await publish(served, "wf-1", token(publish=("*",)))
    everyone = bearer(token(subscribe=("*",), publish=("*",)))
    for method, path in [
        ("DELETE", "/api/streams/wf-1?purge=true"),
        ("GET", "/api/streams/metrics"),
        ("GET", "/api/streams/wf-1/clients"),
        ("DELETE", "/api/streams/wf-1/clients/cl_x"),
        ("POST", "/api/streams/wf-1/replay/cl_x"),
        ("GET", "/api/analytics/events?start=2026-01-01T00:00:00Z&end=2026-01-02T00:00:00Z"),
        ("GET", "/metrics"),
    ]:
        response = await served.http.request(method, path, headers=everyone, json={})
        assert response.status_code == 403, (method, path)
    assert served.hub.streams.resolve("wf-1").is_open  # the refused purge did nothing
    admin = await served.http.delete("/api/streams/wf-1?purge=true", headers=admin_headers())
    assert admin.status_code == 204


async def test_a_producer_runs_its_own_streams_lifecycle(make_server: ServerFactory) -> None:
    """Publish scope creates, closes and reopens the producer's streams (by either id),
    and no other's; purging stays the admin's."""
    served = await secured(make_server)
    producer = bearer(token("p", subscribe=(), publish=("tenant-a:*",)))
    created = await served.http.post(
        "/api/streams", json={"workflowSessionId": "tenant-a:1"}, headers=producer
    )
    assert created.status_code == 201, created.text
    stream_id = created.json()["streamId"]
    assert (
        await served.http.delete(f"/api/streams/{stream_id}", headers=producer)
    ).status_code == 204
    assert served.hub.streams.resolve("tenant-a:1").status.value == "CLOSED"
    reopened = await served.http.post(
        "/api/streams", json={"workflowSessionId": "tenant-a:1"}, headers=producer
    )
    assert reopened.status_code == 200 and reopened.json()["status"] == "ACTIVE"
    assert reopened.json()["streamId"] == stream_id
    assert (
        await served.http.delete("/api/streams/tenant-a:1", headers=producer)
    ).status_code == 204
    purge = await served.http.delete("/api/streams/tenant-a:1?purge=true", headers=producer)
    assert purge.status_code == 403
    assert served.hub.streams.find("tenant-a:1") is not None
    # Another tenant's stream: neither made nor closed, by either id.
    other = await served.http.post(
        "/api/streams", json={"workflowSessionId": "tenant-b:1"}, headers=producer
    )
    assert other.status_code == 403 and served.hub.streams.find("tenant-b:1") is None
    await publish(served, "tenant-b:1", token("w", publish=("*",)))
    other_id = served.hub.streams.resolve("tenant-b:1").id
    for ref in ("tenant-b:1", other_id):
        assert (
            await served.http.delete(f"/api/streams/{ref}", headers=producer)
        ).status_code == 403
    assert served.hub.streams.resolve("tenant-b:1").is_open
    # A watcher (subscribe only) does neither.
    watcher = bearer(token("v", subscribe=("*",)))
    body = {"workflowSessionId": "tenant-a:2"}
    assert (await served.http.post("/api/streams", json=body, headers=watcher)).status_code == 403
    assert (await served.http.delete("/api/streams/tenant-b:1", headers=watcher)).status_code == 403


async def test_a_producer_creating_a_watched_stream_sees_no_clients(
    make_server: ServerFactory,
) -> None:
    """Creating is idempotent: asked again for an open stream, the answer describes it
    as a producer may see it, without who watches it."""
    served = await secured(make_server)
    await publish(served, "wf-1", token("w", publish=("*",)))
    async with ws_peer(served, "?streamId=wf-1", bearer(token())) as p:
        await p.expect("connection_ack")
        await p.expect("subscribed")
        again = await served.http.post(
            "/api/streams",
            json={"workflowSessionId": "wf-1"},
            headers=bearer(token("p", subscribe=(), publish=("wf-*",))),
        )
        watched = await served.http.post(
            "/api/streams", json={"workflowSessionId": "wf-1"}, headers=admin_headers()
        )
    assert again.status_code == 200 and again.json()["clients"] == []
    assert len(watched.json()["clients"]) == 1


async def test_the_credential_comes_before_the_body_and_the_stream(
    make_server: ServerFactory,
) -> None:
    """Without a credential: 401 for a body of any kind and a stream that does not exist;
    with one, the body is judged (415, 422) and the scope (403)."""
    served = await secured(make_server)
    producer = bearer(token("p", subscribe=(), publish=("wf-*",)))
    for headers, expected in [({}, (401, 401, 401)), (producer, (415, 422, 404))]:
        wrong_type = await served.http.post(
            "/api/streams", content=b"{}", headers={**headers, "content-type": "text/plain"}
        )
        invalid = await served.http.post("/api/streams", json={"config": 7}, headers=headers)
        missing = await served.http.delete("/api/streams/str_nope", headers=headers)
        assert (wrong_type.status_code, invalid.status_code, missing.status_code) == expected


async def test_metrics_public_opens_metrics_only(make_server: ServerFactory) -> None:
    served = await secured(make_server, metricsPublic=True)
    assert (await served.http.get("/metrics")).status_code == 200
    assert (await served.http.get("/api/streams/metrics")).status_code == 401


# -- tickets -------------------------------------------------------------------------------


async def ticket_for(served: Served, credential: str) -> str:
    response = await served.http.post("/api/auth/tickets", headers=bearer(credential))
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["expiresIn"] == 30
    ticket: str = body["ticket"]
    SECRETS.add(ticket)
    return ticket


async def test_a_ticket_opens_one_event_source(make_server: ServerFactory) -> None:
    served = await secured(make_server)
    await publish(served, "wf-1", token(publish=("*",)))
    ticket = await ticket_for(served, token(subscribe=("wf-1",)))
    path = f"/api/streams/wf-1/events?since=0&ticket={ticket}"
    async with sse_stream(served, path) as reader:
        assert reader.response.status_code == 200
        assert (await reader.events(1))[0].json()["seq"] == 1
    # Used once: used up.
    again = await served.http.get(path)
    assert again.status_code == 401


async def test_a_ticket_carries_its_scope(make_server: ServerFactory) -> None:
    served = await secured(make_server)
    await publish(served, "wf-2", token(publish=("*",)))
    ticket = await ticket_for(served, token(subscribe=("wf-1",)))
    response = await served.http.get(f"/api/streams/wf-2/poll?timeout=0&ticket={ticket}")
    assert response.status_code == 403


async def test_a_ticket_expires(make_server: ServerFactory) -> None:
    served = await secured(make_server)
    app = served.server.config.app
    assert isinstance(app, FastAPI)
    now = [1000.0]
    app.state.gate.tickets.store = LocalOnceStore(clock=lambda: now[0])
    issued = await served.http.post("/api/auth/tickets", headers=bearer(token()))
    ticket = issued.json()["ticket"]
    SECRETS.add(ticket)
    now[0] += TICKET_TTL_SECONDS + 0.001
    response = await served.http.get(f"/api/streams/wf-1/poll?timeout=0&ticket={ticket}")
    assert response.status_code == 401


async def test_a_ticket_is_not_a_credential_for_rest(make_server: ServerFactory) -> None:
    served = await secured(make_server)
    ticket = await ticket_for(served, token())
    response = await served.http.get(f"/api/streams/wf-1/history?ticket={ticket}")
    assert response.status_code == 401


async def test_a_long_lived_token_is_not_taken_from_a_url(make_server: ServerFactory) -> None:
    served = await secured(make_server)
    await publish(served, "wf-1", token(publish=("*",)))
    response = await served.http.get(f"/api/streams/wf-1/poll?timeout=0&ticket={token()}")
    assert response.status_code == 401
    assert await denial_status(f"{served.ws_url}?ticket={token()}") == 401


# -- WebSocket -----------------------------------------------------------------------------


async def test_websocket_with_a_header(make_server: ServerFactory) -> None:
    served = await secured(make_server)
    await publish(served, "wf-1", token(publish=("*",)))
    async with ws_peer(served, "?streamId=wf-1&since=0", bearer(token())) as p:
        ack = await p.expect("connection_ack")
        assert "expiresAt" in ack["metadata"]
        subscribed = await p.expect("subscribed")
        assert "expiresAt" in subscribed["metadata"]
        assert (await p.expect("event"))["event"]["seq"] == 1


async def test_websocket_refused_before_the_upgrade(make_server: ServerFactory) -> None:
    served = await secured(make_server)
    assert await denial_status(served.ws_url, bearer("not-a-token")) == 401
    assert await denial_status(f"{served.ws_url}?ticket=made-up") == 401


async def test_websocket_auth_message(make_server: ServerFactory) -> None:
    served = await secured(make_server)
    await publish(served, "wf-1", token(publish=("*",)))
    async with ws_peer(served) as p:
        # Before the credential only ping and auth are answered.
        await p.send({"type": "subscribe", "streamId": "wf-1", "requestId": 7})
        refused = await p.expect("error")
        assert refused["error"]["code"] == "UNAUTHORIZED"
        assert refused["metadata"]["requestId"] == 7
        await p.send({"type": "ping"})
        await p.expect("pong")
        await p.send({"type": "auth", "token": token()})
        assert "expiresAt" in (await p.expect("connection_ack"))["metadata"]
        await p.send({"type": "subscribe", "streamId": "wf-1", "since": 0})
        await p.expect("subscribed")
        assert (await p.expect("event"))["event"]["seq"] == 1


async def test_websocket_bad_auth_message_closes_4001(make_server: ServerFactory) -> None:
    served = await secured(make_server)
    async with ws_peer(served) as p:
        await p.send({"type": "auth", "token": token()[:-2] + "xx"})
        assert await p.closed_with() == 4001


async def test_websocket_without_auth_in_time_closes_4001(
    make_server: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(websocket_module, "AUTH_TIMEOUT", 0.3)  # 10 s in production
    served = await secured(make_server)
    async with ws_peer(served) as p:
        assert await p.closed_with() == 4001
    assert not len(served.hub.clients)


async def test_websocket_ticket(make_server: ServerFactory) -> None:
    served = await secured(make_server)
    await publish(served, "wf-1", token(publish=("*",)))
    ticket = await ticket_for(served, token(subscribe=("wf-1",)))
    async with ws_peer(served, f"?ticket={ticket}&streamId=wf-1&since=0") as p:
        await p.expect("connection_ack")
        await p.expect("subscribed")
    assert await denial_status(f"{served.ws_url}?ticket={ticket}") == 401


async def test_websocket_subscribe_outside_the_scope(make_server: ServerFactory) -> None:
    served = await secured(make_server)
    writer = token("w", publish=("*",))
    await publish(served, "tenant-a:1", writer)
    await publish(served, "tenant-b:1", writer)
    reader = bearer(token(subscribe=("tenant-a:*",)))
    async with ws_peer(served, "", reader) as p:
        await p.expect("connection_ack")
        # Refused per stream; the connection and its other subscriptions stay.
        await p.send({"type": "subscribe", "streamId": "tenant-b:1", "requestId": 1})
        assert (await p.expect("error"))["error"]["code"] == "FORBIDDEN"
        await p.send({"type": "subscribe", "streamId": "tenant-a:1", "requestId": 2})
        await p.expect("subscribed")
    async with ws_peer(served, "?streamId=tenant-b:1", reader) as p:
        await p.expect("connection_ack")
        assert await p.closed_with() == 4003
    # A reference long enough that the message naming it cannot be a close reason whole:
    # the code still arrives, with the reason cut to fit the frame.
    long_ref = "tenant-b:" + "é" * 100
    async with ws_peer(served, f"?streamId={long_ref}", reader) as p:
        await p.expect("connection_ack")
        assert await p.closed_with() == 4003
        assert p.ws.close_reason is not None
        assert p.ws.close_reason.startswith("this credential's scope does not let it watch")


async def test_websocket_closes_4001_after_expiry_and_grace(
    make_server: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(websocket_module, "EXPIRY_GRACE", 0.2)  # 25 s in production
    served = await secured(make_server, jwt={"secret": SECRET, "leewaySeconds": 0})
    async with ws_peer(served, "", bearer(token(ttl=2))) as p:
        await p.expect("connection_ack")
        code = await asyncio.wait_for(_closed(p), 10)
    assert code == 4001


async def test_websocket_refresh_keeps_it_open(
    make_server: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(websocket_module, "EXPIRY_GRACE", 0.2)
    served = await secured(make_server, jwt={"secret": SECRET, "leewaySeconds": 0})
    async with ws_peer(served, "", bearer(token(ttl=2))) as p:
        await p.expect("connection_ack")
        await p.send({"type": "auth", "token": token(ttl=600), "requestId": "r"})
        ack = await p.expect("auth_ack")
        assert ack["metadata"]["requestId"] == "r"
        # Past the first token's expiry and grace: a timer it set would have closed the
        # connection by now. Seeing that it did not takes that long.
        await asyncio.sleep(3)
        await p.send({"type": "ping"})
        await p.expect("pong")


async def test_websocket_refresh_with_a_narrower_scope(make_server: ServerFactory) -> None:
    served = await secured(make_server)
    writer = token("w", publish=("*",))
    for stream in ("wf-1", "wf-2"):
        await publish(served, stream, writer)
    async with ws_peer(served, "", bearer(token(subscribe=("wf-*",)))) as p:
        await p.expect("connection_ack")
        for stream in ("wf-1", "wf-2"):
            await p.send({"type": "subscribe", "streamId": stream})
            await p.expect("subscribed")
        await p.send({"type": "auth", "token": token(subscribe=("wf-1",))})
        await p.expect("auth_ack")
        ended = await p.expect("error")
        assert ended["error"]["code"] == "FORBIDDEN"
        assert ended["metadata"]["streamId"] == served.hub.streams.resolve("wf-2").id
        await publish(served, "wf-2", writer, 2)
        await publish(served, "wf-1", writer, 3)
        event = await p.expect("event")  # only wf-1's
        assert event["event"]["streamId"] == served.hub.streams.resolve("wf-1").id


async def test_websocket_refresh_for_another_subject_closes(make_server: ServerFactory) -> None:
    served = await secured(make_server)
    async with ws_peer(served, "", bearer(token("alice"))) as p:
        await p.expect("connection_ack")
        await p.send({"type": "auth", "token": token("mallory", admin=True)})
        assert await p.closed_with() == 4001


async def _closed(p: Peer) -> int:
    with contextlib.suppress(ConnectionClosed):
        while True:
            await p.ws.recv()
    assert p.ws.close_code is not None
    return p.ws.close_code


# -- SSE and polling expiry ----------------------------------------------------------------


async def test_sse_ends_with_token_expired(make_server: ServerFactory) -> None:
    served = await secured(make_server, jwt={"secret": SECRET, "leewaySeconds": 0})
    await publish(served, "wf-1", token(publish=("*",)))
    async with sse_stream(served, "/api/streams/wf-1/events", bearer(token(ttl=2))) as reader:
        while True:
            message = await reader.next(10)
            if message.event == "error":
                break
    assert message.json()["code"] == "TOKEN_EXPIRED"
    assert not len(served.hub.clients)


async def test_a_poll_never_waits_past_the_credential(make_server: ServerFactory) -> None:
    served = await secured(make_server, jwt={"secret": SECRET, "leewaySeconds": 0})
    await publish(served, "wf-1", token(publish=("*",)))
    request = served.http.get(
        "/api/streams/wf-1/poll?since=1&timeout=60", headers=bearer(token(ttl=2)), timeout=30
    )
    response = await asyncio.wait_for(request, 15)  # the poll asked for 60 s
    assert response.status_code == 200
    assert response.json()["events"] == []


async def test_a_polling_client_id_is_its_subjects_own(make_server: ServerFactory) -> None:
    """A poll naming another subject's clientId gets a client of its own: it neither
    takes the events waiting for the other's next poll nor moves its position. The
    subject's own polls, with a token or a ticket, keep their client."""
    served = await secured(make_server)
    writer = token("w", publish=("*",))
    alice, bob = bearer(token("alice")), bearer(token("bob"))
    await publish(served, "wf-1", writer, 1)

    async def poll(headers: dict[str, str], query: str) -> dict[str, Any]:
        response = await served.http.get(f"/api/streams/wf-1/poll?{query}", headers=headers)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    first = await poll(alice, "since=0&timeout=0")
    mine = first["clientId"]
    await publish(served, "wf-1", writer, 2)  # waits in alice's subscription
    assert await eventually(lambda: served.hub.clients.get(mine).subscriptions)
    waiting = next(iter(served.hub.clients.get(mine).subscriptions.values()))
    assert await eventually(lambda: waiting.pending == 1), "seq 2 did not reach alice's client"
    taken = await poll(bob, f"since=1&timeout=0&clientId={mine}")
    assert taken["clientId"] != mine
    assert served.hub.clients.get(taken["clientId"]).subject == "sub:bob"
    assert waiting.pending == 1 and waiting.resume_position == 1  # alice's, untouched
    again = await poll(alice, f"since=1&timeout=0&clientId={mine}")
    assert again["clientId"] == mine and [e["seq"] for e in again["events"]] == [2]
    ticket = await ticket_for(served, token("alice"))
    by_ticket = await poll({}, f"since=2&timeout=0&clientId={mine}&ticket={ticket}")
    assert by_ticket["clientId"] == mine


# -- origins -------------------------------------------------------------------------------

FOREIGN = [
    "https://evil.example",
    "null",
    "https://app.example.evil.example",
    "http://app.example",  # another scheme
    "https://app.example:444",
]


@pytest.mark.parametrize("origin", FOREIGN)
async def test_foreign_origins_are_refused(make_server: ServerFactory, origin: str) -> None:
    served = await secured(make_server)
    await publish(served, "wf-1", token(publish=("*",)))
    headers = {**bearer(token()), "origin": origin}
    assert await denial_status(served.ws_url, headers) == 403
    response = await served.http.get("/api/streams/wf-1/events", headers=headers)
    assert response.status_code == 403


async def test_allowed_and_own_origins_pass(make_server: ServerFactory) -> None:
    served = await secured(make_server)
    await publish(served, "wf-1", token(publish=("*",)))
    own = served.base_url
    for origin in ("https://app.example", "HTTPS://APP.EXAMPLE", own):
        headers = {**bearer(token()), "origin": origin}
        async with ws_peer(served, "", headers) as p:
            await p.expect("connection_ack")
        async with sse_stream(served, "/api/streams/wf-1/events", headers) as reader:
            assert reader.response.status_code == 200, origin


async def test_the_host_header_does_not_make_an_origin_the_hubs_own(
    make_server: ServerFactory,
) -> None:
    """DNS rebinding: a page at rebind.attacker.test:PORT, its name now pointing at the
    hub, sends a matching Host and Origin. The hub's own origin comes from its
    configuration and the port it listens on, never from Host: refused."""
    served = await make_server()
    await served.http.post("/api/streams/wf-1/events", json=status(1))
    port = served.base_url.rsplit(":", 1)[1]
    rebound = {
        "host": f"rebind.attacker.test:{port}",
        "origin": f"http://rebind.attacker.test:{port}",
    }
    assert await denial_status(served.ws_url, rebound) == 403
    response = await served.http.get("/api/streams/wf-1/events", headers=rebound)
    assert response.status_code == 403
    # The same page on a name the hub was told is its own (server.publicUrl) passes.
    named = await make_server(server={"publicUrl": f"http://rebind.attacker.test:{port}"})
    await named.http.post("/api/streams/wf-1/events", json=status(1))
    async with sse_stream(named, "/api/streams/wf-1/events", rebound) as reader:
        assert reader.response.status_code == 200


async def test_origins_are_checked_without_authentication_too(
    make_server: ServerFactory,
) -> None:
    served = await make_server()
    assert await denial_status(served.ws_url, {"origin": "https://evil.example"}) == 403
    assert await denial_status(served.ws_url, {"origin": "null"}) == 403


# -- rate limits ---------------------------------------------------------------------------


async def test_requests_per_minute(make_server: ServerFactory) -> None:
    await clear_of_a_minute_edge()
    served = await secured(make_server, rateLimiting={"maxRequestsPerMinute": 5})
    headers = bearer(token())
    statuses = [
        (await served.http.get("/api/streams", headers=headers)).status_code for _ in range(6)
    ]
    assert statuses == [200] * 5 + [429]
    refused = await served.http.get("/api/streams", headers=headers)
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error"]["code"] == "RATE_LIMITED"
    # Another subject has its own budget.
    assert (await served.http.get("/api/streams", headers=bearer(token("bob")))).is_success


async def test_no_bypass_through_new_connections(make_server: ServerFactory) -> None:
    await clear_of_a_minute_edge()
    served = await secured(make_server, rateLimiting={"maxRequestsPerMinute": 3})
    headers = bearer(token())
    statuses = []
    for _ in range(5):
        async with httpx.AsyncClient(base_url=served.base_url) as fresh:
            statuses.append((await fresh.get("/api/streams", headers=headers)).status_code)
    assert statuses == [200, 200, 200, 429, 429]


async def test_no_bypass_through_x_forwarded_for(make_server: ServerFactory) -> None:
    await clear_of_a_minute_edge()
    served = await make_server(security={"rateLimiting": {"maxRequestsPerMinute": 3}})
    statuses = [
        (
            await served.http.get("/api/streams", headers={"x-forwarded-for": f"10.0.0.{i}"})
        ).status_code
        for i in range(5)
    ]
    assert statuses == [200, 200, 200, 429, 429]


async def test_trusted_proxies_name_the_client(make_server: ServerFactory) -> None:
    await clear_of_a_minute_edge()
    served = await make_server(
        server={"trustedProxies": ["127.0.0.1"]},
        security={"rateLimiting": {"maxRequestsPerMinute": 2}},
    )
    for client in ("10.0.0.1", "10.0.0.2"):
        forwarded = {"x-forwarded-for": client}
        first = [
            (await served.http.get("/api/streams", headers=forwarded)).status_code for _ in range(3)
        ]
        assert first == [200, 200, 429], client


async def test_failed_credentials_cost_the_address(make_server: ServerFactory) -> None:
    await clear_of_a_minute_edge()
    served = await secured(make_server, rateLimiting={"maxRequestsPerMinute": 3})
    statuses = [
        (await served.http.get("/api/streams", headers=bearer(f"guess-{i}"))).status_code
        for i in range(5)
    ]
    assert statuses == [401, 401, 401, 429, 429]


async def test_events_per_second_per_stream(make_server: ServerFactory) -> None:
    # A stream may burst up to its bufferSize; 3 here, so that 3 events per second is all.
    served = await make_server(
        security={**AUTH, "rateLimiting": {"maxEventsPerSecond": 3}},
        defaultStreamConfig={"bufferSize": 3},
    )
    writer = token(publish=("*",))
    statuses = [(await publish(served, "wf-1", writer, i)).status_code for i in range(5)]
    assert statuses[:3] == [201] * 3
    assert 429 in statuses[3:]
    history = await served.http.get("/api/streams/wf-1/history", headers=bearer(token()))
    assert history.json()["total"] == statuses.count(201)
    # Another stream has its own budget.
    assert (await publish(served, "wf-2", writer)).status_code == 201


async def test_a_batch_counts_each_event(make_server: ServerFactory) -> None:
    served = await make_server(
        security={**AUTH, "rateLimiting": {"maxEventsPerSecond": 4}},
        defaultStreamConfig={"bufferSize": 4},
    )
    body = {"events": [status(i) for i in range(3)]}
    headers = bearer(token(publish=("*",)))
    first = await served.http.post("/api/streams/wf-1/events", json=body, headers=headers)
    assert first.status_code == 201
    second = await served.http.post("/api/streams/wf-1/events", json=body, headers=headers)
    assert second.status_code == 429
    assert int(second.headers["retry-after"]) >= 1


async def test_websocket_messages_are_rate_limited(make_server: ServerFactory) -> None:
    await clear_of_a_minute_edge()
    served = await secured(make_server, rateLimiting={"maxRequestsPerMinute": 4})
    async with ws_peer(served, "", bearer(token())) as p:  # the upgrade is one request
        await p.expect("connection_ack")
        for _ in range(3):
            await p.send({"type": "ping"})
            await p.expect("pong")
        await p.send({"type": "ping"})
        refused = await p.expect("error")
        assert refused["error"]["code"] == "RATE_LIMITED"
        assert refused["error"]["details"]["retryAfter"] >= 1
        for _ in range(websocket_module.RATE_LIMITED_MESSAGES_BEFORE_CLOSE + 1):
            await p.send({"type": "ping"})
        assert await p.closed_with() == 4029


async def test_connections_per_subject(make_server: ServerFactory) -> None:
    served = await secured(make_server, rateLimiting={"maxConnectionsPerSubject": 2})
    await publish(served, "wf-1", token(publish=("*",)))
    headers = bearer(token())
    async with ws_peer(served, "", headers) as a, ws_peer(served, "", headers) as b:
        await a.expect("connection_ack")
        await b.expect("connection_ack")
        assert await denial_status(served.ws_url, headers) == 429
        response = await served.http.get("/api/streams/wf-1/events", headers=headers)
        assert response.status_code == 429
        # Another subject is not held back by this one.
        async with ws_peer(served, "", bearer(token("bob"))) as c:
            await c.expect("connection_ack")
    # Closed connections give their places back.
    async with ws_peer(served, "", headers) as again:
        await again.expect("connection_ack")


# -- input limits --------------------------------------------------------------------------


async def test_oversized_websocket_message_closes_1009(make_server: ServerFactory) -> None:
    served = await make_server(limits={"maxMessageBytes": 4096})
    async with ws_peer(served) as p:
        await p.expect("connection_ack")
        await p.send(orjson.dumps({"type": "ping", "pad": "x" * 5000}).decode())
        assert await p.closed_with() == 1009


async def test_oversized_body_is_413(make_server: ServerFactory) -> None:
    served = await make_server(
        limits={"maxMessageBytes": 4096, "maxScreenshotBytes": 1024, "maxBodyBytes": 4096}
    )
    body = {"type": "STATUS", "data": {"statusType": "a", "status": "x" * 10_000}}
    response = await served.http.post("/api/streams/wf-1/events", json=body)
    assert response.status_code == 413
    assert served.hub.streams.find("wf-1") is None


def _b64(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(value)).rstrip(b"=").decode()


# -- public keys: PEM in config, and a JWKS URL ----------------------------------------------


def rsa_pair() -> tuple[rsa.RSAPrivateKey, str]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, pem.decode()


def rs256(private: rsa.RSAPrivateKey, kid: str | None = None, **claims: Any) -> str:
    payload = {"sub": "alice", "exp": int(time.time()) + 600, "scope": {"admin": True}}
    signed = jwt.encode(
        {**payload, **claims}, private, algorithm="RS256", headers={"kid": kid} if kid else None
    )
    SECRETS.add(signed)
    return signed


async def test_rs256_public_key_and_the_hs256_confusion(make_server: ServerFactory) -> None:
    private, public_pem = rsa_pair()
    served = await make_server(
        security={
            "authenticationRequired": True,
            "jwt": {"algorithm": "RS256", "publicKey": public_pem, "audience": "hub"},
        }
    )
    good = rs256(private, aud="hub")
    assert (await served.http.get("/api/streams", headers=bearer(good))).status_code == 200
    for bad in (rs256(private), rs256(private, aud="other")):  # missing or wrong audience
        assert (await served.http.get("/api/streams", headers=bearer(bad))).status_code == 401
    # HS256 with the public key as its secret: the configured algorithm is RS256.
    header = _b64({"alg": "HS256", "typ": "JWT"})
    body = _b64({"sub": "alice", "exp": int(time.time()) + 600, "aud": "hub"})
    signature = hmac.new(public_pem.encode(), f"{header}.{body}".encode(), "sha256").digest()
    confused = f"{header}.{body}." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode()
    assert (await served.http.get("/api/streams", headers=bearer(confused))).status_code == 401


@contextlib.contextmanager
def jwks_server(document: dict[str, Any]) -> Iterator[tuple[str, list[int]]]:
    """A real HTTP server publishing ``document`` as a JWKS; yields its URL and a list
    that counts the fetches."""
    fetches: list[int] = []
    body = orjson.dumps(document)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            fetches.append(1)
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json", fetches
    finally:
        server.shutdown()
        server.server_close()


async def test_jwks_url_keys_are_fetched_and_cached(make_server: ServerFactory) -> None:
    private, _ = rsa_pair()
    jwk = orjson.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    with jwks_server({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}) as (
        url,
        fetches,
    ):
        served = await make_server(
            security={"authenticationRequired": True, "jwt": {"algorithm": "RS256", "jwksUrl": url}}
        )
        for _ in range(3):
            response = await served.http.get("/api/streams", headers=bearer(rs256(private, "k1")))
            assert response.status_code == 200
        assert len(fetches) == 1  # cached
        other, _ = rsa_pair()
        forged = rs256(other, "k1")
        assert (await served.http.get("/api/streams", headers=bearer(forged))).status_code == 401


async def test_a_stream_may_burst_up_to_its_buffer(make_server: ServerFactory) -> None:
    served = await make_server(
        security={**AUTH, "rateLimiting": {"maxEventsPerSecond": 2}},
        defaultStreamConfig={"bufferSize": 10},
    )
    body = {"events": [status(i) for i in range(10)]}
    headers = bearer(token(publish=("*",)))
    burst = await served.http.post("/api/streams/wf-1/events", json=body, headers=headers)
    assert burst.status_code == 201
    after = await publish(served, "wf-1", token(publish=("*",)))
    assert after.status_code == 429
    # A batch larger than any burst the stream allows could never go: 413, not 429.
    body = {"events": [status(i) for i in range(11)]}
    too_big = await served.http.post("/api/streams/wf-2/events", json=body, headers=headers)
    assert too_big.status_code == 413


# -- defects an adversarial probe found (issue 21) -------------------------------------


@pytest.mark.parametrize("exp", [253_402_300_800, 10**12, "1900000000", 1.5e300])
async def test_a_token_whose_exp_no_date_holds_is_refused(
    make_server: ServerFactory, exp: Any
) -> None:
    """``exp`` past the year 10000, or not a number, is a bad credential (401), not a 500,
    over HTTP and as a WebSocket's auth message (close 4001, with its code)."""
    served = await secured(make_server)
    forged = jwt.encode({"sub": "x", "exp": exp, "scope": {"admin": True}}, SECRET)
    SECRETS.add(forged)
    answer = await served.http.get("/api/streams", headers=bearer(forged))
    assert answer.status_code == 401, answer.text
    async with ws_peer(served) as p:
        await p.send({"type": "auth", "token": forged})
        assert await p.closed_with() == 4001


async def test_a_ticket_does_not_outlive_its_credential(make_server: ServerFactory) -> None:
    """A token inside its leeway buys a ticket; once the hub would refuse the token
    itself, the ticket is refused too."""
    served = await secured(make_server)
    app = served.server.config.app
    assert isinstance(app, FastAPI)
    gate = app.state.gate
    now = [time.time()]
    gate.tickets = Tickets(gate.tickets.store, leeway_seconds=30, clock=lambda: now[0])
    late = token(ttl=-20)  # expired 20 s ago: still accepted, within the 30 s leeway
    issued = await served.http.post("/api/auth/tickets", headers=bearer(late))
    assert issued.status_code == 201, issued.text
    ticket = issued.json()["ticket"]
    SECRETS.add(ticket)
    now[0] += 11  # past exp + leeway, well within the ticket's own 30 s
    answer = await served.http.get(f"/api/streams/wf-1/poll?timeout=0&ticket={ticket}")
    assert answer.status_code == 401


async def test_after_failed_guesses_the_right_key_is_refused_too(
    make_server: ServerFactory,
) -> None:
    """Once failed credentials spent the address's requests, every credential from it
    gets 429 before it is checked: a guesser cannot tell a hit."""
    await clear_of_a_minute_edge()
    served = await secured(make_server, rateLimiting={"maxRequestsPerMinute": 3})
    for i in range(3):
        wrong = await served.http.get("/api/streams", headers=bearer(f"guess-{i}"))
        assert wrong.status_code == 401
    right = await served.http.get("/api/streams", headers=bearer(token()))
    assert right.status_code == 429, right.text
    async with ws_peer(served) as p:  # the WebSocket auth message is refused the same way
        await p.send({"type": "auth", "token": token()})
        assert await p.closed_with() == 4029


@pytest.mark.parametrize(("required", "cache"), [(True, "private"), (False, "public")])
async def test_screenshots_are_cached_by_shared_caches_only_without_credentials(
    make_server: ServerFactory, required: bool, cache: str
) -> None:
    """Behind a caching proxy, one tenant's image must not answer another's request."""
    served = await (secured(make_server) if required else make_server())
    headers = bearer(token(publish=("*",))) if required else {}
    shot = {"type": "SCREENSHOT", "data": {"image": base64.b64encode(PNG).decode()}}
    published = await served.http.post("/api/streams/wf-1/events", json=shot, headers=headers)
    assert published.status_code == 201, published.text
    url = published.json()["events"][0]["data"]["url"]
    answer = await served.http.get(url, headers=headers)
    assert answer.status_code == 200
    assert answer.headers["cache-control"] == f"{cache}, max-age=31536000, immutable"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["content-security-policy"] == "default-src 'none'; sandbox"


async def test_a_producer_sees_its_streams_but_not_who_watches_them(
    make_server: ServerFactory,
) -> None:
    """The stream's description reaches a publish-only credential or a subscriber
    without its clients (ids and filters): who watches is an operator's to know, like
    the client list. The stream list is the subscribers'."""
    served = await secured(make_server)
    producer = bearer(token("p", subscribe=(), publish=("wf-*",)))
    assert (await publish(served, "wf-1", token("p", subscribe=(), publish=("*",)))).is_success
    async with ws_peer(served, "?streamId=wf-1&types=STATUS", bearer(token())) as p:
        await p.expect("connection_ack")
        await p.expect("subscribed")
        mine = (await served.http.get("/api/streams/wf-1", headers=producer)).json()
        listed = (await served.http.get("/api/streams", headers=producer)).json()
        watched = (await served.http.get("/api/streams/wf-1", headers=bearer(token()))).json()
        watchers = (await served.http.get("/api/streams", headers=bearer(token()))).json()
        operator = bearer(token(admin=True))
        seen = (await served.http.get("/api/streams/wf-1", headers=operator)).json()
        client_list = await served.http.get("/api/streams/wf-1/clients", headers=bearer(token()))
        operators_list = await served.http.get("/api/streams/wf-1/clients", headers=operator)
    assert mine["clients"] == [] and mine["linkedWorkflowSessionId"] == "wf-1"
    # The list is for watching: a publish-only credential finds nothing in it.
    assert listed == []
    assert watched["clients"] == [] and [s["clients"] for s in watchers] == [[]]
    assert len(seen["clients"]) == 1
    assert client_list.status_code == 403 and len(operators_list.json()) == 1


async def test_what_stays_open_without_a_credential(make_server: ServerFactory) -> None:
    """Health, the viewer's files and the API's description hold no data: open with
    authentication on, as docs/security.md says; the API itself is not."""
    served = await secured(make_server)
    for path in (
        "/healthz",
        "/readyz",
        "/",
        "/view/wf-1",
        "/viewer/app.js",
        "/favicon.ico",
        "/docs",
        "/openapi.json",
    ):
        assert (await served.http.get(path)).status_code == 200, path
    for path in ("/api/streams", "/api/streams/wf-1", "/metrics"):
        assert (await served.http.get(path)).status_code == 401, path


async def test_forwarded_headers_from_an_untrusted_peer_are_told_once(
    make_server: ServerFactory,
) -> None:
    """A hub behind a proxy it was not told to trust would count every client as the
    proxy: the first request carrying X-Forwarded-For says so in the log, once."""
    served = await make_server()
    forwarded = {"x-forwarded-for": "203.0.113.7"}
    with structlog.testing.capture_logs() as logged:
        for _ in range(3):
            assert (await served.http.get("/api/streams", headers=forwarded)).is_success
    told = [entry for entry in logged if entry["event"] == "forwarded_headers_ignored"]
    assert len(told) == 1 and told[0]["log_level"] == "warning"
    assert "server.trustedProxies" in told[0]["detail"]
    trusting = await make_server(server={"trustedProxies": ["127.0.0.1"]})
    with structlog.testing.capture_logs() as logged:
        assert (await trusting.http.get("/api/streams", headers=forwarded)).is_success
    assert not [entry for entry in logged if entry["event"] == "forwarded_headers_ignored"]


async def test_an_idempotency_key_is_its_subject_s(make_server: ServerFactory) -> None:
    """Two producers that pick the same key each publish once; one cannot answer for (or
    read through) the other's key, and reusing one's own key with other events is a 422."""
    served = await secured(make_server)
    key = {"Idempotency-Key": "step-1"}
    first, second = (bearer(token(sub, publish=("*",))) for sub in ("p1", "p2"))
    one = {"type": "STATUS", "data": {"statusType": "s", "status": "one"}}
    a = await served.http.post("/api/streams/wf-1/events", json=one, headers={**first, **key})
    b = await served.http.post("/api/streams/wf-1/events", json=one, headers={**second, **key})
    assert [r.json()["events"][0]["seq"] for r in (a, b)] == [1, 2]
    other = {"type": "STATUS", "data": {"statusType": "s", "status": "two"}}
    reused = await served.http.post(
        "/api/streams/wf-1/events", json=other, headers={**first, **key}
    )
    assert reused.status_code == 422
    assert reused.json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"
    assert served.hub.streams.resolve("wf-1").head_seq == 2
