"""``HubClient.subscribe`` against a real hub: history then live, exact resume after the
hub drops the connection while publishing goes on, filters, the errors it raises as the
hub's own classes, and unsubscribing by leaving the loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from executor_streamer import (
    ExecutorStreamer,
    ExecutorStreamerConfig,
    Forbidden,
    HubClient,
    StreamNotFound,
    Unauthorized,
)
from executor_streamer.client_subscription import RemoteSubscription, SubscriptionState
from executor_streamer.security import Scope, mint_token
from executor_streamer.server.runner import HubServer, build_server

from .live_server import Served, ServerFactory, free_port, reasoning, status
from .waiting import eventually, eventually_async

SECRET = "python-sdk-test-secret-" + "p" * 32


async def take(sub: RemoteSubscription, count: int, seconds: float = 10) -> list[int]:
    seqs: list[int] = []

    async def run() -> None:
        async for event in sub:
            seqs.append(event.seq)
            if len(seqs) == count:
                return

    await asyncio.wait_for(run(), seconds)
    return seqs


async def clients_of(served: Served, stream: str) -> list[dict[str, object]]:
    response = await served.http.get(f"/api/streams/{stream}/clients")
    clients: list[dict[str, object]] = response.json()
    return clients


async def until_subscribed(served: Served, stream: str) -> None:
    async def subscribed() -> bool:
        return bool(await clients_of(served, stream))

    assert await eventually_async(subscribed), "no client subscribed"


@contextlib.asynccontextmanager
async def hub_client(served: Served, token: str | None = None) -> AsyncIterator[HubClient]:
    async with HubClient(served.base_url, token=token) as client:
        yield client


async def test_history_then_live(served: Served) -> None:
    await served.publish("wf-1", status(1), status(2))
    async with hub_client(served) as client, client.subscribe("wf-1", since=0) as sub:
        first = await take(sub, 2)
        await served.publish("wf-1", status(3))
        assert first + await take(sub, 1) == [1, 2, 3]
        assert sub.position == 3 and sub.recovered and sub.state == "live"


async def test_without_since_it_is_live_only(served: Served) -> None:
    await served.publish("wf-1", status(1))
    async with hub_client(served) as client, client.subscribe("wf-1") as sub:
        reader = asyncio.create_task(take(sub, 1))
        await until_subscribed(served, "wf-1")
        await served.publish("wf-1", status(2))
        assert await reader == [2]


async def test_resume_after_the_hub_drops_it_while_publishing(served: Served) -> None:
    """The operator disconnects the client three times during a run of 300 events: the
    subscription reconnects and resumes, and every event arrives exactly once, in order."""
    await served.http.post("/api/streams", json={"workflowSessionId": "wf-1"})
    states: list[str] = []
    async with hub_client(served) as client:
        sub = client.subscribe("wf-1", since=0, on_state=lambda s: states.append(s.state))
        received = asyncio.create_task(take(sub, 300, seconds=30))

        dropped: set[str | None] = {None}

        async def live_on_the_hub() -> bool:
            """Whether the subscription's current connection is live and the hub lists
            it (after a drop, it is back only once it has reconnected)."""
            if sub.state != "live" or sub.client_id in dropped:
                return False
            return sub.client_id in [c["id"] for c in await clients_of(served, "wf-1")]

        async def drop() -> None:
            assert await eventually_async(live_on_the_hub), "the subscription is not live"
            dropped.add(sub.client_id)
            response = await served.http.delete(f"/api/streams/wf-1/clients/{sub.client_id}")
            assert response.status_code == 204, response.text

        # The drops come between publishes, before the last event is published: the
        # reading loop cannot have ended before one (it once did, timed by sleeps). Each
        # drop waits for the connection it drops, not for the reader to catch up: events
        # may still be on their way when it goes.
        for start in range(0, 300, 10):
            if start in (80, 160, 240):
                await drop()
            await served.publish("wf-1", *[status(n) for n in range(start, start + 10)])
        assert await received == list(range(1, 301))
        # Dropped and back, then closed as the reading loop ended: the loop's iterator is
        # finalized by the event loop, a moment after the loop returned.
        assert await eventually(lambda: states[-1] == "closed"), f"not closed: {states}"
        assert "reconnecting" in states and states[-2:] == ["live", "closed"]
        await sub.close()


async def test_types_filter(served: Served) -> None:
    await served.publish("wf-1", status(1), reasoning(), status(2))
    async with (
        hub_client(served) as client,
        client.subscribe("wf-1", since=0, types=["REASONING"]) as sub,
    ):
        assert await take(sub, 1) == [2]


async def test_the_iteration_ends_when_the_stream_closes(served: Served) -> None:
    await served.publish("wf-1", status(1))
    async with hub_client(served) as client, client.subscribe("wf-1", since=0) as sub:
        seqs = []

        async def read() -> None:
            async for event in sub:
                seqs.append(event.seq)

        reader = asyncio.create_task(read())
        await until_subscribed(served, "wf-1")
        await served.http.delete("/api/streams/wf-1")
        await asyncio.wait_for(reader, 10)
        assert seqs == [1]


async def test_an_unknown_stream_raises_stream_not_found(served: Served) -> None:
    async with hub_client(served) as client, client.subscribe("nope", since=0) as sub:
        with pytest.raises(StreamNotFound):
            await take(sub, 1)


async def test_credentials(make_server: ServerFactory) -> None:
    served = await make_server(security={"authenticationRequired": True, "jwt": {"secret": SECRET}})
    writer = mint_token(SECRET, "w", Scope(publish=("*",)), 600)
    async with hub_client(served, writer) as client:
        await client.publish_status("wf-1", "step", "one")
    reader = mint_token(SECRET, "r", Scope(subscribe=("wf-*",)), 600)
    async with hub_client(served, reader) as client, client.subscribe("wf-1", since=0) as sub:
        assert await take(sub, 1) == [1]
    outsider = mint_token(SECRET, "o", Scope(subscribe=("other-*",)), 600)
    async with hub_client(served, outsider) as client, client.subscribe("wf-1", since=0) as sub:
        with pytest.raises(Forbidden):
            await take(sub, 1)
    forged = mint_token("another-secret-" + "f" * 32, "r", Scope(subscribe=("*",)), 600)
    async with hub_client(served, forged) as client, client.subscribe("wf-1", since=0) as sub:
        with pytest.raises(Unauthorized) as refused:
            await take(sub, 1)
        assert refused.value.status == 401


async def test_leaving_the_loop_unsubscribes(served: Served) -> None:
    await served.publish("wf-1", status(1), status(2))
    async with hub_client(served) as client:
        sub = client.subscribe("wf-1", since=0)
        async for event in sub:
            assert event.seq == 1
            break

        # The generator's aclose runs a moment after the loop was left.
        async def unsubscribed() -> bool:
            return await clients_of(served, "wf-1") == []

        assert await eventually_async(unsubscribed), "the hub still lists the client"
        assert await clients_of(served, "wf-1") == []
        assert sub.state == "closed"


async def test_a_failing_state_handler_does_not_break_it(served: Served) -> None:
    def explode(_: SubscriptionState) -> None:
        raise RuntimeError("the application's bug")

    await served.publish("wf-1", status(1))
    async with (
        hub_client(served) as client,
        client.subscribe("wf-1", since=0, on_state=explode) as sub,
    ):
        assert await take(sub, 1) == [1]


async def test_a_hub_that_lost_its_history_is_a_new_epoch() -> None:
    """The hub restarts on the same port without its history (memory storage): the
    subscription reconnects, learns of the new epoch and receives the new life of the
    stream from seq 1, told that it did not recover what it had asked for."""
    port = free_port()
    states: list[SubscriptionState] = []

    async def serve(*first: dict[str, object]) -> tuple[HubServer, asyncio.Task[None]]:
        """A hub on ``port``, holding ``first`` in wf-1 before it takes connections (the
        reconnecting subscription must find the stream, not race its first publish)."""
        hub = ExecutorStreamer(ExecutorStreamerConfig())
        if first:
            await hub.start()  # the server's own start is then a no-op
            await hub.publisher.publish_batch("wf-1", list(first))
        server = build_server(hub, "127.0.0.1", port)
        task = asyncio.create_task(server.serve())
        await eventually(lambda: server.started or task.done(), 30)
        if task.done():
            task.result()  # the server's own error, had it failed to start
        assert server.started, "the hub did not start"
        return server, task

    async def stop(server: HubServer, task: asyncio.Task[None]) -> None:
        server.should_exit = True
        await asyncio.wait_for(task, 15)

    first = await serve()
    async with HubClient(f"http://127.0.0.1:{port}") as client:
        await client.publish_batch("wf-1", [status(n) for n in range(5)])
        sub = client.subscribe("wf-1", since=0, on_state=states.append)
        assert await take(sub, 5) == [1, 2, 3, 4, 5]
        old_epoch = sub.epoch
        before = len(states)
        reader = asyncio.create_task(take(sub, 3, seconds=30))

        def reading_live() -> bool:
            """Whether the second loop has connected again and is live on the first hub
            (the first loop's connection closed as that loop ended)."""
            later = [s.state for s in states[before:]]
            return "connecting" in later and later[-1] == "live"

        assert await eventually(reading_live), f"the reader did not subscribe: {states}"
        await stop(*first)
        second = await serve(*[status(n) for n in range(3)])
        try:
            assert await reader == [1, 2, 3]
            assert sub.epoch != old_epoch and not sub.recovered
            assert any(not s.recovered for s in states)
        finally:
            await sub.close()
            await stop(*second)


async def test_a_token_function_is_asked_at_every_request_and_connection(
    make_server: ServerFactory,
) -> None:
    served = await make_server(security={"authenticationRequired": True, "jwt": {"secret": SECRET}})
    asked: list[str] = []

    async def renewed() -> str:  # a fresh token each time, as from an identity provider
        asked.append("token")
        return mint_token(SECRET, "sdk", Scope(admin=True), 600 + len(asked))

    async with HubClient(served.base_url, token=renewed) as client:
        await client.publish_status("wf-1", "step", "one")
        await client.publish_status("wf-1", "step", "two")
        async with client.subscribe("wf-1", since=0) as sub:
            assert await take(sub, 2) == [1, 2]
    assert len(asked) == 3
