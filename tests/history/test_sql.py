"""What only the SQL backend has: its schema migrations."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import insert, inspect, select

from executor_streamer.history import sql
from executor_streamer.history.sql import MIGRATIONS, SqlHistory


class TestMigrations:
    async def test_an_older_schema_is_migrated_forward(self, tmp_path: Path) -> None:
        """A database left at an earlier version gets the later steps at start, once."""
        url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
        old = SqlHistory(url)
        async with old._engine.begin() as connection:
            await connection.run_sync(
                lambda sync: sql.metadata.create_all(sync, tables=[sql.schema_version])
            )
            for version, migrate in enumerate(MIGRATIONS[:2], start=1):
                await migrate(connection)
                await connection.execute(insert(sql.schema_version).values(version=version))
            await connection.exec_driver_sql("DROP INDEX IF EXISTS es_events_by_screenshot")
        await old.close()

        for _ in range(2):  # starting twice applies nothing twice
            store = SqlHistory(url)
            await store.start()
            async with store._engine.connect() as connection:
                versions = (await connection.execute(select(sql.schema_version.c.version))).all()
                indexes = await connection.run_sync(
                    lambda sync: {i["name"] for i in inspect(sync).get_indexes("es_events")}
                )
            await store.close()
            assert [v for (v,) in versions] == list(range(1, len(MIGRATIONS) + 1))
            assert "es_events_by_screenshot" in indexes
