"""Subscribing (docs/protocol.md): resume without gap or duplicate, recovery, slow consumers."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from executor_streamer import (
    ExecutorStreamer,
    InvalidInput,
    SlowConsumer,
    StreamFilter,
    StreamNotFound,
)
from executor_streamer.core.subscription import (
    CloseReason,
    ReplayBatch,
    Subscription,
    SubscriptionItem,
)
from executor_streamer.history.records import EventRecord

from ..conftest import HubFactory, drain_events, seqs
from ..history.test_contract import record


async def publish(hub: ExecutorStreamer, count: int, session: str = "wf-1") -> None:
    for i in range(count):
        if i % 3 == 0:
            await hub.publisher.publish_reasoning(session, f"t{i}", 0.5, "p")
        else:
            await hub.publisher.publish_status(session, "n", str(i))


class TestResume:
    async def test_live_only_without_since(self, hub: ExecutorStreamer) -> None:
        """Without a resume position only events published afterwards arrive."""
        await publish(hub, 3)
        async with hub.subscribe("wf-1") as sub:
            assert sub.recovered and sub.last_seq == 3
            await publish(hub, 2)
            assert seqs(drain_events(sub)) == [4, 5]

    @pytest.mark.parametrize("since", [0, 1, 4, 5])
    async def test_history_then_live(self, hub: ExecutorStreamer, since: int) -> None:
        """With since=N every retained event after N comes first, then live ones."""
        await publish(hub, 5)
        async with hub.subscribe("wf-1", since=since) as sub:
            assert sub.recovered
            await publish(hub, 2)
            assert seqs(drain_events(sub)) == list(range(since + 1, 8))

    async def test_filters_apply_to_history_and_live(self, hub: ExecutorStreamer) -> None:
        """The same filters select from resumed history and from live events."""
        await publish(hub, 6)
        only_reasoning = [StreamFilter(event_types=["REASONING"])]
        async with hub.subscribe("wf-1", since=0, filters=only_reasoning) as sub:
            await publish(hub, 6)
            assert seqs(drain_events(sub)) == [1, 4, 7, 10]

    async def test_dict_filters_and_any_of_semantics(self, hub: ExecutorStreamer) -> None:
        """Filters may be wire dicts; an event matching any one filter is delivered."""
        await publish(hub, 6)
        filters = [{"eventTypes": ["REASONING"]}, {"eventTypes": ["STATUS"], "sessionIds": ["x"]}]
        async with hub.subscribe("wf-1", since=0, filters=filters) as sub:
            assert seqs(drain_events(sub)) == [1, 4]

    async def test_future_since_means_another_epoch(self, hub: ExecutorStreamer) -> None:
        """A since beyond the stream's last seq gets everything held and recovered=False."""
        await publish(hub, 3)
        async with hub.subscribe("wf-1", since=99) as sub:
            assert not sub.recovered
            assert seqs(drain_events(sub)) == [1, 2, 3]

    async def test_other_epoch_gets_full_replay(self, hub: ExecutorStreamer) -> None:
        """Resuming with another epoch replays all of history, recovered=False."""
        await publish(hub, 3)
        async with hub.subscribe("wf-1", since=2, epoch="old-epoch") as sub:
            assert not sub.recovered and sub.epoch != "old-epoch"
            assert seqs(drain_events(sub)) == [1, 2, 3]
        epoch = hub.streams.resolve("wf-1").epoch
        async with hub.subscribe("wf-1", since=2, epoch=epoch) as sub:
            assert sub.recovered
            assert seqs(drain_events(sub)) == [3]

    async def test_trimmed_history_is_not_recovered(self, make_hub: HubFactory) -> None:
        """If events after since were trimmed, recovered=False and what is held arrives."""
        hub = await make_hub(default_stream_config={"max_history_size": 3})
        await publish(hub, 6)
        async with hub.subscribe("wf-1", since=1) as sub:
            assert not sub.recovered and sub.first_retained_seq == 4
            assert seqs(drain_events(sub)) == [4, 5, 6]
        async with hub.subscribe("wf-1", since=3) as sub:
            assert sub.recovered
            assert seqs(drain_events(sub)) == [4, 5, 6]

    async def test_cleared_history_is_not_recovered(self, hub: ExecutorStreamer) -> None:
        """After clear_history a resume from before the clear is not recovered."""
        await publish(hub, 3)
        assert await hub.history.clear_history("wf-1") == 3
        async with hub.subscribe("wf-1", since=1) as sub:
            assert not sub.recovered
            assert drain_events(sub) == []
        async with hub.subscribe("wf-1", since=3) as sub:
            assert sub.recovered

    async def test_closed_stream_gives_history_then_ends(self, hub: ExecutorStreamer) -> None:
        """Subscribing to a closed stream hands out the history asked for, then ends."""
        await publish(hub, 3)
        await hub.destroy_stream("wf-1")
        async with hub.subscribe("wf-1", since=1) as sub:
            assert [e.seq async for e in sub] == [2, 3]
            assert sub.close_reason == "STREAM_CLOSED"

    async def test_stream_default_filters(self, hub: ExecutorStreamer) -> None:
        """A stream's eventFilters apply to subscribers that bring no filters of their own."""
        await hub.create_stream("wf-1", config={"eventFilters": [{"eventTypes": ["STATUS"]}]})
        await publish(hub, 4)
        async with hub.subscribe("wf-1", since=0) as sub:
            assert seqs(drain_events(sub)) == [2, 3]
        async with hub.subscribe("wf-1", since=0, filters=[]) as sub:
            assert seqs(drain_events(sub)) == [1, 2, 3, 4]

    async def test_resume_while_publishing(self, hub: ExecutorStreamer) -> None:
        """Subscribing mid-burst yields every event after since exactly once, in order."""
        await publish(hub, 50)

        async def burst() -> None:
            for i in range(300):
                await hub.publisher.publish_status("wf-1", "b", str(i))
                if i % 7 == 0:
                    await asyncio.sleep(0)

        publisher = asyncio.create_task(burst())
        await asyncio.sleep(0)
        received = []
        async with hub.subscribe("wf-1", since=20) as sub:
            await publisher
            async for event in sub:
                received.append(event.seq)
                if event.seq == 350:
                    break
        assert received == list(range(21, 351))


class TestDelivery:
    async def test_iteration_waits_for_events(self, hub: ExecutorStreamer) -> None:
        """An idle subscriber waits, and wakes when an event is published."""
        await hub.create_stream("wf-1")
        async with hub.subscribe("wf-1") as sub:
            waiter = asyncio.create_task(anext(aiter(sub)))
            await asyncio.sleep(0)
            assert not waiter.done()
            await hub.publisher.publish_status("wf-1", "a", "b")
            assert (await waiter).seq == 1

    async def test_set_filters_changes_what_arrives(self, hub: ExecutorStreamer) -> None:
        """New filters apply to events published from then on."""
        await hub.create_stream("wf-1")
        async with hub.subscribe("wf-1") as sub:
            await publish(hub, 3)
            sub.set_filters([StreamFilter(event_types=["REASONING"])])
            await publish(hub, 3)
            assert seqs(drain_events(sub)) == [1, 2, 3, 4]

    async def test_slow_consumer_is_dropped_and_resumes_without_loss(
        self, make_hub: HubFactory
    ) -> None:
        """Overflowing bufferSize ends the subscription with SlowConsumer at the last
        delivered seq; the others keep everything, and resuming from there loses nothing."""
        hub = await make_hub(default_stream_config={"buffer_size": 5})
        await hub.create_stream("wf-1")
        slow = await hub.open_subscription("wf-1")
        fast = await hub.open_subscription("wf-1")
        received = []
        for i in range(12):
            await hub.publisher.publish_status("wf-1", "n", str(i))
            received += seqs(drain_events(fast))
        assert received == list(range(1, 13)) and not fast.closed
        assert slow.close_reason == "SLOW_CONSUMER"
        got = []
        with pytest.raises(SlowConsumer) as caught:
            async for event in slow:
                got.append(event.seq)
        assert got == [1, 2, 3, 4, 5] and caught.value.last_seq == 5
        assert hub.counters.slow_consumers == 1
        async with hub.subscribe("wf-1", since=caught.value.last_seq) as resumed:
            assert resumed.recovered
            assert seqs(drain_events(resumed)) == list(range(6, 13))

    async def test_resumed_history_does_not_count_against_the_buffer(
        self, make_hub: HubFactory
    ) -> None:
        """A resume longer than bufferSize is not a slow consumer: only live events that
        wait count against the bound."""
        hub = await make_hub(default_stream_config={"buffer_size": 5})
        await publish(hub, 50)
        async with hub.subscribe("wf-1", since=0) as sub:
            await publish(hub, 3)
            assert not sub.closed
            assert seqs(drain_events(sub)) == list(range(1, 54))

    async def test_filtered_events_do_not_fill_the_queue(self, make_hub: HubFactory) -> None:
        """Only events that pass the filters count against the buffer."""
        hub = await make_hub(default_stream_config={"buffer_size": 2})
        await hub.create_stream("wf-1")
        async with hub.subscribe("wf-1", filters=[{"eventTypes": ["ERROR"]}]) as sub:
            await publish(hub, 20)
            assert not sub.closed

    async def test_hub_stop_ends_subscriptions(self, make_hub: HubFactory) -> None:
        """Stopping the hub ends every subscription with SHUTDOWN."""
        hub = await make_hub()
        await hub.create_stream("wf-1")
        sub = await hub.open_subscription("wf-1")
        await hub.stop()
        assert sub.close_reason == "SHUTDOWN"
        assert [e async for e in sub] == []

    async def test_stop_lets_publishes_in_progress_finish(self) -> None:
        """A publish that is storing when stop() begins completes and is acknowledged;
        one that arrives after is refused."""
        from executor_streamer import HubNotRunning

        from ..conftest import YieldingHistory

        storage = YieldingHistory(5)
        hub = ExecutorStreamer(storage=storage)
        await hub.start()
        await hub.create_stream("wf-1")
        in_flight = asyncio.create_task(hub.publisher.publish_status("wf-1", "a", "b"))
        await asyncio.sleep(0)  # the publish now holds the lock, inside append
        stopping = asyncio.create_task(hub.stop())
        await asyncio.sleep(0)
        with pytest.raises(HubNotRunning):
            await hub.publisher.publish_status("wf-1", "a", "late")
        assert (await in_flight).seq == 1
        await stopping
        with pytest.raises(HubNotRunning):
            await hub.start()

    async def test_failed_resume_leaves_no_subscription(self, hub: ExecutorStreamer) -> None:
        """If reading history fails, the half-made subscription is removed."""
        await publish(hub, 2)

        async def broken(*args: object) -> None:
            raise OSError("disk gone")

        hub.storage.read_range = broken  # type: ignore[method-assign, assignment]
        with pytest.raises(OSError):
            await hub.open_subscription("wf-1", since=0)
        assert hub.streams.resolve("wf-1").subscriptions == set()

    async def test_client_counts_received_events(self, hub: ExecutorStreamer) -> None:
        """A client's eventsReceived counts what its subscriptions handed out."""
        from executor_streamer import ClientType

        client = hub.connect(ClientType.WEBSOCKET)
        await publish(hub, 4)
        sub = await hub.open_subscription("wf-1", since=0, client=client)
        drain_events(sub)
        assert client.events_received == 4


class TestBadInput:
    async def test_unknown_stream(self, hub: ExecutorStreamer) -> None:
        """Subscribing to a stream that does not exist is StreamNotFound."""
        with pytest.raises(StreamNotFound):
            await hub.open_subscription("nope")

    @pytest.mark.parametrize("since", [-1, "3", 1.5, True])
    async def test_bad_since(self, hub: ExecutorStreamer, since: object) -> None:
        """since must be a non-negative integer."""
        await hub.create_stream("wf-1")
        with pytest.raises(InvalidInput):
            await hub.open_subscription("wf-1", since=since)  # type: ignore[arg-type]
        assert not hub.streams.resolve("wf-1").subscriptions

    async def test_too_many_or_bad_filters(self, make_hub: HubFactory) -> None:
        """More than maxFilters, or a malformed filter, is refused with its path."""
        hub = await make_hub(limits={"max_filters": 2})
        await hub.create_stream("wf-1")
        with pytest.raises(InvalidInput, match="at most 2"):
            await hub.open_subscription("wf-1", filters=[{}, {}, {}])
        with pytest.raises(InvalidInput) as caught:
            await hub.open_subscription("wf-1", filters=[{"eventTypes": ["NOPE"]}])
        assert caught.value.errors[0].path == "filters[0].eventTypes[0]"


class TestTransportHooks:
    async def test_on_ready_fires_for_items_and_close(self, hub: ExecutorStreamer) -> None:
        """on_ready is called when events arrive to an empty queue (a consumer that has
        not drained yet was told already) and when the subscription closes."""
        await hub.create_stream("wf-1")
        sub = await hub.open_subscription("wf-1")
        calls: list[str | None] = []
        sub.on_ready = lambda s: calls.append(s.close_reason)
        await publish(hub, 2)
        assert calls == [None]
        sub.drain()
        await publish(hub, 1)
        await hub.destroy_stream("wf-1")
        assert calls == [None, None, "STREAM_CLOSED"]

    async def test_drain_with_limit_and_resume_position(self, hub: ExecutorStreamer) -> None:
        """drain(limit) takes at most limit items; resume_position skips filtered events
        only once nothing is left queued."""
        await publish(hub, 9)  # reasoning at seqs 1, 4, 7
        async with hub.subscribe("wf-1", since=0, filters=[{"eventTypes": ["STATUS"]}]) as sub:
            await hub.publisher.publish_reasoning("wf-1", "x", 0.5, "p")  # seq 10, filtered
            assert [i.seq for i in sub.drain(4)] == [2, 3, 5, 6]  # type: ignore[union-attr]
            assert sub.resume_position == 6
            assert [i.seq for i in sub.drain(4)] == [8, 9]  # type: ignore[union-attr]
            assert sub.resume_position == 10

    async def test_client_disconnect_hook(self, hub: ExecutorStreamer) -> None:
        """A transport learns why the hub ended its client."""
        from executor_streamer import ClientType, CloseReason

        client = hub.connect(ClientType.WEBSOCKET)
        reasons: list[CloseReason] = []
        client.on_disconnect = reasons.append
        hub.disconnect(client.id)
        assert reasons == [CloseReason.DISCONNECTED]


def queue(buffer_size: int = 10, position: int = 0) -> Subscription:
    sub = Subscription("s1", "wf-1", None, buffer_size)
    sub.begin(0, position)
    return sub


def seqs_of(items: Sequence[SubscriptionItem] | None) -> list[int | str]:
    assert items is not None
    return [i.seq if isinstance(i, EventRecord) else "replay" for i in items]


class TestQueue:
    """The subscription's queue as transports drain it on every flush."""

    def test_each_seq_once_in_order(self) -> None:
        """A push of new, unfiltered events that fit is taken whole; one that repeats
        seqs goes event by event: either way each seq is queued once, in order."""
        sub = queue()
        sub.push([record(1), record(2)])
        sub.push([record(2), record(3)])
        sub.push([record(4)])
        assert seqs_of(sub.drain_live()) == [1, 2, 3, 4]
        assert sub.delivered_seq == 4

    def test_a_push_past_the_buffer_closes_slow_consumer(self) -> None:
        """A push that would overflow queues what fits, then closes the subscription."""
        sub = queue(buffer_size=3)
        sub.push([record(1), record(2)])
        sub.push([record(3), record(4)])
        assert sub.close_reason is CloseReason.SLOW_CONSUMER
        assert seqs_of(sub.drain_records()) == [1, 2, 3]

    def test_resumed_history_comes_first(self) -> None:
        sub = queue(position=2)
        sub.add_backlog([record(1), record(2)])
        sub.push([record(3)])
        assert seqs_of(sub.drain_live()) == [1, 2, 3] and sub.pending == 0

    def test_drain_live_defers_to_drain_while_a_replay_is_queued(self) -> None:
        """With a replay batch queued, drain_live takes nothing and drain gives the batch
        in its place; once it is taken, by any of drain, drain(limit) or next_item,
        drain_live takes events again."""
        sub = queue()
        sub.push([record(1)])
        sub.push_replay([record(1)])
        sub.push([record(2)])
        assert sub.drain_live() is None
        assert seqs_of(sub.drain()) == [1, "replay", 2]
        assert seqs_of(sub.drain_live()) == []

        sub.push([record(3)])
        sub.push_replay([record(1)])
        assert seqs_of(sub.drain(1)) == [3]
        assert sub.drain_live() is None  # the batch is still queued
        assert seqs_of(sub.drain(1)) == ["replay"]
        sub.push([record(4)])
        assert seqs_of(sub.drain_live()) == [4]

    async def test_next_item_takes_a_replay_too(self) -> None:
        sub = queue()
        sub.push_replay([record(1)])
        sub.push([record(2)])
        assert isinstance(await sub.next_item(), ReplayBatch)
        assert seqs_of(sub.drain_live()) == [2]

    def test_drain_records_expands_replays_in_place(self) -> None:
        sub = queue()
        sub.push([record(2)])
        sub.push_replay([record(1), record(2)])
        sub.push([record(3)])
        assert seqs_of(sub.drain_records()) == [2, 1, 2, 3]


class TestQueuedBytes:
    @given(
        operations=st.lists(
            st.one_of(
                st.tuples(st.just("push"), st.integers(1, 4), st.booleans()),
                st.tuples(st.just("replay"), st.integers(0, 3), st.booleans()),
                st.tuples(st.just("drain_live"), st.just(0), st.booleans()),
                st.tuples(st.just("drain"), st.integers(1, 4), st.booleans()),
                st.tuples(st.just("next"), st.just(0), st.booleans()),
            ),
            max_size=30,
        ),
        budget=st.integers(200, 3000),
    )
    def test_the_running_count_equals_what_is_queued(
        self, operations: list[tuple[str, int, bool]], budget: int
    ) -> None:
        """``queued_bytes``, kept up as items come and go, always equals the payloads of
        the live events and replays queued, counted the slow way; past the budget the
        subscription ends as a slow consumer."""

        async def run() -> None:
            sub = Subscription("s1", "wf-1", None, 1000, max_queued_bytes=budget)
            filtered = Subscription(
                "s1", "wf-1", [StreamFilter(event_types=["ERROR"])], 1000, max_queued_bytes=budget
            )
            seq = 0
            for kind, count, error in operations:
                for target in (sub, filtered):
                    if kind == "push":
                        batch = [
                            record(seq + i, "ERROR" if error else "STATUS")
                            for i in range(1, count + 1)
                        ]
                        target.push(batch)
                    elif kind == "replay":
                        target.push_replay([record(i + 1) for i in range(count)])
                    elif kind == "drain_live":
                        target.drain_live()
                    elif kind == "drain":
                        target.drain(count)
                    elif target.pending and not target._backlog:
                        await target.next_item()
                    queued = sum(_payloads(item) for item in target._queue)
                    assert target.queued_bytes == queued
                    if queued > budget:
                        raise AssertionError("over budget and still open")
                if kind == "push":
                    seq += count

        asyncio.run(run())


def _payloads(item: SubscriptionItem) -> int:
    records = [item] if isinstance(item, EventRecord) else item.records
    return sum(len(r.payload) for r in records)
