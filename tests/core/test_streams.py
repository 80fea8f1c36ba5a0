"""The stream manager: create, find, close, purge, status lifecycle, callbacks, limits."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from executor_streamer import (
    ClientType,
    ExecutorStreamer,
    ExecutorStreamerConfig,
    HubNotRunning,
    InvalidInput,
    InvalidStatusTransition,
    LifecycleCallbacks,
    SessionStatus,
    StreamClosed,
    StreamNotFound,
    TooManyClients,
)
from executor_streamer.types import ErrorContext, utc_now

from ..conftest import HubFactory, YieldingHistory, drain_events, seqs
from ..waiting import eventually


class TestCreate:
    async def test_new_stream(self, hub: ExecutorStreamer) -> None:
        """A new stream gets an str_ id with 22+ url-safe characters and starts INITIALIZING."""
        stream_id = await hub.create_stream("wf-1", metadata={"owner": "ada"})
        assert stream_id.startswith("str_") and len(stream_id) >= 26
        session = hub.get_stream("wf-1")
        assert session is not None
        assert session.session_id == session.stream_id == stream_id
        assert session.linked_workflow_session_id == "wf-1"
        assert session.module_id == "executor-streamer"
        assert session.status is SessionStatus.INITIALIZING and session.is_active
        assert (session.last_seq, session.metadata) == (0, {"owner": "ada"})
        assert session.epoch

    async def test_create_is_idempotent(self, hub: ExecutorStreamer) -> None:
        """Creating the same workflow session twice returns the same stream."""
        first, created = await hub.streams.ensure_stream("wf-1")
        second, created_again = await hub.streams.ensure_stream("wf-1")
        assert first is second
        assert (created, created_again) == (True, False)
        assert len(hub.streams) == 1

    async def test_concurrent_first_publishes_make_one_stream(self) -> None:
        """Publishers racing to auto-create a session's stream all land in one stream,
        even when opening storage suspends."""
        hub = ExecutorStreamer(storage=YieldingHistory(3))
        await hub.start()
        try:
            events = await asyncio.gather(
                *(hub.publisher.publish_status("wf-1", "n", str(i)) for i in range(20))
            )
            assert len(hub.streams) == 1
            assert len({e.stream_id for e in events}) == 1
            assert sorted(e.seq for e in events) == list(range(1, 21))
        finally:
            await hub.stop()

    async def test_found_by_stream_id_or_workflow_session_id(self, hub: ExecutorStreamer) -> None:
        """Every reference accepts the stream id or the workflow session id."""
        stream_id = await hub.create_stream("wf-1")
        assert hub.get_stream(stream_id) == hub.get_stream("wf-1")
        assert hub.get_stream("wf-2") is None
        assert hub.streams.stream_exists(stream_id)

    @pytest.mark.parametrize(
        "bad", ["", "-x", "has space", "x" * 129, "metrics", "a/b", "ünïcode", 5]
    )
    async def test_invalid_workflow_session_ids(self, hub: ExecutorStreamer, bad: Any) -> None:
        """Ids outside the pattern, and the reserved 'metrics', are refused; nothing is made."""
        with pytest.raises(InvalidInput) as caught:
            await hub.create_stream(bad)
        assert caught.value.errors[0].path == "workflowSessionId"
        assert len(hub.streams) == 0

    async def test_partial_config_merges_over_defaults(self, hub: ExecutorStreamer) -> None:
        """A partial config changes only the keys it names, nested ones included."""
        await hub.create_stream(
            "wf-1", config={"maxHistorySize": 5, "persistence": {"retentionPeriod": 5000}}
        )
        session = hub.get_stream("wf-1")
        assert session is not None
        assert session.config.max_history_size == 5
        assert session.config.persistence.retention_period == 5000
        assert session.config.buffer_size == 1000

    async def test_invalid_config_names_the_field(self, hub: ExecutorStreamer) -> None:
        """A bad stream config is refused with its path under ``config``."""
        with pytest.raises(InvalidInput) as caught:
            await hub.create_stream("wf-1", config={"maxHistorySize": 0})
        assert caught.value.errors[0].path == "config.max_history_size"
        assert hub.get_stream("wf-1") is None

    async def test_not_running(self) -> None:
        """A hub that was not started refuses work instead of half-working."""
        hub = ExecutorStreamer(ExecutorStreamerConfig())
        with pytest.raises(HubNotRunning):
            await hub.create_stream("wf-1")
        with pytest.raises(HubNotRunning):
            await hub.publisher.publish_status("wf-1", "a", "b")


class TestCloseAndPurge:
    async def test_close_keeps_history_and_refuses_publishes(self, hub: ExecutorStreamer) -> None:
        """A closed stream is inactive, readable, and refuses new events."""
        await hub.publisher.publish_status("wf-1", "a", "b")
        await hub.destroy_stream("wf-1")
        session = hub.get_stream("wf-1")
        assert session is not None
        assert session.status is SessionStatus.CLOSED and not session.is_active
        assert hub.list_active_streams() == []
        assert (await hub.history.get_events("wf-1")).total == 1
        with pytest.raises(StreamClosed):
            await hub.publisher.publish_status("wf-1", "a", "c")
        assert (await hub.history.get_events("wf-1")).total == 1

    async def test_close_ends_subscriptions(self, hub: ExecutorStreamer) -> None:
        """Subscribers get what was queued, then their subscription ends STREAM_CLOSED."""
        await hub.create_stream("wf-1")
        async with hub.subscribe("wf-1") as sub:
            await hub.publisher.publish_status("wf-1", "a", "b")
            await hub.destroy_stream("wf-1")
            assert [e.seq async for e in sub] == [1]
            assert sub.close_reason == "STREAM_CLOSED"

    async def test_recreate_reactivates_with_seq_continuing(self, hub: ExecutorStreamer) -> None:
        """Re-creating a closed stream reopens it: same id, same epoch, next seq."""
        stream_id = await hub.create_stream("wf-1")
        await hub.publisher.publish_status("wf-1", "a", "b")
        epoch = hub.streams.resolve("wf-1").epoch
        await hub.destroy_stream("wf-1")
        assert await hub.create_stream("wf-1") == stream_id
        event = await hub.publisher.publish_status("wf-1", "a", "c")
        assert event.seq == 2
        assert hub.streams.resolve("wf-1").epoch == epoch
        assert hub.streams.resolve("wf-1").status is SessionStatus.ACTIVE

    async def test_purge_forgets_everything(self, hub: ExecutorStreamer) -> None:
        """Purging removes the stream and its history; a new create starts over."""
        old_id = await hub.create_stream("wf-1")
        old_epoch = hub.streams.resolve("wf-1").epoch
        await hub.publisher.publish_status("wf-1", "a", "b")
        await hub.destroy_stream("wf-1", purge=True)
        assert hub.get_stream("wf-1") is None
        with pytest.raises(StreamNotFound):
            await hub.history.get_events(old_id)
        new_id = await hub.create_stream("wf-1")
        assert new_id != old_id
        assert hub.streams.resolve("wf-1").epoch != old_epoch
        assert (await hub.publisher.publish_status("wf-1", "a", "b")).seq == 1

    async def test_destroy_unknown(self, hub: ExecutorStreamer) -> None:
        """Destroying a stream that does not exist is StreamNotFound."""
        with pytest.raises(StreamNotFound):
            await hub.destroy_stream("nope")


class TestStatus:
    async def test_first_event_activates(self, hub: ExecutorStreamer) -> None:
        """INITIALIZING becomes ACTIVE at the first published event."""
        await hub.create_stream("wf-1")
        await hub.publisher.publish_status("wf-1", "a", "b")
        assert hub.streams.resolve("wf-1").status is SessionStatus.ACTIVE

    async def test_error_and_back(self, hub: ExecutorStreamer) -> None:
        """An open stream can enter ERROR and return to ACTIVE; it still takes events."""
        await hub.publisher.publish_status("wf-1", "a", "b")
        await hub.update_session_status("wf-1", SessionStatus.ERROR)
        await hub.publisher.publish_status("wf-1", "a", "c")
        assert hub.streams.resolve("wf-1").status is SessionStatus.ERROR
        await hub.update_session_status("wf-1", SessionStatus.ACTIVE)
        info = hub.get_session("wf-1")
        assert info is not None and info.status is SessionStatus.ACTIVE

    @pytest.mark.parametrize("target", [SessionStatus.CLOSED, SessionStatus.INITIALIZING])
    async def test_invalid_transitions(self, hub: ExecutorStreamer, target: SessionStatus) -> None:
        """Closing goes through destroy_stream, and nothing returns to INITIALIZING."""
        await hub.publisher.publish_status("wf-1", "a", "b")
        with pytest.raises(InvalidStatusTransition):
            await hub.update_session_status("wf-1", target)
        assert hub.streams.resolve("wf-1").status is SessionStatus.ACTIVE

    async def test_session_manager_queries(self, make_hub: HubFactory) -> None:
        """The original ISessionManager queries answer for streams that exist, None otherwise."""
        hub = await make_hub()
        assert not hub.session_exists("wf-1") and hub.get_session_status("wf-1") is None
        assert hub.get_last_activity("wf-1") is None
        await hub.create_stream("wf-1")
        before = hub.get_last_activity("wf-1")
        assert before is not None
        assert await eventually(lambda: utc_now() > before), "the clock did not move"
        hub.record_activity("wf-1")
        after = hub.get_last_activity("wf-1")
        assert before is not None and after is not None and after > before
        assert hub.get_session_status("wf-1") is SessionStatus.INITIALIZING
        health = hub.health_check()
        assert (health.is_healthy, health.active_sessions, health.total_sessions) == (True, 1, 1)
        await hub.stop()
        assert hub.health_check().errors == ["the hub is not running"]


class TestCallbacks:
    async def test_lifecycle_callbacks_run_in_order(self, hub: ExecutorStreamer) -> None:
        """Created, status, error, client and destroyed hooks fire in the order things happen."""
        calls: list[tuple[Any, ...]] = []

        async def record(*args: Any) -> None:
            calls.append(args)

        async def attached(stream_id: str, client: Any) -> None:
            calls.append(("attached", client.id))

        hub.set_lifecycle_callbacks(
            LifecycleCallbacks(
                on_session_created=record,
                on_session_status_changed=record,
                on_session_destroyed=record,
                on_session_error=record,
                on_client_attached=attached,
                on_client_detached=record,
            )
        )
        stream_id = await hub.create_stream("wf-1")
        await hub.publisher.publish_status("wf-1", "a", "b")
        error = ErrorContext(code="E", message="m")
        await hub.update_session_status("wf-1", SessionStatus.ERROR, error)
        client = hub.connect(ClientType.WEBSOCKET)
        sub = await hub.open_subscription("wf-1", client=client)
        sub.close("UNSUBSCRIBED")  # type: ignore[arg-type]
        await hub.destroy_stream("wf-1", purge=True)
        await hub.drain_callbacks()
        m = "executor-streamer"
        assert calls == [
            (m, "wf-1", stream_id),
            (m, "wf-1", SessionStatus.INITIALIZING, SessionStatus.ACTIVE),
            (m, "wf-1", SessionStatus.ACTIVE, SessionStatus.ERROR),
            (m, "wf-1", error),
            ("attached", client.id),
            (stream_id, client.id),
            (m, "wf-1", SessionStatus.ERROR, SessionStatus.CLOSED),
            (m, "wf-1"),
        ]

    async def test_failing_callback_harms_nothing(self, hub: ExecutorStreamer) -> None:
        """A callback that raises is logged; the hub and later callbacks carry on."""
        seen: list[str] = []

        async def broken(*args: Any) -> None:
            raise RuntimeError("callback bug")

        async def created(module_id: str, session_id: str, stream_id: str) -> None:
            seen.append(session_id)

        hub.set_lifecycle_callbacks(
            LifecycleCallbacks(on_session_created=created, on_session_status_changed=broken)
        )
        await hub.publisher.publish_status("wf-1", "a", "b")
        await hub.publisher.publish_status("wf-2", "a", "b")
        await hub.drain_callbacks()
        assert seen == ["wf-1", "wf-2"]


class TestClientLimits:
    async def test_max_clients_per_stream(self, make_hub: HubFactory) -> None:
        """A stream refuses clients past maxClients; in-process subscribers do not count."""
        hub = await make_hub(default_stream_config={"max_clients": 2})
        await hub.create_stream("wf-1")
        clients = [hub.connect(ClientType.SERVER_SENT_EVENTS) for _ in range(3)]
        await hub.open_subscription("wf-1", client=clients[0])
        await hub.open_subscription("wf-1", client=clients[1])
        with pytest.raises(TooManyClients):
            await hub.open_subscription("wf-1", client=clients[2])
        await hub.open_subscription("wf-1")  # a plain listener is not a client
        assert len(hub.streams.resolve("wf-1").clients) == 2
        assert len(hub.streams.resolve("wf-1").subscriptions) == 3

    async def test_resubscribing_replaces_the_clients_subscription(
        self, hub: ExecutorStreamer
    ) -> None:
        """A client has one subscription per stream; subscribing again replaces it."""
        await hub.create_stream("wf-1")
        client = hub.connect(ClientType.WEBSOCKET)
        first = await hub.open_subscription("wf-1", client=client)
        second = await hub.open_subscription("wf-1", client=client)
        assert first.close_reason == "UNSUBSCRIBED" and not second.closed
        await hub.publisher.publish_status("wf-1", "a", "b")
        assert seqs(drain_events(second)) == [1]
        assert client.subscriptions == {hub.streams.resolve("wf-1").id: second}

    async def test_max_connections(self, make_hub: HubFactory) -> None:
        """The hub refuses connections past server.maxConnections until one leaves."""
        hub = await make_hub(
            server={"max_connections": 2}, default_stream_config={"max_clients": 2}
        )
        first = hub.connect(ClientType.WEBSOCKET)
        hub.connect(ClientType.SERVER_SENT_EVENTS)
        with pytest.raises(TooManyClients):
            hub.connect(ClientType.WEBSOCKET)
        hub.disconnect(first.id)
        hub.connect(ClientType.WEBSOCKET)

    async def test_a_parked_poller_gives_its_place(self, make_hub: HubFactory) -> None:
        """A polling client between polls is disconnected (EVICTED) to make room for a
        new client, the longest parked first; one in the middle of a poll is not."""
        hub = await make_hub(
            server={"max_connections": 3}, default_stream_config={"max_clients": 3}
        )
        older, newer, polling = (hub.connect(ClientType.HTTP_POLLING) for _ in range(3))
        polling.polls_in_progress = 1
        newer.touch()
        hub.connect(ClientType.WEBSOCKET)
        assert hub.clients.find(older.id) is None
        hub.connect(ClientType.WEBSOCKET)
        assert hub.clients.find(newer.id) is None
        with pytest.raises(TooManyClients):
            hub.connect(ClientType.WEBSOCKET)
        assert hub.clients.find(polling.id) is polling

    async def test_attach_and_detach_client(self, hub: ExecutorStreamer) -> None:
        """The original attach/detach: the client is listed with its filters, then gone."""
        await hub.create_stream("wf-1")
        client = hub.connect(ClientType.WEBSOCKET)
        await hub.attach_client("wf-1", client, filters=[{"eventTypes": ["STATUS"]}])
        session = hub.get_stream("wf-1")
        assert session is not None
        [info] = session.clients
        assert (info.id, info.type, info.is_active) == (client.id, ClientType.WEBSOCKET, True)
        assert info.filters[0].event_types == ["STATUS"]
        await hub.detach_client("wf-1", client.id)
        session = hub.get_stream("wf-1")
        assert session is not None and session.clients == []
