"""Clients: registry, idle expiry, activity reports."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from executor_streamer import ClientNotFound, ClientType, ExecutorStreamer
from executor_streamer.core.subscription import CloseReason
from executor_streamer.types import utc_now

from ..conftest import HubFactory
from ..waiting import eventually


class TestIdleExpiry:
    async def test_idle_clients_are_removed(self, hub: ExecutorStreamer) -> None:
        """A client silent for longer than idleClientTimeout is disconnected; one that
        showed a sign of life stays."""
        await hub.create_stream("wf-1")
        quiet = hub.connect(ClientType.HTTP_POLLING)
        lively = hub.connect(ClientType.WEBSOCKET)
        sub = await hub.open_subscription("wf-1", client=quiet)
        later = time.monotonic() + 31
        lively._last_seen = later - 5  # as if it had pinged 5 s before ``later``
        assert hub.expire_idle_clients(now=later) == [quiet.id]
        assert sub.close_reason == "IDLE"
        assert hub.clients.find(quiet.id) is None and hub.clients.find(lively.id) is lively
        assert hub.get_stream("wf-1").clients == []  # type: ignore[union-attr]

    async def test_touch_counts_as_a_sign_of_life(self, hub: ExecutorStreamer) -> None:
        """touch() moves lastPing and resets the idle clock."""
        client = hub.connect(ClientType.WEBSOCKET)
        before = client.last_ping
        assert await eventually(lambda: utc_now() > before), "the clock did not move"
        client.touch()
        assert client.last_ping > before
        assert client.idle_seconds() < 1

    async def test_maintenance_loop_expires_clients(self, make_hub: HubFactory) -> None:
        """The hub's own maintenance task removes idle clients without being asked."""
        hub = await make_hub(server={"idle_client_timeout": 1000})
        hub._maintenance_interval = 0.05
        client = hub.connect(ClientType.SERVER_SENT_EVENTS)
        assert await eventually(lambda: hub.clients.find(client.id) is None), "not expired"
        assert hub.clients.find(client.id) is None


class TestRegistry:
    async def test_get_unknown_client(self, hub: ExecutorStreamer) -> None:
        """Looking up a client that is not connected is ClientNotFound."""
        with pytest.raises(ClientNotFound):
            hub.clients.get("cli_nope")
        hub.disconnect("cli_nope")  # disconnecting twice or never is harmless

    async def test_counts_by_type(self, hub: ExecutorStreamer) -> None:
        """Connected clients are counted per type, every type present."""
        hub.connect(ClientType.WEBSOCKET)
        hub.connect(ClientType.WEBSOCKET)
        hub.connect(ClientType.HTTP_POLLING)
        assert hub.clients.counts_by_type() == {
            ClientType.WEBSOCKET: 2,
            ClientType.SERVER_SENT_EVENTS: 0,
            ClientType.HTTP_POLLING: 1,
        }

    async def test_activity_report(self, hub: ExecutorStreamer) -> None:
        """The report lists clients connected in the range, departed ones included."""
        start = utc_now() - timedelta(seconds=1)
        await hub.create_stream("wf-1")
        gone = hub.connect(ClientType.WEBSOCKET)
        await hub.open_subscription("wf-1", client=gone, since=0)
        here = hub.connect(ClientType.SERVER_SENT_EVENTS)
        hub.disconnect(gone.id)
        reports = hub.analytics.get_client_activity(start, utc_now() + timedelta(seconds=1))
        assert [(r.client_id, r.is_active) for r in reports] == [(gone.id, False), (here.id, True)]
        assert reports[0].disconnect_time is not None
        assert reports[0].stream_ids == [hub.streams.resolve("wf-1").id]
        past = utc_now() - timedelta(hours=2)
        assert hub.analytics.get_client_activity(past, past + timedelta(minutes=1)) == []

    async def test_disconnect_notifies_once_and_lets_go(self, hub: ExecutorStreamer) -> None:
        """The transport's callback runs once with the reason, and the client kept for
        activity reports no longer holds it (it would hold the whole connection)."""
        client = hub.connect(ClientType.WEBSOCKET)
        reasons: list[CloseReason] = []
        client.on_disconnect = reasons.append
        hub.disconnect(client.id, CloseReason.IDLE)
        hub.disconnect(client.id, CloseReason.IDLE)
        assert reasons == [CloseReason.IDLE]
        assert client.on_disconnect is None
