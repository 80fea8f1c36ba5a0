"""Memory history and the garbage collector."""

from __future__ import annotations

import gc
import sys

from executor_streamer.history import MemoryHistory
from executor_streamer.history.base import StreamWrite
from executor_streamer.history.memory import EVENT_OVERHEAD
from executor_streamer.types.enums import StreamEventType
from executor_streamer.types.streams import StreamConfig

from .test_contract import record

EVENTS = 5_000


async def test_retained_history_is_invisible_to_the_collector() -> None:
    """Thousands of retained events (each with data and metadata) add a handful of
    objects for the cyclic collector to walk, not several per event: collection pauses
    do not grow with history."""
    history = MemoryHistory()
    await history.open_stream("s1", StreamConfig(max_history_size=EVENTS))
    gc.collect()
    before = len(gc.get_objects())
    for seq in range(1, EVENTS + 1):
        await history.write([StreamWrite("s1", [record(seq)])])
    gc.collect()
    assert len(gc.get_objects()) - before < 50
    assert len(await history.read_tail("s1", EVENTS)) == EVENTS


async def test_the_counted_overhead_is_what_an_event_costs() -> None:
    """The memory budget counts ``EVENT_OVERHEAD`` per retained event besides its
    payload: within a quarter of what the entry's objects take (the ring's slot too)."""
    history = MemoryHistory()
    await history.open_stream("s1", StreamConfig(max_history_size=EVENTS))
    await history.write([StreamWrite("s1", [record(seq) for seq in range(300, 400)])])
    entry = next(iter(history._streams["s1"].ring))  # one retained event
    seq, stamp, kind, payload, shot = entry
    measured = (
        sys.getsizeof(entry)
        + sys.getsizeof(seq)
        + sys.getsizeof(stamp)
        + sys.getsizeof(payload)
        - len(payload)
        + 8  # its slot in the ring's list
    )  # the type's text and None are shared by every event
    assert kind in {t.value for t in StreamEventType} and shot is None
    assert 0.75 * measured <= EVENT_OVERHEAD <= 1.25 * measured, measured
