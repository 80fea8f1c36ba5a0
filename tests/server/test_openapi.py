"""The server does what its OpenAPI says, and no input makes it fail: schemathesis against
a real hub on a loopback port, with streams that exist so generated requests reach real
data. Every answer must be a documented status with a documented body, never a 5xx.

SSE is left out (a response that never ends); it is covered by its own tests and by the
WebSocket and query fuzzing in test_ws_messages.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import positive_data_acceptance

from executor_streamer import ExecutorStreamer, create_app

from ..live_server import ThreadedServer, server_in_thread

STREAMS = ["wf-1", "wf-2", "wf-closed"]


def _seed(server: ThreadedServer) -> None:
    """Streams with events of every kind, one closed, and a client to replay to."""
    status = {"type": "STATUS", "data": {"statusType": "step", "status": "s"}}
    reasoning = {
        "type": "REASONING",
        "data": {"thought": "t", "confidence": 0.5, "reasoningType": "p"},
    }
    with httpx.Client(base_url=server.base_url) as http:
        for stream in STREAMS:
            response = http.post(
                f"/api/streams/{stream}/events", json={"events": [status, reasoning]}
            )
            assert response.status_code == 201, response.text
        assert http.delete("/api/streams/wf-closed").status_code == 204


@pytest.fixture(scope="module")
def hub_server() -> Iterator[ThreadedServer]:
    with server_in_thread(logging={"level": "ERROR"}) as server:
        _seed(server)
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
    """A long poll answers at once rather than waiting out its timeout."""
    if query and "timeout" in query:
        query["timeout"] = 0
    return query


def _schema() -> Any:
    """The hub's own OpenAPI document, as the server serves it."""
    document = create_app(ExecutorStreamer()).openapi()
    loaded = schemathesis.openapi.from_dict(document)
    loaded.hook(flatmap_path_parameters)
    loaded.hook(map_query)
    return loaded.exclude(method="GET", path="/api/streams/{ref}/events")


SCHEMA = _schema()
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]


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
