"""Property tests: the resume guarantee and the filters, under random interleavings.

The memory backend never suspends, so on it a subscribe can never interleave with a
publish. ``YieldingHistory`` is the same backend yielding to the event loop inside
its appends and reads, as a durable backend does; hypothesis picks how often, and
interleaves publishes, subscribes and consumers as it likes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from executor_streamer import ExecutorStreamer, ExecutorStreamerConfig, InvalidInput, StreamFilter
from executor_streamer.core.filters import compile_filters
from executor_streamer.core.subscription import Subscription
from executor_streamer.history.records import EventRecord
from executor_streamer.types import StreamEvent, StreamEventType, TimeRange

from ..conftest import YieldingHistory
from ..history.test_contract import T0, record

TYPES = ["STATUS", "REASONING", "ERROR"]
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclass
class Publish:
    types: list[str]


@dataclass
class Subscribe:
    since: int | None
    types: list[str] | None


@dataclass
class Pause:
    ticks: int


operation = st.one_of(
    st.builds(Publish, st.lists(st.sampled_from(TYPES), min_size=1, max_size=4)),
    st.builds(
        Subscribe,
        st.one_of(st.none(), st.integers(0, 30)),
        st.one_of(st.none(), st.lists(st.sampled_from(TYPES), min_size=1, max_size=2, unique=True)),
    ),
    st.builds(Pause, st.integers(0, 3)),
)


def event_input(kind: str, n: int) -> dict[str, object]:
    data: dict[str, dict[str, object]] = {
        "STATUS": {"statusType": "n", "status": str(n)},
        "REASONING": {"thought": str(n), "confidence": 0.5, "reasoningType": "p"},
        "ERROR": {"code": "E", "message": str(n)},
    }
    return {"type": kind, "data": data[kind]}


async def run_program(
    program: list[Publish | Subscribe | Pause], yields: int, history_size: int
) -> tuple[list[StreamEvent], int, list[tuple[Subscribe, Subscription, list[int]]]]:
    """Run ``program``; returns what history holds, the last seq, and what each
    subscriber received."""
    config = ExecutorStreamerConfig().with_overrides(
        {
            "defaultStreamConfig": {"maxHistorySize": history_size, "bufferSize": 100_000},
            "limits": {"maxBufferSize": 100_000},
        }
    )
    hub = ExecutorStreamer(config, storage=YieldingHistory(yields))
    await hub.start()
    await hub.create_stream("wf-1")
    tasks: list[asyncio.Task[object]] = []
    subs: list[tuple[Subscribe, asyncio.Task[Subscription]]] = []
    for step, op in enumerate(program):
        if isinstance(op, Publish):
            batch = [event_input(kind, step) for kind in op.types]
            tasks.append(asyncio.create_task(hub.publisher.publish_batch("wf-1", batch)))
        elif isinstance(op, Subscribe):
            filters = None if op.types is None else [{"eventTypes": op.types}]
            task = asyncio.create_task(
                hub.open_subscription("wf-1", filters=filters, since=op.since)
            )
            subs.append((op, task))
        else:
            for _ in range(op.ticks):
                await asyncio.sleep(0)
    await asyncio.gather(*tasks, *(t for _, t in subs))
    published = await hub.history.get_all_events("wf-1")
    last_seq = hub.streams.resolve("wf-1").last_seq
    results = []
    for op, task in subs:
        sub = task.result()
        await hub.destroy_stream("wf-1")  # ends every subscription once its queue is empty
        results.append((op, sub, [e.seq async for e in sub]))
    await hub.stop()
    return published, last_seq, results


@SETTINGS
@given(program=st.lists(operation, max_size=25), yields=st.integers(0, 3))
def test_resume_has_no_gap_and_no_duplicate(
    program: list[Publish | Subscribe | Pause], yields: int
) -> None:
    """Whatever the interleaving, a subscriber gets exactly the matching events after its
    resume point (or after it subscribed, if live-only), once each, in seq order."""
    published, _, results = asyncio.run(run_program(program, yields, history_size=10_000))
    for op, sub, got in results:
        assert (got, sub.recovered) == expected_delivery(published, op.since, op.types, sub)


def expected_delivery(
    published: list[StreamEvent], since: int | None, types: list[str] | None, sub: Subscription
) -> tuple[list[int], bool]:
    """What a subscriber that asked for ``since`` and ``types`` must get, with nothing
    trimmed, given where the stream was when it subscribed: every matching event after
    its resume point (or after it subscribed, if live-only; from the start if ``since``
    was past the stream's end), and whether the resume was complete."""
    if since is None or since > sub.last_seq:
        start = sub.last_seq if since is None else 0
    else:
        start = since
    seqs = [e.seq for e in published if e.seq > start and (types is None or e.type in types)]
    return seqs, since is None or since <= sub.last_seq


@SETTINGS
@given(
    program=st.lists(operation, max_size=25),
    yields=st.integers(0, 2),
    history_size=st.integers(1, 8),
)
def test_trimmed_resume_reports_what_it_lost(
    program: list[Publish | Subscribe | Pause], yields: int, history_size: int
) -> None:
    """With a tiny history, a resume never repeats an event, never delivers one its
    filters exclude, and says recovered=False exactly when events after since are gone."""
    _, last_seq, results = asyncio.run(run_program(program, yields, history_size))
    for op, sub, got in results:
        assert got == sorted(set(got))
        if op.since is None:
            assert all(seq > sub.last_seq for seq in got)
            if op.types is None:
                assert got == list(range(sub.last_seq + 1, last_seq + 1))
            continue
        start = op.since if op.since <= sub.last_seq else 0
        assert all(seq > start for seq in got)
        lost = sub.first_retained_seq > start + 1 and sub.last_seq > start
        assert sub.recovered == (not lost and op.since <= sub.last_seq)
        if op.types is None:
            # Live events are never lost to trimming; resumed ones are the retained suffix.
            resumed = [seq for seq in got if seq <= sub.last_seq]
            live = [seq for seq in got if seq > sub.last_seq]
            assert live == list(range(sub.last_seq + 1, last_seq + 1))
            if resumed:
                assert resumed == list(range(resumed[0], sub.last_seq + 1))
            if sub.recovered:
                assert resumed == list(range(start + 1, sub.last_seq + 1))


filter_spec = st.builds(
    StreamFilter,
    event_types=st.one_of(st.none(), st.lists(st.sampled_from(TYPES), max_size=3)),
    session_ids=st.one_of(st.none(), st.lists(st.sampled_from(["wf-1", "wf-2"]), max_size=2)),
    time_range=st.one_of(
        st.none(),
        st.tuples(st.integers(0, 10), st.integers(0, 10)).map(
            lambda ab: TimeRange(
                start=T0 + timedelta(seconds=min(ab)), end=T0 + timedelta(seconds=max(ab))
            )
        ),
    ),
)


def reference_match(filters: list[StreamFilter], event: StreamEvent) -> bool:
    if not filters:
        return True
    for f in filters:
        if f.event_types is not None and event.type not in f.event_types:
            continue
        if f.session_ids is not None and event.session_id not in f.session_ids:
            continue
        if f.time_range is not None and not (
            f.time_range.start <= event.timestamp <= f.time_range.end
        ):
            continue
        return True
    return False


@settings(max_examples=300, deadline=None)
@given(
    filters=st.lists(filter_spec, max_size=3),
    events=st.lists(st.tuples(st.integers(1, 10), st.sampled_from(TYPES)), max_size=10),
)
def test_compiled_filters_match_the_definition(
    filters: list[StreamFilter], events: list[tuple[int, str]]
) -> None:
    """The compiled predicate agrees with the any-of-all-of definition of docs/protocol.md."""
    predicate = compile_filters(filters)
    for seq, kind in events:
        live = record(seq, kind)
        stored = EventRecord.stored(live.seq, live.type, live.payload)
        for candidate in (live, stored):
            got = True if predicate is None else predicate(candidate)
            assert got == reference_match(filters, live.event)


@SETTINGS
@given(
    batches=st.lists(
        st.lists(st.tuples(st.sampled_from(TYPES), st.booleans()), min_size=1, max_size=5),
        max_size=8,
    )
)
def test_batches_are_all_or_nothing(batches: list[list[tuple[str, bool]]]) -> None:
    """A batch with any invalid event stores nothing; valid batches keep seqs contiguous."""

    async def scenario() -> None:
        hub = ExecutorStreamer()
        await hub.start()
        stored = 0
        for n, batch in enumerate(batches):
            items = [
                event_input(kind, n) if valid else {"type": kind, "data": {"bogus": 1}}
                for kind, valid in batch
            ]
            try:
                events = await hub.publisher.publish_batch("wf-1", items)
            except InvalidInput as exc:
                assert not all(valid for _, valid in batch)
                assert {e.index for e in exc.errors} == {
                    i for i, (_, valid) in enumerate(batch) if not valid
                }
            else:
                assert all(valid for _, valid in batch)
                assert [e.seq for e in events] == list(range(stored + 1, stored + 1 + len(batch)))
                stored += len(batch)
        if stored:
            page = await hub.history.get_all_events("wf-1")
            assert [e.seq for e in page] == list(range(1, stored + 1))
        await hub.stop()

    asyncio.run(scenario())


def test_event_types_cover_the_design() -> None:
    """The property tests draw from real event types."""
    assert set(TYPES) <= {t.value for t in StreamEventType}
