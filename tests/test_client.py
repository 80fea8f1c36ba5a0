"""One error model on both sides of the wire: ``HubClient`` raises the classes the hub
raises in-process, rebuilt from the server's error code."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

import executor_streamer
import executor_streamer.client as client_module
from executor_streamer import (
    EventTooLarge,
    HubClient,
    InvalidInput,
    RemoteError,
    SlowConsumer,
    StreamClosed,
    StreamerError,
    StreamEvent,
    StreamNotFound,
)
from executor_streamer.client import ServerSentEvent
from executor_streamer.errors import _with_codes, error_from_wire
from executor_streamer.server.errors import HTTP_STATUS

from .live_server import Served, ServerFactory, status
from .waiting import eventually, eventually_async

ERROR_CLASSES = [cls for cls in _with_codes(StreamerError) if cls is not RemoteError]


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_every_code_has_a_status_and_comes_back_as_its_class(cls: type[StreamerError]) -> None:
    """Each error's code has an HTTP status in the server's table, and an answer with that
    code is raised client-side as that very class, with its message and details."""
    assert cls.code in HTTP_STATUS
    error = error_from_wire(cls.code, "m", {"k": 1}, HTTP_STATUS[cls.code])
    assert type(error) is cls
    assert (error.message, error.details, error.status) == ("m", {"k": 1}, HTTP_STATUS[cls.code])


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_the_package_exports_every_error(cls: type[StreamerError]) -> None:
    assert getattr(executor_streamer, cls.__name__) is cls
    assert cls.__name__ in executor_streamer.__all__


def test_an_unknown_code_is_a_remote_error_that_keeps_it() -> None:
    error = error_from_wire("SOMETHING_NEW", "from a newer hub", None, 418)
    assert isinstance(error, RemoteError) and error.to_dict()["code"] == "SOMETHING_NEW"


def test_details_the_classes_carry_are_rebuilt() -> None:
    slow = error_from_wire("SLOW_CONSUMER", "m", {"lastSeq": 41})
    assert isinstance(slow, SlowConsumer) and slow.last_seq == 41
    invalid = error_from_wire(
        "VALIDATION_ERROR", "m", {"errors": [{"path": "data.x", "message": "bad", "index": 2}]}
    )
    assert isinstance(invalid, InvalidInput)
    assert [(e.path, e.message, e.index) for e in invalid.errors] == [("data.x", "bad", 2)]


class TestOverHttp:
    async def test_the_same_classes_as_in_process(self, make_server: ServerFactory) -> None:
        served: Served = await make_server(
            server={"autoCreateStreams": False}, limits={"maxEventBytes": 2000}
        )
        async with HubClient(served.base_url) as client:
            with pytest.raises(StreamNotFound) as missing:
                await client.publish_status("wf-1", "a", "b")
            assert missing.value.status == 404
            await client.create_stream("wf-1")
            with pytest.raises(InvalidInput) as invalid:
                await client.publish_reasoning("wf-1", "t", 1.5, "p")
            assert [e.path for e in invalid.value.errors] == ["data.confidence"]
            with pytest.raises(EventTooLarge):
                await client.publish_status("wf-1", "a", "b", message="x" * 3000)
            await client.close_stream("wf-1")
            with pytest.raises(StreamClosed):
                await client.publish_status("wf-1", "a", "b")


async def test_a_publish_retried_with_its_idempotency_key_is_stored_once(served: Served) -> None:
    async with HubClient(served.base_url) as client:
        event = {"type": "STATUS", "data": {"statusType": "n", "status": "once"}}
        first = await client.publish_event("wf-idem", event, idempotency_key="k-1")
        again = await client.publish_event("wf-idem", event, idempotency_key="k-1")
        assert again == first
        assert (await served.http.get("/api/streams/wf-idem/history")).json()["total"] == 1


class TestWatch:
    """``HubClient.watch`` over SSE: each event once, in seq order, across reconnects."""

    async def test_replays_are_not_yielded_and_never_move_the_position_back(
        self, served: Served, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An operator's replay to the watching client (``replay_event`` frames) is not
        handed out; the next live event is, and a reconnect resumes after it."""
        monkeypatch.setattr(client_module, "RECONNECT_DELAY", 0.01)
        await served.publish("wf-1", status(1), status(2), status(3))
        async with HubClient(served.base_url) as client:
            events = client.watch("wf-1", since=0)
            assert [(await anext(events)).seq for _ in range(3)] == [1, 2, 3]
            [listed] = (await served.http.get("/api/streams/wf-1/clients")).json()
            replay = await served.http.post(
                f"/api/streams/wf-1/replay/{listed['id']}", json={"afterSeq": 0}
            )
            assert replay.status_code == 202 and replay.json()["count"] == 3
            await served.publish("wf-1", status(4))
            assert (await anext(events)).seq == 4
            # Dropped (the generator waits at its yield), then resumed after 4, not 3.
            await served.http.delete(f"/api/streams/wf-1/clients/{listed['id']}")
            await served.publish("wf-1", status(5))
            assert (await anext(events)).seq == 5
            await events.aclose()

    async def test_a_reconnect_into_a_new_epoch_starts_over(
        self, served: Served, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The epoch from ``subscribed`` goes with the resume: after the stream was purged
        and made again, the reconnect gets the new life from seq 1, not from after 3."""
        monkeypatch.setattr(client_module, "RECONNECT_DELAY", 0.01)
        await served.publish("wf-1", status(1), status(2), status(3))
        old = served.hub.streams.resolve("wf-1")
        async with HubClient(served.base_url) as client:
            events = client.watch("wf-1", since=0)
            assert [(await anext(events)).seq for _ in range(3)] == [1, 2, 3]
            [listed] = (await served.http.get("/api/streams/wf-1/clients")).json()
            await served.http.delete(f"/api/streams/wf-1/clients/{listed['id']}")
            purged = await served.http.delete("/api/streams/wf-1", params={"purge": True})
            assert purged.status_code == 204
            await served.publish("wf-1", *[status(f"new {i}") for i in range(5)])
            new = served.hub.streams.resolve("wf-1")
            assert new.epoch != old.epoch
            first = await anext(events)
            assert (first.seq, first.stream_id) == (1, new.id)
            await events.aclose()

    async def test_live_only_resumes_from_where_it_subscribed(
        self, served: Served, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Live only and dropped before any event: the reconnect resumes after the
        ``lastSeq`` that ``subscribed`` named, so an event published in between arrives."""
        monkeypatch.setattr(client_module, "RECONNECT_DELAY", 0.01)
        await served.publish("wf-1", status(1))
        connects: list[tuple[int | None, str | None]] = []
        gate = asyncio.Event()
        original = HubClient._sse

        def gated(
            self: HubClient,
            stream: str,
            last: int | None,
            epoch: str | None,
            types: Any,
            expression: str | None,
        ) -> AsyncIterator[ServerSentEvent]:
            connects.append((last, epoch))
            return _after(
                gate if len(connects) > 1 else None,
                original(self, stream, last, epoch, types, expression),
            )

        monkeypatch.setattr(HubClient, "_sse", gated)
        async with HubClient(served.base_url) as client:
            events = client.watch("wf-1")
            first = asyncio.create_task(_next(events))
            clients: list[dict[str, Any]] = []

            async def listed() -> bool:
                nonlocal clients
                clients = (await served.http.get("/api/streams/wf-1/clients")).json()
                return bool(clients)

            assert await eventually_async(listed), "the watch did not connect"
            await served.http.delete(f"/api/streams/wf-1/clients/{clients[0]['id']}")
            assert await eventually(lambda: len(connects) == 2), "the watch did not reconnect"
            await served.publish("wf-1", status(2))  # while it is away
            gate.set()
            assert (await asyncio.wait_for(first, 10)).seq == 2
            epoch = served.hub.streams.resolve("wf-1").epoch
            assert connects == [(None, None), (1, epoch)]
            await events.aclose()


async def _next(events: AsyncIterator[StreamEvent]) -> StreamEvent:
    return await anext(events)


async def _after(
    gate: asyncio.Event | None, frames: AsyncIterator[ServerSentEvent]
) -> AsyncIterator[ServerSentEvent]:
    """``frames``, once ``gate`` is set."""
    if gate is not None:
        await gate.wait()
    async for frame in frames:
        yield frame
