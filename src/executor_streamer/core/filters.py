"""Filters compiled once into predicates (docs/protocol.md).

A list of filters matches an event if any filter matches; the fields inside one
filter must all match; no filter at all matches everything. An empty list inside a
filter (``eventTypes: []``) matches nothing, as the words say.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import structlog

from ..history.records import EventRecord, Predicate
from ..types.events import StreamEvent
from ..types.filters import StreamFilter
from .expressions import compile_expression

_log = structlog.get_logger("executor_streamer.filters")


def compile_filters(filters: Sequence[StreamFilter] | None) -> Predicate | None:
    """One predicate for ``filters``, or None when every event matches. Expressions are
    compiled here without a length limit: the hub checked them when it took the filters
    (:func:`check_expressions`)."""
    if not filters:
        return None
    predicates = [_compile_one(f) for f in filters]
    if len(predicates) == 1:
        return predicates[0]
    return lambda record: any(p(record) for p in predicates)


def _compile_one(spec: StreamFilter) -> Predicate:
    checks: list[Predicate] = []
    if spec.event_types is not None:
        types = frozenset(spec.event_types)
        checks.append(lambda r: r.type in types)
    if spec.session_ids is not None:
        sessions = frozenset(spec.session_ids)
        checks.append(lambda r: r.event.session_id in sessions)
    if spec.time_range is not None:
        start, end = spec.time_range.start, spec.time_range.end
        checks.append(lambda r: start <= r.event.timestamp <= end)
    if spec.expression is not None:
        checks.append(compile_expression(spec.expression, max_length=None).matches)
    if spec.custom_filter is not None:
        checks.append(_guarded(spec.custom_filter))
    if not checks:
        return lambda _record: True
    if len(checks) == 1:
        return checks[0]
    return lambda record: all(check(record) for check in checks)


def check_expressions(filters: Sequence[StreamFilter] | None, max_length: int | None) -> None:
    """Refuse a filter whose expression is over ``max_length`` or does not compile
    (:class:`~executor_streamer.errors.InvalidFilter`), before anything is subscribed."""
    for spec in filters or ():
        if spec.expression is not None:
            compile_expression(spec.expression, max_length)


def _guarded(custom: Callable[[StreamEvent], bool]) -> Predicate:
    # A user's callable runs inside fan-out: if it raises, the event does not match
    # that subscriber, and every other subscriber still gets it.
    def check(record: EventRecord) -> bool:
        event = record.event
        try:
            return bool(custom(event))
        except Exception:
            _log.warning("custom_filter_failed", event_id=event.id, exc_info=True)
            return False

    return check
