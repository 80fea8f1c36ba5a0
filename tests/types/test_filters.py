"""StreamFilter and HistoryFilter models (docs/protocol.md)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from executor_streamer.types import HistoryFilter, StreamFilter


class TestHistoryFilter:
    def test_defaults(self) -> None:
        """A bare query returns the first 100 events from the start."""
        spec = HistoryFilter()
        assert (spec.limit, spec.offset, spec.after_seq) == (100, 0, None)

    @pytest.mark.parametrize(
        "raw",
        [
            {"limit": 0},
            {"limit": 10_001},
            {"offset": -1},
            {"afterSeq": -1},
            {"eventTypes": ["NOPE"]},
            {"startTime": "2026-01-02T00:00:00Z", "endTime": "2026-01-01T00:00:00Z"},
            {"searchText": ""},
        ],
    )
    def test_invalid_queries_are_refused(self, raw: dict[str, object]) -> None:
        """Limits, offsets, types and time order are checked."""
        with pytest.raises(ValidationError):
            HistoryFilter.model_validate(raw)


class TestStreamFilter:
    def test_time_range_must_be_ordered(self) -> None:
        """A time range whose start is after its end is refused."""
        with pytest.raises(ValidationError, match="start must not be after end"):
            StreamFilter.model_validate(
                {"timeRange": {"start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"}}
            )

    def test_custom_filter_is_never_serialized(self) -> None:
        """customFilter is Python-only and stays out of the wire form."""
        spec = StreamFilter(event_types=["STATUS"], custom_filter=lambda e: True)
        assert spec.to_wire() == {"eventTypes": ["STATUS"]}
