"""The PostgreSQL the SQL tests use: the machine's (``.ci/run`` starts it), one database
per test process, so that tests running in parallel (pytest-xdist) never share tables.

PostgreSQL must be reachable: a missing service fails the test, it is never skipped.
"""

from __future__ import annotations

import os

import pytest
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine

BASE_URL = os.environ.get(
    "EXECUTOR_STREAMER_TEST_POSTGRES", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
POSTGRES_URL = (
    BASE_URL
    if _WORKER is None
    else make_url(BASE_URL)
    .set(database=f"{make_url(BASE_URL).database}_{_WORKER}")
    .render_as_string(hide_password=False)
)
"""``…/test`` in a plain run; ``…/test_gw0``, ``…/test_gw1``… in pytest-xdist's workers."""


async def reset_postgres() -> None:
    """Drop the hub's tables so each test starts from an empty, freshly migrated schema
    (making this process's database first, when it has its own)."""
    try:
        if POSTGRES_URL != BASE_URL:
            await _create_database(make_url(POSTGRES_URL).database or "")
        engine = create_async_engine(POSTGRES_URL)
        try:
            async with engine.begin() as connection:
                for table in ("es_events", "es_screenshots", "es_streams", "es_schema_version"):
                    await connection.execute(text(f"DROP TABLE IF EXISTS {table}"))
        finally:
            await engine.dispose()
    except OSError as exc:
        pytest.fail(f"PostgreSQL at {POSTGRES_URL} is not reachable ({exc}); start it")


async def _create_database(name: str) -> None:
    engine = create_async_engine(BASE_URL, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            found = await connection.scalar(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
            )
            if found is None:
                await connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        await engine.dispose()
