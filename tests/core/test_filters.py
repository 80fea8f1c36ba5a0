"""Compiled filters (docs/protocol.md)."""

from __future__ import annotations

from datetime import timedelta

from executor_streamer.core.filters import compile_filters
from executor_streamer.history.records import EventRecord, history_predicate
from executor_streamer.types import (
    HistoryFilter,
    StreamEvent,
    StreamEventType,
    StreamFilter,
    TimeRange,
)

from ..history.test_contract import T0, record


def event(seq: int, kind: str = "STATUS", text: str = "") -> EventRecord:
    """The record as storage hands it back: filters must parse the event when they need
    it (live records, which carry theirs, are covered in test_properties)."""
    live = record(seq, kind, text)
    return EventRecord.stored(live.seq, live.type, live.payload)


class TestCompileFilters:
    def test_no_filters_match_everything(self) -> None:
        """No filter list, or an empty one, means every event."""
        assert compile_filters(None) is None and compile_filters([]) is None

    def test_fields_inside_a_filter_all_match(self) -> None:
        """Within one filter every field must match."""
        match = compile_filters([StreamFilter(event_types=["STATUS"], session_ids=["wf-1"])])
        assert match is not None
        assert match(event(1)) and not match(event(2, "REASONING"))
        other = compile_filters([StreamFilter(event_types=["STATUS"], session_ids=["wf-2"])])
        assert other is not None and not other(event(1))

    def test_any_filter_in_a_list_matches(self) -> None:
        """A list of filters matches if any one does."""
        match = compile_filters(
            [StreamFilter(event_types=["ERROR"]), StreamFilter(event_types=["REASONING"])]
        )
        assert match is not None
        assert match(event(1, "REASONING")) and not match(event(1))

    def test_empty_type_list_matches_nothing(self) -> None:
        """eventTypes: [] is a filter that nothing passes."""
        match = compile_filters([StreamFilter(event_types=[])])
        assert match is not None and not match(event(1))

    def test_a_type_filter_parses_nothing(self) -> None:
        """Filtering stored history by type reads the record's type, never its payload:
        a replay filtered by type costs what an unfiltered one does."""
        match = compile_filters([StreamFilter(event_types=["STATUS"])])
        assert match is not None
        unparsable = EventRecord.stored(1, StreamEventType.STATUS, b"not json")
        assert match(unparsable)

    def test_time_range_is_inclusive(self) -> None:
        """A time range includes its ends."""
        span = TimeRange(start=T0 + timedelta(seconds=2), end=T0 + timedelta(seconds=3))
        match = compile_filters([StreamFilter(time_range=span)])
        assert match is not None
        assert [s for s in range(1, 5) if match(event(s))] == [2, 3]

    def test_custom_filter_that_raises_only_excludes(self) -> None:
        """A custom filter that raises rejects the event instead of breaking delivery."""

        def broken(_: StreamEvent) -> bool:
            raise RuntimeError("bug")

        match = compile_filters([StreamFilter(custom_filter=broken)])
        assert match is not None and match(event(1)) is False
        seq_two = compile_filters([StreamFilter(custom_filter=lambda e: e.seq == 2)])
        assert seq_two is not None and seq_two(event(2)) and not seq_two(event(3))


class TestHistoryPredicate:
    def test_no_constraints(self) -> None:
        """Paging fields and time bounds (answered by position) need no predicate."""
        assert history_predicate(HistoryFilter(limit=5, offset=2, after_seq=3)) is None
        bounds = HistoryFilter(start_time=T0, end_time=T0 + timedelta(seconds=3))
        assert history_predicate(bounds) is None

    def test_search_text_ignores_case(self) -> None:
        """searchText matches the data's JSON text case-insensitively."""
        match = history_predicate(HistoryFilter(search_text="LOGIN"))
        assert match is not None
        assert match(event(1, text="the login form")) and not match(event(2, text="logout"))
