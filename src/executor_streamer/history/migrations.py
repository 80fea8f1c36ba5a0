"""The SQL schema's history: each step as it shipped, never to be edited.

A step creates exactly what its version added, from table definitions frozen in this
file at that version, not from the tables ``sql_tables.py`` describes today. So a database
made by any earlier release, and one made fresh now, pass through the same steps and end
in the same schema; ``tests/history/test_sql.py`` checks that the steps end where
``sql_tables.py``'s definitions say. To change the schema, append a step.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    func,
    insert,
    select,
)

Step = Callable[[Connection], None]

_version = MetaData()
schema_version = Table("es_schema_version", _version, Column("version", Integer, primary_key=True))


def _v1_events_and_screenshots(connection: Connection) -> None:
    """Events with their payload and the columns that select them; screenshots."""
    schema = MetaData()
    Table(
        "es_events",
        schema,
        Column("stream_id", String(64), primary_key=True),
        Column("seq", BigInteger, primary_key=True),
        Column("type", String(32), nullable=False),
        Column("ts_ms", BigInteger, nullable=False),
        Column("screenshot_id", String(128), nullable=True),
        Column("search_text", Text, nullable=False),
        Column("payload", LargeBinary, nullable=False),
        Index("es_events_by_time", "stream_id", "ts_ms"),
        Index("es_events_by_type", "stream_id", "type", "seq"),
    )
    Table(
        "es_screenshots",
        schema,
        Column("stream_id", String(64), primary_key=True),
        Column("screenshot_id", String(128), primary_key=True),
        Column("mime_type", String(32), nullable=False),
        Column("sha256", String(64), nullable=False),
        Column("data", LargeBinary, nullable=False),
    )
    schema.create_all(connection)


def _v2_stream_registry(connection: Connection) -> None:
    """What outlives the process about each stream (seq, epoch, status, config...)."""
    schema = MetaData()
    Table(
        "es_streams",
        schema,
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
    schema.create_all(connection)


def _v3_events_by_screenshot(connection: Connection) -> None:
    connection.exec_driver_sql(
        "CREATE INDEX IF NOT EXISTS es_events_by_screenshot ON es_events (stream_id, screenshot_id)"
    )


def _v4_partial_screenshot_index(connection: Connection) -> None:
    """Only screenshot events are indexed by screenshot (every other event indexed a
    NULL, a b-tree update per insert); screenshot rows by digest, for image files."""
    connection.exec_driver_sql(
        "CREATE INDEX IF NOT EXISTS es_screenshots_by_sha256 ON es_screenshots (sha256)"
    )
    connection.exec_driver_sql(
        "CREATE INDEX IF NOT EXISTS es_events_with_screenshot ON es_events "
        "(stream_id, screenshot_id) WHERE screenshot_id IS NOT NULL"
    )
    connection.exec_driver_sql("DROP INDEX IF EXISTS es_events_by_screenshot")


def _v5_events_by_recency(connection: Connection) -> None:
    """Cross-run search, newest first, over every stream or over some types."""
    connection.exec_driver_sql(
        "CREATE INDEX IF NOT EXISTS es_events_by_recency ON es_events (ts_ms, seq, stream_id)"
    )
    connection.exec_driver_sql(
        "CREATE INDEX IF NOT EXISTS es_events_by_type_recency ON es_events "
        "(type, ts_ms, seq, stream_id)"
    )


STEPS: list[Step] = [
    _v1_events_and_screenshots,
    _v2_stream_registry,
    _v3_events_by_screenshot,
    _v4_partial_screenshot_index,
    _v5_events_by_recency,
]
"""Step ``n`` (from 1) brings a schema at version ``n - 1`` to version ``n``."""


def schema_at(connection: Connection) -> int:
    """The schema's version (0 for an empty database); creates the version table."""
    _version.create_all(connection)
    return int(
        connection.execute(
            select(func.coalesce(func.max(schema_version.c.version), 0))
        ).scalar_one()
    )


def migrate(connection: Connection, steps: list[Step] = STEPS) -> None:
    """Run the steps ``connection``'s schema has not had yet, each in its own transaction
    (the caller holds ``connection`` outside any transaction)."""
    with connection.begin():
        done = schema_at(connection)
    for version, step in enumerate(steps[done:], start=done + 1):
        with connection.begin():
            step(connection)
            connection.execute(insert(schema_version).values(version=version))
