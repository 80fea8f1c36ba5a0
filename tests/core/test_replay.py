"""Replay to a live client (the original specification's StreamReplay)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from executor_streamer import (
    ClientNotFound,
    ClientSession,
    ClientType,
    ExecutorStreamer,
    HistoryFilter,
    InvalidInput,
    ReplayNotAllowed,
    Subscription,
)
from executor_streamer.core.subscription import ReplayBatch

from ..conftest import HubFactory, drain_events, seqs


async def subscribed_client(
    hub: ExecutorStreamer, client_type: ClientType = ClientType.WEBSOCKET
) -> tuple[ClientSession, Subscription]:
    for i in range(6):
        await hub.publisher.publish_status("wf-1", "STEP" if i % 2 else "INFO", str(i))
    client = hub.connect(client_type)
    sub = await hub.open_subscription("wf-1", client=client)
    return client, sub


class TestReplay:
    async def test_replay_with_history_filter(self, hub: ExecutorStreamer) -> None:
        """Replay sends the matching history as one batch, even seqs already seen."""
        client, sub = await subscribed_client(hub)
        count = await hub.replay_to_client("wf-1", client.id, HistoryFilter(after_seq=2, limit=3))
        assert count == 3
        [item] = sub.drain()
        assert isinstance(item, ReplayBatch)
        assert [r.seq for r in item.records] == [3, 4, 5] and item.last_seq == 5

    async def test_replay_from_timestamp(self, hub: ExecutorStreamer) -> None:
        """Replay from a timestamp sends every event stamped at or after it."""
        client, _ = await subscribed_client(hub)
        events = (await hub.history.get_events("wf-1")).events
        count = await hub.replay_from_timestamp("wf-1", client.id, events[0].timestamp)
        assert count == 6
        later = events[-1].timestamp + timedelta(seconds=1)
        assert await hub.replay_from_timestamp("wf-1", client.id, later) == 0

    async def test_replay_last_events(self, hub: ExecutorStreamer) -> None:
        """Replay of the last N sends the newest N, oldest first."""
        client, sub = await subscribed_client(hub)
        assert await hub.replay_last_events("wf-1", client.id, 2) == 2
        assert seqs(drain_events(sub)) == [5, 6]
        with pytest.raises(InvalidInput):
            await hub.replay_last_events("wf-1", client.id, 0)

    async def test_replay_respects_the_subscription_filters(self, hub: ExecutorStreamer) -> None:
        """A client only ever receives events its filters let through, replays included."""
        await hub.create_stream("wf-1")
        client = hub.connect(ClientType.WEBSOCKET)
        sub = await hub.open_subscription(
            "wf-1", client=client, filters=[{"eventTypes": ["ERROR"]}]
        )
        await hub.publisher.publish_status("wf-1", "a", "b")
        await hub.publisher.publish_error("wf-1", {"code": "E", "message": "m"})
        assert await hub.replay_to_client("wf-1", client.id) == 1
        assert seqs(drain_events(sub)) == [2, 2]  # once live, once replayed

    async def test_in_process_iteration_expands_replays(self, hub: ExecutorStreamer) -> None:
        """Iterating a subscription yields replayed events one by one, then live ones."""
        client, sub = await subscribed_client(hub)
        await hub.replay_last_events("wf-1", client.id, 2)
        await hub.publisher.publish_status("wf-1", "a", "live")
        iterator = aiter(sub)
        assert [(await anext(iterator)).seq for _ in range(3)] == [5, 6, 7]

    async def test_polling_clients_are_refused(self, hub: ExecutorStreamer) -> None:
        """A long-polling client reads history instead; replay to it is refused."""
        client, _ = await subscribed_client(hub, ClientType.HTTP_POLLING)
        with pytest.raises(ReplayNotAllowed):
            await hub.replay_to_client("wf-1", client.id)

    async def test_replay_disabled(self, make_hub: HubFactory) -> None:
        """With enableReplay off, replay is refused."""
        hub = await make_hub(default_stream_config={"enable_replay": False})
        client, _ = await subscribed_client(hub)
        with pytest.raises(ReplayNotAllowed):
            await hub.replay_last_events("wf-1", client.id, 1)

    async def test_unknown_or_unsubscribed_client(self, hub: ExecutorStreamer) -> None:
        """Replay needs a connected client subscribed to that stream."""
        await subscribed_client(hub)
        with pytest.raises(ClientNotFound):
            await hub.replay_to_client("wf-1", "cli_nope")
        await hub.create_stream("wf-2")
        other = hub.connect(ClientType.WEBSOCKET)
        with pytest.raises(ClientNotFound):
            await hub.replay_to_client("wf-2", other.id)
