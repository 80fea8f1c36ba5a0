"""Memory history and the garbage collector."""

from __future__ import annotations

import gc

from executor_streamer.history import MemoryHistory
from executor_streamer.history.base import StreamWrite
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
