"""The ring buffer behind memory history."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from executor_streamer.history.ring import EventRing, StoredEvent, stored

from .test_contract import T0, record


def entry(seq: int) -> StoredEvent:
    return stored(record(seq), None)


class TestEventRing:
    def test_evicts_oldest_past_capacity(self) -> None:
        """Appending past capacity returns the evicted oldest record."""
        ring = EventRing(3)
        evicted = [ring.append(entry(i)) for i in range(1, 6)]
        assert [e[0] if e else None for e in evicted] == [None, None, None, 1, 2]
        assert [e[0] for e in ring] == [3, 4, 5]
        assert (ring.first_seq, ring.last_seq, len(ring)) == (3, 5, 3)

    def test_grows_storage_on_demand(self) -> None:
        """A large capacity is not reserved up front, and growth keeps order."""
        ring = EventRing(5000)
        for i in range(1, 2001):
            ring.append(entry(i))
        assert [e[0] for e in ring.slice(1995)] == [1996, 1997, 1998, 1999, 2000]

    def test_index_of_seq_and_time(self) -> None:
        """Positions are found by seq arithmetic and by bisection on time."""
        ring = EventRing(10)
        for i in range(1, 8):
            ring.append(entry(i))
        ring.pop_oldest()
        assert ring.index_of_seq(2) == 0 and ring.index_of_seq(5) == 3
        assert ring.index_of_seq(100) == 6 and ring.index_of_seq(-5) == 0
        assert ring.index_of_time(T0 + timedelta(seconds=4)) == 2
        assert ring.index_of_time(T0) == 0
        assert ring.index_of_time(T0 + timedelta(days=1)) == 6

    def test_resize_returns_what_no_longer_fits(self) -> None:
        """Shrinking drops the oldest records and returns them."""
        ring = EventRing(10)
        for i in range(1, 6):
            ring.append(entry(i))
        assert [e[0] for e in ring.resize(2)] == [1, 2, 3]
        assert [e[0] for e in ring] == [4, 5]

    def test_refuses_a_seq_that_does_not_follow(self) -> None:
        """Seqs in the ring must be contiguous."""
        ring = EventRing(3)
        ring.append(entry(1))
        with pytest.raises(ValueError):
            ring.append(entry(3))

    def test_empty(self) -> None:
        """An empty ring has no bounds."""
        ring = EventRing(3)
        assert (ring.first_seq, ring.last_seq, list(ring)) == (None, None, [])
        assert ring.index_of_seq(4) == 0


@given(
    capacity=st.integers(1, 40),
    appended=st.integers(0, 120),
    popped=st.integers(0, 10),
    start=st.integers(-3, 45),
    stop=st.integers(-3, 45),
)
def test_a_copy_is_what_a_slice_reads(
    capacity: int, appended: int, popped: int, start: int, stop: int
) -> None:
    """``copy`` (list slicing over the ring's storage, wrapped or not) against ``slice``
    (one position at a time)."""
    ring = EventRing(capacity)
    for seq in range(1, appended + 1):
        ring.append(entry(seq))
    for _ in range(min(popped, len(ring))):
        ring.pop_oldest()
    assert ring.copy(start, stop) == list(ring.slice(start, stop))
