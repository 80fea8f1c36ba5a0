"""What only the SQL backend has: schema migrations and screenshot files."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, inspect, select
from sqlalchemy.ext.asyncio import create_async_engine

from executor_streamer.errors import StorageUnavailable
from executor_streamer.history import StoredScreenshot, StreamWrite, sql_tables
from executor_streamer.history.migrations import STEPS, migrate, schema_version
from executor_streamer.history.records import EventRecord
from executor_streamer.history.sql import SqlHistory
from executor_streamer.types import StreamConfig

from ..conftest import PNG
from ..postgres import POSTGRES_URL, reset_postgres
from .test_contract import record


def schema(sync: Connection) -> dict[str, object]:
    """Tables with their columns and indexes, as the database reports them."""
    inspector = inspect(sync)
    out: dict[str, object] = {}
    for table in sorted(inspector.get_table_names()):
        columns = [
            (c["name"], str(c["type"]).split("(")[0], c["nullable"])
            for c in inspector.get_columns(table)
        ]
        indexes = sorted(
            (i["name"], tuple(i["column_names"]), bool(i["unique"]))
            for i in inspector.get_indexes(table)
        )
        out[table] = (columns, indexes)
    return out


class TestMigrations:
    @pytest.mark.parametrize("backend", ["sqlite", "postgres"])
    async def test_the_steps_end_where_the_query_definitions_say(
        self, backend: str, tmp_path: Path
    ) -> None:
        """Migrating an empty database step by step gives exactly the tables, columns and
        indexes that sql_tables.py's definitions describe (the steps are snapshots; it is
        what the queries expect)."""
        schemas = []
        for name, build in (("steps", migrate), ("definitions", sql_tables.metadata.create_all)):
            if backend == "sqlite":
                url = f"sqlite+aiosqlite:///{tmp_path / name}.db"
            else:
                await reset_postgres()
                url = POSTGRES_URL
            engine = create_async_engine(url)
            try:
                async with engine.connect() as connection:
                    await connection.run_sync(build)
                    await connection.commit()
                    schemas.append(await connection.run_sync(schema))
            finally:
                await engine.dispose()
        steps, definitions = schemas
        assert isinstance(steps, dict) and isinstance(definitions, dict)
        steps.pop("es_schema_version")
        assert steps == definitions

    async def test_an_older_schema_is_migrated_forward(self, tmp_path: Path) -> None:
        """A database a version-2 release left gets the later steps at start, once; step
        1 as it shipped made no partial index (it is not built from today's tables)."""
        url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
        engine = create_async_engine(url)
        async with engine.connect() as connection:
            await connection.run_sync(lambda sync: migrate(sync, STEPS[:2]))
            indexes = await connection.run_sync(
                lambda sync: {i["name"] for i in inspect(sync).get_indexes("es_events")}
            )
        await engine.dispose()
        assert indexes == {"es_events_by_time", "es_events_by_type"}

        for _ in range(2):  # starting twice applies nothing twice
            store = SqlHistory(url)
            await store.start()
            async with store._engine.connect() as connection:
                versions = (await connection.execute(select(schema_version.c.version))).all()
                indexes = await connection.run_sync(
                    lambda sync: {i["name"] for i in inspect(sync).get_indexes("es_events")}
                )
            await store.close()
            assert [v for (v,) in versions] == list(range(1, len(STEPS) + 1))
            assert "es_events_with_screenshot" in indexes
            assert "es_events_by_screenshot" not in indexes  # replaced by the partial one

    async def test_screenshot_lookups_use_the_partial_index(self, tmp_path: Path) -> None:
        """Finding which events still use a screenshot goes through the partial index."""
        store = SqlHistory(f"sqlite+aiosqlite:///{tmp_path / 'plan.db'}")
        await store.start()
        try:
            async with store._engine.connect() as connection:
                plan = await connection.exec_driver_sql(
                    "EXPLAIN QUERY PLAN SELECT screenshot_id FROM es_events WHERE stream_id = 's1'"
                    " AND screenshot_id IS NOT NULL AND screenshot_id IN ('a', 'b')"
                )
                assert "es_events_with_screenshot" in " ".join(str(row) for row in plan)
        finally:
            await store.close()

    async def test_hubs_starting_together_migrate_postgres_once(self) -> None:
        """Two stores starting at once on a fresh PostgreSQL schema: the advisory lock
        lets one migrate while the other waits, and neither fails."""
        await reset_postgres()
        stores = [SqlHistory(POSTGRES_URL) for _ in range(3)]
        try:
            await asyncio.gather(*(store.start() for store in stores))
            async with stores[0]._engine.connect() as connection:
                versions = (await connection.execute(select(schema_version.c.version))).all()
            assert sorted(v for (v,) in versions) == list(range(1, len(STEPS) + 1))
        finally:
            for store in stores:
                await store.close()


def shot(data: bytes) -> tuple[str, StoredScreenshot]:
    digest = hashlib.sha256(data).hexdigest()
    return f"scr_{digest[:32]}", StoredScreenshot(data, "image/png", digest)


def screenshot_record(seq: int, screenshot_id: str) -> EventRecord:
    return record(seq, "SCREENSHOT", screenshot_id=screenshot_id)


class TestScreenshotFiles:
    """A SQLite file keeps images as content-addressed files beside it."""

    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[SqlHistory]:
        store = SqlHistory(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}")
        await store.start()
        for stream_id in ("s1", "s2"):
            await store.open_stream(stream_id, StreamConfig(max_history_size=2))
        yield store
        await store.close()

    @staticmethod
    def files(tmp_path: Path) -> list[str]:
        return sorted(p.name for p in (tmp_path / "hub.db-screenshots").glob("*/*"))

    async def test_one_file_per_image_however_many_streams_use_it(
        self, store: SqlHistory, tmp_path: Path
    ) -> None:
        """The bytes live in <db>-screenshots/<ab>/<sha256>, once; the table holds none."""
        shot_id, image = shot(PNG)
        await store.write(
            [
                StreamWrite(stream, [screenshot_record(1, shot_id)], None, [(shot_id, image)])
                for stream in ("s1", "s2")
            ]
        )
        assert self.files(tmp_path) == [image.sha256]
        assert (
            tmp_path / "hub.db-screenshots" / image.sha256[:2] / image.sha256
        ).read_bytes() == PNG
        async with store._engine.connect() as connection:
            held = (await connection.execute(select(sql_tables.screenshots.c.data))).all()
        assert [bytes(d) for (d,) in held] == [b"", b""]
        assert await store.get_screenshot("s2", shot_id) == image
        assert await store.usage_bytes("s1") == len(PNG) + len(
            screenshot_record(1, shot_id).payload
        )

        await store.drop_stream("s1")
        assert self.files(tmp_path) == [image.sha256]  # s2 still uses it
        await store.drop_stream("s2")
        assert self.files(tmp_path) == []

    async def test_trimming_the_last_use_deletes_the_file(
        self, store: SqlHistory, tmp_path: Path
    ) -> None:
        """maxHistorySize pushes the screenshot event out: its file goes with it."""
        shot_id, image = shot(PNG)
        await store.write(
            [StreamWrite("s1", [screenshot_record(1, shot_id)], None, [(shot_id, image)])]
        )
        other_id, other = shot(PNG + b"\x00")
        await store.write(
            [StreamWrite("s1", [screenshot_record(2, other_id)], None, [(other_id, other)])]
        )
        assert self.files(tmp_path) == sorted([image.sha256, other.sha256])
        await store.compact("s1", 1)
        assert self.files(tmp_path) == [other.sha256]
        assert await store.get_screenshot("s1", shot_id) is None

    async def test_start_removes_files_a_crash_left_behind(self, tmp_path: Path) -> None:
        """Files no row refers to (written before a transaction that never committed)
        and half-written temporaries are swept at start; referenced files stay."""
        url = f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
        store = SqlHistory(url)
        await store.start()
        await store.open_stream("s1", StreamConfig())
        shot_id, image = shot(PNG)
        await store.write(
            [StreamWrite("s1", [screenshot_record(1, shot_id)], None, [(shot_id, image)])]
        )
        await store.close()
        orphan = hashlib.sha256(b"orphan").hexdigest()
        folder = tmp_path / "hub.db-screenshots" / orphan[:2]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / orphan).write_bytes(b"orphan")
        (folder / ".tmp-abc").write_bytes(b"half")

        again = SqlHistory(url)
        await again.start()
        try:
            assert self.files(tmp_path) == [image.sha256]
            assert await again.get_screenshot("s1", shot_id) == image
        finally:
            await again.close()

    async def test_a_missing_file_is_a_storage_error(
        self, store: SqlHistory, tmp_path: Path
    ) -> None:
        """An image file deleted behind the hub's back is reported, not served empty."""
        shot_id, image = shot(PNG)
        await store.write(
            [StreamWrite("s1", [screenshot_record(1, shot_id)], None, [(shot_id, image)])]
        )
        (tmp_path / "hub.db-screenshots" / image.sha256[:2] / image.sha256).unlink()
        with pytest.raises(StorageUnavailable, match="missing"):
            await store.get_screenshot("s1", shot_id)

    def test_only_a_sqlite_file_gets_a_directory(self, tmp_path: Path) -> None:
        """PostgreSQL and in-memory SQLite keep images in the table."""
        assert SqlHistory(POSTGRES_URL)._blobs is None
        assert SqlHistory("sqlite+aiosqlite:///:memory:")._blobs is None
        blobs = SqlHistory(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")._blobs
        assert blobs is not None and blobs.root == tmp_path / "x.db-screenshots"
