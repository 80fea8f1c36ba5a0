"""Run analytics and dashboard widgets (docs/query.md, "Dashboards"), over the runs a
caller may watch.

Everything here is counted from events the backend returns for a search
(:meth:`RunSearch.every`): the types and times are pushed into the backend, the counting
is done here, the same on every backend.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import orjson

from ..config import WidgetConfig
from ..errors import ConfigError, InvalidFilter, InvalidInput, WidgetNotFound
from ..history.records import stamp_of
from ..history.search import millis_of
from ..security.scope import Scope
from ..types.base import format_timestamp
from ..types.enums import SessionStatus, StreamEventType
from .expressions import Expression, compile_expression
from .search import RunSearch
from .streams import Stream

Bucket = Literal["hour", "day"]
BUCKET_SECONDS = {"hour": 3600, "day": 86400}
MAX_BUCKETS = 1000
"""A range and bucket giving more buckets than this is refused (a year by hour is 8,760)."""
EARLIEST = datetime(1970, 1, 2, tzinfo=UTC)
LATEST = datetime(9998, 12, 31, tzinfo=UTC)
"""Analytics ranges stay within these, far from the ends of Python's dates (a default
start a day before ``endTime=0001-01-01`` was an OverflowError)."""
AT_ONCE = 2
"""Analytics computations a hub runs at the same time; more wait their turn. Each reads
many events (docs/query.md, "Costs and limits"): open dashboards must not take every
database connection and the event loop's time from the live streams."""
TOP_ROWS = 10
TABLE_ROWS = 50
WORKFLOW = "workflow"
OUTCOMES = {"COMPLETED": "completed", "FAILED": "failed", "CANCELLED": "cancelled"}
_COMMAND_ENDS = frozenset({StreamEventType.COMMAND_COMPLETED, StreamEventType.COMMAND_FAILED})


@dataclass(frozen=True, slots=True)
class Window:
    start: datetime
    end: datetime
    bucket: Bucket = "hour"

    @classmethod
    def of(cls, start: datetime | None, end: datetime | None, bucket: Bucket = "hour") -> Window:
        """``start``..``end``, by default the 24 hours before now (or before ``end``)."""
        for name, moment in (("startTime", start), ("endTime", end)):
            if moment is not None and not EARLIEST <= moment <= LATEST:
                raise InvalidInput.single(f"query.{name}", "must be between 1970 and 9998")
        end = end or datetime.now(UTC)
        start = start or end - timedelta(days=1)
        if start > end:
            raise InvalidInput.single("query.startTime", "must not be after endTime")
        if (end - start).total_seconds() / BUCKET_SECONDS[bucket] > MAX_BUCKETS:
            raise InvalidInput.single(
                "query.bucket", f"gives more than {MAX_BUCKETS} buckets: a shorter range or day"
            )
        return cls(start, end, bucket)

    def buckets(self) -> list[datetime]:
        """Bucket starts, aligned to the hour or the day (UTC), covering the window."""
        size = timedelta(seconds=BUCKET_SECONDS[self.bucket])
        first = self.start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        if self.bucket == "day":
            first = first.replace(hour=0)
        starts = []
        while first <= self.end:
            starts.append(first)
            first += size
        return starts

    def bucket_of(self, moment: datetime, starts: Sequence[datetime]) -> int:
        size = timedelta(seconds=BUCKET_SECONDS[self.bucket])
        return int((moment - starts[0]) // size)

    def holds(self, moment: datetime) -> bool:
        return self.start <= moment <= self.end


class RunAnalytics:
    def __init__(self, search: RunSearch, widgets: Sequence[WidgetConfig]) -> None:
        self._search = search
        self._turns = asyncio.Semaphore(AT_ONCE)
        self._widgets = list(widgets)
        self._filters = []
        for n, widget in enumerate(widgets):
            try:
                self._filters.append(compile_expression(widget.filter, max_length=None))
            except InvalidFilter as exc:  # the hub does not start with a broken dashboard
                raise ConfigError(f"viewer.dashboard.widgets[{n}].filter: {exc.message}") from None

    async def runs(self, scope: Scope, window: Window, pattern: str | None) -> dict[str, Any]:
        """``GET /api/analytics/runs``: outcomes, runs over time, failing commands, action
        durations and the slowest runs, over the runs active in ``window``."""
        async with self._turns:
            return await self._runs(scope, window, pattern)

    async def _runs(self, scope: Scope, window: Window, pattern: str | None) -> dict[str, Any]:
        visible = await self._search.streams_for(scope, pattern)
        active = [
            (s, whole)
            for s, whole in visible
            if s.created_at <= window.end and s.last_activity >= window.start
        ]
        if len(active) < len(visible):  # a stream list, not "every stream", to the backend
            active = [(s, False) for s, _ in active]
        streams = [s for s, _ in active]
        end_ms = millis_of(window.end)
        outcome: dict[str, tuple[str, datetime]] = {}  # stream id -> (outcome, when)
        actions: dict[tuple[str, str], str] = {}  # (stream id, command id) -> action
        ends: list[dict[str, Any]] = []
        # Newest first: a stream's first workflow STATUS met is its last one.
        types = frozenset({StreamEventType.STATUS, StreamEventType.COMMAND_STARTED, *_COMMAND_ENDS})
        async for record in self._search.every(active, types, None, end_ms):
            event = orjson.loads(record.payload)
            data = event["data"]
            if record.type is StreamEventType.STATUS:
                if data.get("statusType") == WORKFLOW and event["streamId"] not in outcome:
                    kind = OUTCOMES.get(str(data.get("status", "")).upper(), "")
                    outcome[event["streamId"]] = (kind, _moment(event["timestamp"]))
            elif record.type is StreamEventType.COMMAND_STARTED:
                actions[(event["streamId"], data.get("commandId", ""))] = str(data.get("action"))
            elif window.holds(_moment(event["timestamp"])):
                ends.append(event)
        return {
            "runs": _outcomes(streams, outcome),
            "series": _series(streams, outcome, window),
            "failingCommands": _failing(ends),
            "actions": _durations(ends, actions),
            "slowestRuns": _slowest(streams, outcome),
        }

    async def widget(
        self, scope: Scope, index: int, start: datetime | None, end: datetime | None
    ) -> dict[str, Any]:
        """``GET /api/analytics/widgets/{index}``: the widget's figure from ``start`` to
        ``end`` (by default the 24 hours before now), in the widget's own buckets."""
        if not 0 <= index < len(self._widgets):
            raise WidgetNotFound(
                f"no widget {index}: {len(self._widgets)} configured", {"index": index}
            )
        widget, expression = self._widgets[index], self._filters[index]
        window = Window.of(start, end, widget.bucket)
        async with self._turns:
            return await self._figure(scope, widget, expression, window)

    async def _figure(
        self, scope: Scope, widget: WidgetConfig, expression: Expression, window: Window
    ) -> dict[str, Any]:
        streams = await self._search.streams_for(scope, None)
        events = self._search.every(
            streams, None, millis_of(window.start), millis_of(window.end), expression
        )
        head = {"title": widget.title, "kind": widget.kind}
        if widget.kind == "counter":
            return {**head, "value": sum([1 async for _ in events])}
        if widget.kind == "timeseries":
            starts = window.buckets()
            counts = [0] * len(starts)
            async for record in events:
                counts[window.bucket_of(stamp_of(record.payload), starts)] += 1
            return {
                **head,
                "series": [
                    {"start": format_timestamp(s), "value": c}
                    for s, c in zip(starts, counts, strict=True)
                ],
            }
        assert widget.group_by is not None  # the config requires it for a table or top
        keys: Counter[str] = Counter()
        async for record in events:
            key = _field(orjson.loads(record.payload), widget.group_by)
            if key is not None:
                keys[key] += 1
        rows = sorted(keys.items(), key=lambda kv: (-kv[1], kv[0]))
        rows = rows[: TOP_ROWS if widget.kind == "top" else TABLE_ROWS]
        return {**head, "rows": [{"key": k, "count": c} for k, c in rows]}


def _outcomes(
    streams: Sequence[Stream], outcome: dict[str, tuple[str, datetime]]
) -> dict[str, int]:
    counts = dict.fromkeys(("running", "completed", "failed", "cancelled", "closed"), 0)
    for stream in streams:
        kind = outcome.get(stream.id, ("", stream.last_activity))[0]
        if not kind:
            kind = "closed" if stream.status is SessionStatus.CLOSED else "running"
        counts[kind] += 1
    return {"total": len(streams), **counts}


def _series(
    streams: Sequence[Stream], outcome: dict[str, tuple[str, datetime]], window: Window
) -> list[dict[str, Any]]:
    starts = window.buckets()
    counts: list[Counter[str]] = [Counter() for _ in starts]
    for stream in streams:
        if window.holds(stream.created_at):
            counts[window.bucket_of(stream.created_at, starts)]["started"] += 1
        kind, when = outcome.get(stream.id, ("", stream.last_activity))
        if kind in ("completed", "failed") and window.holds(when):
            counts[window.bucket_of(when, starts)][kind] += 1
    return [
        {"start": format_timestamp(s), **{k: c[k] for k in ("started", "completed", "failed")}}
        for s, c in zip(starts, counts, strict=True)
    ]


def _failing(ends: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """COMMAND_FAILED by command name and error code, the most frequent first; each with
    the run of its newest failure (``ends`` is newest first)."""
    groups: dict[tuple[str, str], list[Any]] = {}
    for event in ends:
        if event["type"] != "COMMAND_FAILED":
            continue
        data = event["data"]
        key = (str(data.get("commandName")), str((data.get("error") or {}).get("code")))
        if key not in groups:
            groups[key] = [0, event["streamId"], event["sessionId"]]
        groups[key][0] += 1
    ranked = sorted(groups.items(), key=lambda kv: (-kv[1][0], kv[0]))[:TOP_ROWS]
    return [
        {
            "commandName": name,
            "errorCode": code,
            "count": count,
            "lastStreamId": stream_id,
            "lastSessionId": session_id,
        }
        for (name, code), (count, stream_id, session_id) in ranked
    ]


def _durations(
    ends: list[dict[str, Any]], actions: dict[tuple[str, str], str]
) -> list[dict[str, Any]]:
    """Completions and failures by the action of their COMMAND_STARTED (``unknown`` when
    none was seen): how many, how many failed, and their duration's p50 and p95."""
    durations: dict[str, list[float]] = defaultdict(list)
    failures: Counter[str] = Counter()
    for event in ends:
        data = event["data"]
        action = actions.get((event["streamId"], str(data.get("commandId", ""))), "unknown")
        duration = data.get("duration")
        if isinstance(duration, int | float) and not isinstance(duration, bool):
            durations[action].append(float(duration))
        if event["type"] == "COMMAND_FAILED":
            failures[action] += 1
        elif action not in durations:
            durations[action] = []
    return [
        {
            "action": action,
            "count": len(values),
            "failures": failures[action],
            "p50Ms": percentile(values, 50),
            "p95Ms": percentile(values, 95),
        }
        for action, values in sorted(durations.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    ]


def percentile(values: list[float], rank: int) -> float | None:
    """The nearest-rank percentile: the smallest value with ``rank`` % at or below it."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(math.ceil(rank / 100 * len(ordered)) - 1, 0)]


def _slowest(
    streams: Sequence[Stream], outcome: dict[str, tuple[str, datetime]]
) -> list[dict[str, Any]]:
    """Runs by duration, from creation to their outcome (or to their last event)."""
    timed = []
    for stream in streams:
        _, until = outcome.get(stream.id, ("", stream.last_activity))
        timed.append((millis_of(until) - millis_of(stream.created_at), stream))
    timed.sort(key=lambda pair: (-pair[0], pair[1].workflow_session_id))
    return [
        {"streamId": s.id, "workflowSessionId": s.workflow_session_id, "durationMs": ms}
        for ms, s in timed[:TOP_ROWS]
    ]


def _field(event: dict[str, Any], path: str) -> str | None:
    """The value at ``data.commandName`` (say), as text; None where the event has none."""
    value: Any = event
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    if value is None or isinstance(value, dict | list):
        return None
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text)
