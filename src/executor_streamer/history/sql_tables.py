"""The SQL backend's tables, as its queries see them, and how rows are made and read.

The schema itself is made by the frozen steps of ``migrations`` (``tests/history/test_sql``
holds the two equal); these definitions never create anything.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import orjson
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Index,
    LargeBinary,
    MetaData,
    Select,
    String,
    Table,
    Text,
    delete,
    func,
    select,
    tuple_,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.elements import ColumnElement

from ..types.enums import StreamEventType
from ..types.events import ScreenshotInfo
from ..types.filters import HistoryFilter
from .base import StreamState
from .records import EventRecord
from .search import SearchQuery, millis_of

metadata = MetaData()

events = Table(
    "es_events",
    metadata,
    Column("stream_id", String(64), primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("type", String(32), nullable=False),
    Column("ts_ms", BigInteger, nullable=False),
    Column("screenshot_id", String(128), nullable=True),
    Column("search_text", Text, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Index("es_events_by_time", "stream_id", "ts_ms"),
    Index("es_events_by_type", "stream_id", "type", "seq"),
    Index("es_events_by_recency", "ts_ms", "seq", "stream_id"),
    Index("es_events_by_type_recency", "type", "ts_ms", "seq", "stream_id"),
)

screenshots = Table(
    "es_screenshots",
    metadata,
    Column("stream_id", String(64), primary_key=True),
    Column("screenshot_id", String(128), primary_key=True),
    Column("mime_type", String(32), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("data", LargeBinary, nullable=False),
)

# Which events use a screenshot: only screenshot events are indexed (migration 4).
with_screenshot = Index(
    "es_events_with_screenshot",
    events.c.stream_id,
    events.c.screenshot_id,
    sqlite_where=events.c.screenshot_id.is_not(None),
    postgresql_where=events.c.screenshot_id.is_not(None),
)

# Which screenshot rows still use an image file (migration 4).
by_digest = Index("es_screenshots_by_sha256", screenshots.c.sha256)

streams = Table(
    "es_streams",
    metadata,
    Column("stream_id", String(64), primary_key=True),
    Column("workflow_session_id", String(128), nullable=False, unique=True),
    Column("status", String(16), nullable=False),
    Column("config", Text, nullable=False),
    Column("metadata", Text, nullable=False),
    Column("epoch", String(64), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("last_activity_ms", BigInteger, nullable=False),
    Column("last_seq", BigInteger, nullable=False),
    Column("running_commands", Text, nullable=False),
)


def first_seq(connection: Connection, stream_id: str) -> int | None:
    value = connection.execute(
        select(func.min(events.c.seq)).where(events.c.stream_id == stream_id)
    ).scalar()
    return None if value is None else int(value)


def last_seq(connection: Connection, stream_id: str) -> int | None:
    value = connection.execute(
        select(func.max(events.c.seq)).where(events.c.stream_id == stream_id)
    ).scalar()
    return None if value is None else int(value)


def trim(connection: Connection, stream_id: str, through_seq: int) -> set[str]:
    """Delete events with seq <= ``through_seq`` and the screenshot rows left unused;
    returns the digests of the images those rows held."""
    if through_seq <= 0:
        return set()
    return delete_events(connection, stream_id, events.c.seq <= through_seq)[1]


def delete_events(
    connection: Connection, stream_id: str, which: ColumnElement[bool]
) -> tuple[int, set[str]]:
    """Delete the stream's events ``which`` selects and the screenshot rows only they
    used; returns how many events went and the digests of the screenshot rows deleted.

    Only the screenshot ids the deleted rows carried are looked at (through
    ``es_events_with_screenshot``), so trimming a long stream stays cheap per append."""
    mine = events.c.stream_id == stream_id
    rows = connection.execute(
        delete(events).where(mine, which).returning(events.c.screenshot_id)
    ).all()
    shots = {row.screenshot_id for row in rows if row.screenshot_id is not None}
    released: set[str] = set()
    if shots:
        still_used = select(events.c.screenshot_id).where(
            mine, events.c.screenshot_id.is_not(None), events.c.screenshot_id.in_(shots)
        )
        deleted = connection.execute(
            delete(screenshots)
            .where(
                screenshots.c.stream_id == stream_id,
                screenshots.c.screenshot_id.in_(shots),
                screenshots.c.screenshot_id.not_in(still_used),
            )
            .returning(screenshots.c.sha256)
        )
        released = {row.sha256 for row in deleted}
    return len(rows), released


def conditions(spec: HistoryFilter) -> list[ColumnElement[bool]]:
    if spec.expression is not None:  # the hub's to evaluate (core.stream_history)
        raise ValueError("HistoryFilter.expression reached a backend: use hub.history.query")
    conditions: list[ColumnElement[bool]] = []
    if spec.event_types is not None:
        conditions.append(events.c.type.in_([t.value for t in spec.event_types]))
    if spec.after_seq is not None:
        conditions.append(events.c.seq > spec.after_seq)
    if spec.start_time is not None:
        conditions.append(events.c.ts_ms >= millis(spec.start_time))
    if spec.end_time is not None:
        conditions.append(events.c.ts_ms <= millis(spec.end_time))
    if spec.search_text is not None:
        needle = spec.search_text.casefold()
        escaped = needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        conditions.append(events.c.search_text.like(f"%{escaped}%", escape="\\"))
    return conditions


MAX_LISTED_STREAMS = 10_000
"""Stream ids one statement names at most (PostgreSQL takes 32,767 parameters): a search
over more runs one statement per slice of them and merges the answers."""
FEW_STREAMS = 16
"""Up to this many streams, one statement per stream, each on that stream's own rows
(``es_events_by_time``): a caller watching two old runs never walks the whole index."""


def search_statements(query: SearchQuery) -> list[Select[Any]]:
    """Statements whose answers, merged newest first, are the events ``query`` asks for
    (each at most ``query.limit``); none when nothing can match."""
    if query.event_types is not None and not query.event_types:
        return []
    if query.all_streams:
        return [_search_statement(query, None)]
    ids = sorted(query.stream_ids)
    if len(ids) <= FEW_STREAMS:
        return [_search_statement(query, [one]) for one in ids]
    slices = range(0, len(ids), MAX_LISTED_STREAMS)
    return [_search_statement(query, ids[at : at + MAX_LISTED_STREAMS]) for at in slices]


def _search_statement(query: SearchQuery, stream_ids: list[str] | None) -> Select[Any]:
    """Served by ``es_events_by_recency``, ``es_events_by_type_recency`` for one type, or
    ``es_events_by_time`` for one stream."""
    where: list[ColumnElement[bool]] = []
    # Rows must come off an index in key order, newest first, so that LIMIT stops the
    # read. A condition that another index could serve (several streams, several types)
    # would tempt the planner into reading every row it selects and sorting them, for
    # every batch; written as an expression (``column || ''``) it is checked on the way.
    if stream_ids is not None and len(stream_ids) == 1:
        where.append(events.c.stream_id == stream_ids[0])
    elif stream_ids is not None:
        where.append(_unindexed(events.c.stream_id).in_(stream_ids))
    if query.event_types is not None:
        types = sorted(t.value for t in query.event_types)
        where.append(
            events.c.type == types[0] if len(types) == 1 else _unindexed(events.c.type).in_(types)
        )
    if query.start_ms is not None:
        where.append(events.c.ts_ms >= query.start_ms)
    if query.end_ms is not None:
        where.append(events.c.ts_ms <= query.end_ms)
    if query.before is not None:
        where.append(
            tuple_(events.c.ts_ms, events.c.seq, events.c.stream_id) < tuple_(*query.before)
        )
    return (
        select(events.c.stream_id, events.c.seq, events.c.type, events.c.ts_ms, events.c.payload)
        .where(*where)
        .order_by(events.c.ts_ms.desc(), events.c.seq.desc(), events.c.stream_id.desc())
        .limit(query.limit)
    )


def _unindexed(column: Column[str]) -> ColumnElement[str]:
    return column.op("||", return_type=String)("")


def compiled(engine: AsyncEngine, statement: Any, table: Table) -> str:
    """``statement`` in the dialect's own SQL, taking parameters in ``table``'s column
    order. Appends run these with plain tuples, skipping SQLAlchemy's per-call statement
    building and parameter processing on the hot path."""
    compiled = statement.compile(dialect=engine.dialect)
    if compiled.positiontup != [column.name for column in table.columns]:
        raise RuntimeError(f"{engine.dialect.name}: expected positional column-order parameters")
    return str(compiled)


def screenshot_insert(engine: AsyncEngine) -> Any:
    """Insert a screenshot row; one the stream already holds stays as it is."""
    upsert = pg_insert if engine.dialect.name == "postgresql" else sqlite_insert
    return upsert(screenshots).on_conflict_do_nothing()


def stream_upsert(engine: AsyncEngine) -> Any:
    upsert = pg_insert if engine.dialect.name == "postgresql" else sqlite_insert
    statement = upsert(streams)
    changes = {c.name: statement.excluded[c.name] for c in streams.columns if c.name != "stream_id"}
    return statement.on_conflict_do_update(index_elements=["stream_id"], set_=changes)


def event_row(stream_id: str, record: EventRecord) -> tuple[Any, ...]:
    """An event row in column order: stream, seq, type, time, screenshot, search, payload."""
    event_ = record.event
    shot = None
    if event_.type is StreamEventType.SCREENSHOT:
        shot = cast(ScreenshotInfo, event_.data).screenshot_id
    return (
        stream_id,
        record.seq,
        event_.type.value,
        millis(event_.timestamp),
        shot,
        # Searches match the data's JSON text case-insensitively, as the memory backend does.
        record.data_text().casefold(),
        record.payload,
    )


def state_row(state: StreamState) -> tuple[Any, ...]:
    """A registry row in column order."""
    return (
        state.stream_id,
        state.workflow_session_id,
        state.status,
        orjson.dumps(state.config).decode(),
        orjson.dumps(state.metadata).decode(),
        state.epoch,
        millis(state.created_at),
        millis(state.last_activity),
        state.last_seq,
        orjson.dumps(state.running_commands).decode(),
    )


def state_of_row(row: Any) -> StreamState:
    return StreamState(
        stream_id=row.stream_id,
        workflow_session_id=row.workflow_session_id,
        status=row.status,
        config=orjson.loads(row.config),
        metadata=orjson.loads(row.metadata),
        epoch=row.epoch,
        created_at=EPOCH + timedelta(milliseconds=row.created_ms),
        last_activity=EPOCH + timedelta(milliseconds=row.last_activity_ms),
        last_seq=int(row.last_seq),
        running_commands=orjson.loads(row.running_commands),
    )


def record_of_row(row: Any) -> EventRecord:
    """The record of an event row (seq, type, payload); its event is parsed on demand."""
    return EventRecord.stored(int(row.seq), StreamEventType(row.type), bytes(row.payload))


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@functools.lru_cache(maxsize=64)  # the events of a publish share one stamp
def millis(moment: datetime) -> int:
    return millis_of(moment)
