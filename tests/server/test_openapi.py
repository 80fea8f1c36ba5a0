"""The server does what its OpenAPI says, and no input makes it fail: schemathesis against
a real hub on a loopback port, with streams that exist so generated requests reach real
data. Every answer must be a documented status with a documented body, never a 5xx.

SSE is left out (a response that never ends); it is covered by its own tests and by the
WebSocket and query fuzzing in test_ws_messages.py.

With authentication on, the same operations are sent with an admin credential, and
schemathesis' ``ignored_auth`` check sends each again without one and with a wrong one: an
operation the schema says needs a credential must refuse both.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import ignored_auth, positive_data_acceptance

from executor_streamer import ExecutorStreamer, ExecutorStreamerConfig, create_app
from executor_streamer.security import Scope, mint_token

from ..live_server import ThreadedServer, server_in_thread

STREAMS = ["wf-1", "wf-2", "wf-closed"]


SECRET = "openapi-test-secret-" + "q" * 32
AUTHENTICATED = {
    "security": {"authenticationRequired": True, "jwt": {"secret": SECRET}},
}
# Many examples from one address: rate limits have tests of their own (test_security.py).
UNLIMITED = {"rateLimiting": {"enabled": False}}


def _seed(server: ThreadedServer, headers: dict[str, str] | None = None) -> None:
    """Streams with events of every kind, one closed, and a client to replay to."""
    status = {"type": "STATUS", "data": {"statusType": "step", "status": "s"}}
    reasoning = {
        "type": "REASONING",
        "data": {"thought": "t", "confidence": 0.5, "reasoningType": "p"},
    }
    with httpx.Client(base_url=server.base_url, headers=headers) as http:
        for stream in STREAMS:
            response = http.post(
                f"/api/streams/{stream}/events", json={"events": [status, reasoning]}
            )
            assert response.status_code == 201, response.text
        assert http.delete("/api/streams/wf-closed").status_code == 204


@pytest.fixture(scope="module")
def hub_server() -> Iterator[ThreadedServer]:
    with server_in_thread(logging={"level": "ERROR"}, security=UNLIMITED) as server:
        _seed(server)
        yield server


def admin_headers() -> dict[str, str]:
    return {"authorization": f"Bearer {mint_token(SECRET, 'fuzzer', Scope(admin=True), 3600)}"}


@pytest.fixture(scope="module")
def secured_server() -> Iterator[ThreadedServer]:
    security = {**AUTHENTICATED["security"], **UNLIMITED}
    with server_in_thread(logging={"level": "ERROR"}, security=security) as server:
        _seed(server, admin_headers())
        yield server


def flatmap_path_parameters(
    ctx: Any, path: dict[str, Any] | None
) -> st.SearchStrategy[dict[str, Any] | None]:
    """Mostly, the stream in the path is one that exists."""
    if not path or "ref" not in path:
        return st.just(path)
    return st.sampled_from([None, *STREAMS]).map(
        lambda ref: path if ref is None else {**path, "ref": ref}
    )


def map_query(ctx: Any, query: dict[str, Any] | None) -> dict[str, Any] | None:
    """A long poll answers at once rather than waiting out its timeout: also when none
    was generated, since the default (25 s) outlasts the client's 10 s."""
    if ctx.operation is not None and ctx.operation.path.endswith("/poll"):
        query = {**(query or {}), "timeout": 0}
    return query


def _schema(**config: Any) -> Any:
    """The hub's own OpenAPI document, as the server serves it."""
    hub = ExecutorStreamer(ExecutorStreamerConfig().with_overrides(config))
    document = create_app(hub).openapi()
    loaded = schemathesis.openapi.from_dict(document)
    loaded.hook(flatmap_path_parameters)
    loaded.hook(map_query)
    return loaded.exclude(method="GET", path="/api/streams/{ref}/events")


SCHEMA = _schema()
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]
SECURED_SCHEMA = _schema(**AUTHENTICATED)
SECURED_OPERATIONS = [result.ok() for result in SECURED_SCHEMA.get_all_operations()]


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: op.label)
def test_no_input_gets_an_undocumented_answer(operation: Any, hub_server: ThreadedServer) -> None:
    """Whatever schemathesis sends, the answer is documented (status, content type,
    body schema, headers) and never a server error. (Its check that every schema-valid
    request is accepted is left out: what a schema cannot say, such as that an image's
    bytes are the PNG its mimeType names, the hub still refuses, with a 4xx.)"""

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy())
    def check(case: Any) -> None:
        response = case.call(base_url=hub_server.base_url, timeout=10)
        case.validate_response(response, excluded_checks=[positive_data_acceptance])

    check()


def test_without_authentication_no_operation_asks_for_a_credential() -> None:
    """The schema describes the hub it comes from: with authentication off, none."""
    document = create_app(ExecutorStreamer()).openapi()
    assert "securitySchemes" not in document["components"]
    assert not any("security" in op for ops in document["paths"].values() for op in ops.values())


def test_with_authentication_every_api_operation_declares_it() -> None:
    document = SECURED_SCHEMA.raw_schema
    assert set(document["components"]["securitySchemes"]) == {"bearer", "ticket"}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            needs = path.startswith("/api/") or path == "/metrics"
            assert ("security" in operation) == needs, (method, path)


def test_public_metrics_are_documented_as_public() -> None:
    config = {"security": {**AUTHENTICATED["security"], "metricsPublic": True}}
    hub = ExecutorStreamer(ExecutorStreamerConfig().with_overrides(config))
    paths = create_app(hub).openapi()["paths"]
    assert "security" not in paths["/metrics"]["get"]
    assert "security" in paths["/api/streams/metrics"]["get"]


@pytest.mark.parametrize("operation", SECURED_OPERATIONS, ids=lambda op: op.label)
def test_no_operation_ignores_its_credential(
    operation: Any, secured_server: ThreadedServer
) -> None:
    headers = admin_headers()

    @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy())
    def check(case: Any) -> None:
        response = case.call(base_url=secured_server.base_url, headers=headers, timeout=10)
        case.validate_response(
            response,
            checks=[ignored_auth, not_a_server_error],
            headers=headers,
            transport_kwargs={"base_url": secured_server.base_url, "timeout": 10},
        )

    check()
