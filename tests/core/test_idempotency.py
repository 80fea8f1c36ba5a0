"""The results kept for idempotency keys (core/idempotency.py): what they hold is counted
exactly (against a model over random calls) and close to what they really cost, and the
memory budget counts and expires them."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from executor_streamer import (
    ExecutorStreamer,
    ExecutorStreamerConfig,
    IdempotencyKeyReused,
    StreamEventType,
)
from executor_streamer.core.idempotency import (
    KEPT_SECONDS,
    KEY_OVERHEAD,
    RECORD_OVERHEAD,
    RecentPublishes,
)
from executor_streamer.history.records import EventRecord

from ..conftest import HubFactory

STATUS = {"type": "STATUS", "data": {"statusType": "x", "status": "y"}}


def records(count: int, size: int) -> list[EventRecord]:
    return [EventRecord.stored(n + 1, StreamEventType.STATUS, b"x" * size) for n in range(count)]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


KEYS = [("owner", "wf", f"k{n}") for n in range(4)]
call = st.one_of(
    st.tuples(
        st.just("publish"),
        st.sampled_from(KEYS),
        st.sampled_from(["p1", "p2"]),
        st.integers(0, 3),  # events
        st.integers(0, 50),  # bytes each
        st.booleans(),  # fails
    ),
    st.tuples(st.just("wait"), st.floats(0, 200)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(call, max_size=40), st.integers(1, 3))
async def test_what_is_held_is_what_a_plain_model_holds(
    calls: list[tuple[object, ...]], max_keys: int
) -> None:
    """``held_bytes`` is kept as calls come; the model sums what each key remembers."""
    clock = Clock()
    recent = RecentPublishes(kept_seconds=300, max_keys=max_keys, clock=clock)
    model: dict[tuple[str, str, str], tuple[float, str, list[EventRecord]]] = {}
    for item in calls:
        if item[0] == "wait":
            clock.now += float(item[1])  # type: ignore[arg-type]
            continue
        _, key, print_, count, size, fails = item
        assert isinstance(key, tuple) and isinstance(print_, str)
        made = records(int(count), int(size))  # type: ignore[call-overload]
        model = {k: v for k, v in model.items() if v[0] > clock.now}
        known = model.get(key)

        async def publish(
            made: list[EventRecord] = made, fails: object = fails
        ) -> list[EventRecord]:
            if fails:
                raise RuntimeError("not stored")
            return made

        if known is not None and known[1] != print_:
            with pytest.raises(IdempotencyKeyReused):
                await recent.run(key, print_, publish)
        elif known is not None:
            assert await recent.run(key, print_, publish) == known[2]
        elif fails:
            with pytest.raises(RuntimeError):
                await recent.run(key, print_, publish)
            while model and len(model) >= max_keys:  # room was made before it failed
                del model[next(iter(model))]
        else:
            assert await recent.run(key, print_, publish) == made
            model[key] = (clock.now + 300, print_, made)
            while len(model) > max_keys:
                del model[next(iter(model))]
        expected = sum(
            KEY_OVERHEAD + sum(len(r.payload) + RECORD_OVERHEAD for r in held[2])
            for held in model.values()
        )
        assert recent.held_bytes == expected, item
    clock.now += 301
    recent.expire()
    assert recent.held_bytes == 0


def test_what_is_counted_is_close_to_what_a_result_costs() -> None:
    """KEY_OVERHEAD and RECORD_OVERHEAD against tracemalloc: 2,000 keyed publishes hold
    that much more than 2,000 without keys."""

    async def per_publish(keyed: bool) -> tuple[float, int]:
        hub = ExecutorStreamer(ExecutorStreamerConfig())
        await hub.start()
        try:
            for n in range(50):  # warm caches before measuring
                await hub.publisher.publish_wire("s", STATUS, f"warm-{n}" if keyed else None)
            gc.collect()
            tracemalloc.start()
            before = tracemalloc.take_snapshot()
            for n in range(2000):
                await hub.publisher.publish_wire("s", STATUS, f"key-{n:06d}" if keyed else None)
            gc.collect()
            after = tracemalloc.take_snapshot()
            tracemalloc.stop()
            held = hub.memory.recent.held_bytes
            return sum(d.size_diff for d in after.compare_to(before, "filename")) / 2000, held
        finally:
            await hub.stop()

    keyed, held = asyncio.run(per_publish(True))
    plain, _ = asyncio.run(per_publish(False))
    counted = held / 2050  # the warm-up keys are held too
    assert 0.7 * (keyed - plain) <= counted <= 1.3 * (keyed - plain), (keyed - plain, counted)


async def test_the_budget_counts_kept_results_and_lets_them_go(make_hub: HubFactory) -> None:
    hub = await make_hub()
    before = hub.memory.used
    for n in range(10):
        await hub.publisher.publish_wire("s", STATUS, f"k{n}")
    held = hub.memory.recent.held_bytes
    assert held >= 10 * (KEY_OVERHEAD + RECORD_OVERHEAD)
    assert hub.memory.used >= before + held
    # Five minutes on, the budget's once-a-second pass forgets them with no publish.
    clock = Clock()
    clock.now = KEPT_SECONDS + 1e9
    hub.memory.recent.clock = clock
    await hub.memory.maintain()
    assert hub.memory.recent.held_bytes == 0
