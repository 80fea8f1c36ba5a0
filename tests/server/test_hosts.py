"""DNS rebinding on a hub without authentication (docs/security.md, "Origins"): the
probe's page named ``rebind.attacker.test`` (pointed at 127.0.0.1) read history and
published with the default config. A request must name the hub: ``localhost``, an
address, or the host of ``server.publicUrl``."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from executor_streamer.server.hosts import host_passes

from ..live_server import Served, ServerFactory, reasoning

REBOUND = "rebind.attacker.test"


def host(served: Served, name: str) -> dict[str, str]:
    return {"host": f"{name}:{served.server.port}"}


async def test_a_rebound_name_is_refused_on_every_route(served: Served) -> None:
    await served.publish("wf-1", reasoning())
    attacker = host(served, REBOUND)
    http = served.http
    for response in (
        await http.get("/api/streams", headers=attacker),
        await http.get("/api/streams/wf-1/history", headers=attacker),
        await http.get("/api/streams/wf-1/poll", params={"timeout": 0}, headers=attacker),
        await http.post("/api/streams/wf-1/events", json=reasoning(), headers=attacker),
        await http.get("/", headers=attacker),
    ):
        assert response.status_code == 403, response.request.url
        assert response.json()["error"]["code"] == "FORBIDDEN"
    assert (await http.get("/api/streams/wf-1/history")).json()["total"] == 1  # nothing stored
    port = served.server.port
    with pytest.raises(InvalidStatus) as refused:
        async with connect(f"ws://{REBOUND}:{port}/ws", host="127.0.0.1", port=port):
            pass
    assert refused.value.response.status_code == 403


@pytest.mark.parametrize("name", ["localhost", "127.0.0.1", "[::1]", "LOCALHOST", "localhost."])
async def test_the_hub_s_own_names_and_addresses_pass(served: Served, name: str) -> None:
    response = await served.http.get("/api/streams", headers=host(served, name))
    assert response.status_code == 200


async def test_the_public_url_s_host_passes(make_server: ServerFactory) -> None:
    served = await make_server(server={"publicUrl": "https://hub.example.test"})
    ok = await served.http.get("/api/streams", headers={"host": "hub.example.test"})
    assert ok.status_code == 200
    port = served.server.port
    async with connect(f"ws://hub.example.test:{port}/ws", host="127.0.0.1", port=port):
        pass


async def test_with_authentication_the_credential_decides(make_server: ServerFactory) -> None:
    secret = "s" * 40
    served = await make_server(security={"authenticationRequired": True, "jwt": {"secret": secret}})
    response = await served.http.get("/api/streams", headers=host(served, REBOUND))
    assert response.status_code == 401  # no credential: refused for that, not for Host


@given(
    calls=st.lists(
        st.tuples(
            st.sampled_from(
                [b"localhost:1", b"LOCALHOST", b"127.0.0.1:9", b"[::1]:3", b"10.0.0.1", b"x.test"]
            )
            | st.binary(max_size=20),
            st.sampled_from([frozenset({"localhost"}), frozenset({"localhost", "x.test"})]),
        ),
        max_size=40,
    )
)
def test_a_remembered_answer_is_the_answer(calls: list[tuple[bytes, frozenset[str]]]) -> None:
    """``host_passes`` remembers answers by the whole input (the Host value and the names):
    each is what working it out again gives."""
    for value, names in calls:
        assert host_passes(value, names) == host_passes.__wrapped__(value, names)
