"""Filters compiled once into predicates (DESIGN.md §5).

A list of filters matches an event if any filter matches; the fields inside one
filter must all match; no filter at all matches everything. An empty list inside a
filter (``eventTypes: []``) matches nothing, as the words say.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import structlog

from ..types.events import StreamEvent
from ..types.filters import HistoryFilter, StreamFilter

Predicate = Callable[[StreamEvent], bool]

_log = structlog.get_logger("executor_streamer.filters")


def compile_filters(filters: Sequence[StreamFilter] | None) -> Predicate | None:
    """One predicate for ``filters``, or None when every event matches."""
    if not filters:
        return None
    predicates = [_compile_one(f) for f in filters]
    if len(predicates) == 1:
        return predicates[0]
    return lambda event: any(p(event) for p in predicates)


def _compile_one(spec: StreamFilter) -> Predicate:
    checks: list[Predicate] = []
    if spec.event_types is not None:
        types = frozenset(spec.event_types)
        checks.append(lambda e: e.type in types)
    if spec.session_ids is not None:
        sessions = frozenset(spec.session_ids)
        checks.append(lambda e: e.session_id in sessions)
    if spec.time_range is not None:
        start, end = spec.time_range.start, spec.time_range.end
        checks.append(lambda e: start <= e.timestamp <= end)
    if spec.custom_filter is not None:
        checks.append(_guarded(spec.custom_filter))
    if not checks:
        return lambda _event: True
    if len(checks) == 1:
        return checks[0]
    return lambda event: all(check(event) for check in checks)


def _guarded(custom: Predicate) -> Predicate:
    # A user's callable runs inside fan-out: if it raises, the event does not match
    # that subscriber, and every other subscriber still gets it.
    def check(event: StreamEvent) -> bool:
        try:
            return bool(custom(event))
        except Exception:
            _log.warning("custom_filter_failed", event_id=event.id, exc_info=True)
            return False

    return check


def history_predicate(spec: HistoryFilter) -> Predicate | None:
    """The predicate of a history query, ignoring ``limit``, ``offset`` and ``after_seq``."""
    checks: list[Predicate] = []
    if spec.event_types is not None:
        types = frozenset(spec.event_types)
        checks.append(lambda e: e.type in types)
    if spec.start_time is not None:
        start = spec.start_time
        checks.append(lambda e: e.timestamp >= start)
    if spec.end_time is not None:
        end = spec.end_time
        checks.append(lambda e: e.timestamp <= end)
    if spec.search_text is not None:
        needle = spec.search_text.casefold()
        checks.append(lambda e: needle in data_text(e).casefold())
    if not checks:
        return None
    return lambda event: all(check(event) for check in checks)


def data_text(event: StreamEvent) -> str:
    """The event's ``data`` as the JSON text a search matches against."""
    return event.data.model_dump_json(by_alias=True, exclude_none=True)
