"""History in SQL through SQLAlchemy 2 async: SQLite (``file``) and PostgreSQL (``database``).

Each event row keeps the payload bytes made at publish time, so reading history never
re-serializes; the columns beside it (type, timestamp, screenshot id, search text) exist
only to select rows. Every :meth:`SqlHistory.write` is one transaction, however many
publishes the hub's group committer put into it: the rows, the streams' new state, the
trim to ``maxHistorySize`` and the release of screenshots no retained event uses. An event
is therefore stored completely or not at all.

Screenshots: PostgreSQL keeps the bytes in ``es_screenshots``; a SQLite file keeps them as
content-addressed files beside the database (``<file>-screenshots/``, see ``blobs``) and
only the reference in the table.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Collection, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import (
    Connection,
    Engine,
    and_,
    create_engine,
    delete,
    event,
    func,
    insert,
    make_url,
    select,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from ..errors import StorageUnavailable
from ..types.filters import HistoryFilter
from ..types.streams import StreamConfig
from .base import HistoryPage, ResumeRead, StoredScreenshot, StreamState, StreamWrite
from .blobs import BlobDirectory
from .migrations import migrate
from .records import EventRecord, Predicate
from .search import Found, SearchBatch, SearchQuery, merged
from .sql_tables import (
    compiled,
    conditions,
    delete_events,
    event_row,
    events,
    first_seq,
    last_seq,
    millis,
    record_of_row,
    screenshot_insert,
    screenshots,
    search_statements,
    state_of_row,
    state_row,
    stream_upsert,
    streams,
    trim,
)

P = ParamSpec("P")
T = TypeVar("T")
_Written = tuple[dict[str, int], dict[str, int], set[str]]
"""What a write transaction reports: newest and oldest seq per stream, released images."""


def _storage_errors(
    method: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[P, Coroutine[Any, Any, T]]:
    """Database and network failures leave as StorageUnavailable (HTTP 503); the
    transaction they interrupted was rolled back, so nothing is half-written."""

    @functools.wraps(method)
    async def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except (DBAPIError, OSError, TimeoutError) as exc:
            raise StorageUnavailable(
                f"history storage failed: {exc.__class__.__name__}: {exc}"
            ) from exc

    return guarded


# PostgreSQL advisory lock held while migrating, so hubs starting together on one
# database migrate it once (an arbitrary constant: "es" + schema).
_MIGRATION_LOCK = 0x6573_0001


class SqlHistory:
    """:class:`~executor_streamer.history.base.HistoryStore` over an SQLAlchemy async URL."""

    streams_in_memory = False

    def __init__(self, url: str) -> None:
        self.url = url
        # No pool_pre_ping: it costs a round trip on every transaction (single-event
        # publishes went from ~540 to ~885/s on SQLite without it). After an outage the
        # first statement on a stale connection fails (503) and SQLAlchemy invalidates
        # the pool, so the next one reconnects.
        self._engine: AsyncEngine = create_async_engine(url)
        self._capacity: dict[str, int] = {}
        # The newest and oldest stored seq per stream (None: no events), where known:
        # the hub's committer is the only writer, so these replace a SELECT MAX(seq) and
        # a trimming DELETE per write. Updated only after a commit; anything else that
        # deletes events forgets the oldest.
        self._last: dict[str, int | None] = {}
        self._oldest: dict[str, int | None] = {}
        self._insert_sql = compiled(self._engine, insert(events), events)
        self._upsert_sql = compiled(self._engine, stream_upsert(self._engine), streams)
        self._shot_sql = compiled(self._engine, screenshot_insert(self._engine), screenshots)
        self._postgres = self._engine.dialect.name == "postgresql"
        self._blobs = _blob_directory(url)
        self._sync_engine: Engine | None = None
        self._writer: ThreadPoolExecutor | None = None
        if self._engine.dialect.name == "sqlite":
            event.listen(self._engine.sync_engine, "connect", _sqlite_pragmas)
            if self._blobs is not None:  # a file: writes get a thread and a connection
                sync_url = make_url(url).set(drivername="sqlite+pysqlite")
                self._sync_engine = create_engine(
                    sync_url, pool_size=1, connect_args={"check_same_thread": False}
                )
                event.listen(self._sync_engine, "connect", _sqlite_pragmas)
                self._writer = ThreadPoolExecutor(1, thread_name_prefix="es-sqlite-writer")

    @_storage_errors
    async def start(self) -> None:
        """Create or migrate the schema; remove image files a crash left unreferenced."""
        async with self._engine.connect() as connection:
            if self._postgres:
                await connection.exec_driver_sql(f"SELECT pg_advisory_lock({_MIGRATION_LOCK})")
                await connection.commit()
            try:
                await connection.run_sync(migrate)
            finally:
                if self._postgres:
                    await connection.exec_driver_sql(
                        f"SELECT pg_advisory_unlock({_MIGRATION_LOCK})"
                    )
                    await connection.commit()
        if self._blobs is not None:
            async with self._blobs.lock, self._engine.connect() as connection:
                digests = await connection.execute(select(screenshots.c.sha256).distinct())
                await self._blobs.sweep({row.sha256 for row in digests})

    @_storage_errors
    async def ping(self) -> None:
        async with self._engine.connect() as connection:
            await connection.execute(select(1))

    @_storage_errors
    async def open_stream(self, stream_id: str, config: StreamConfig) -> None:
        self._capacity[stream_id] = config.max_history_size
        self._oldest.pop(stream_id, None)

        def reopen(connection: Connection) -> set[str]:
            last = self._last[stream_id] = last_seq(connection, stream_id)
            return (
                set()
                if last is None
                else trim(connection, stream_id, last - config.max_history_size)
            )

        async with self._files():
            async with self._engine.begin() as connection:
                released = await connection.run_sync(reopen)
            await self._release(released)

    @_storage_errors
    async def save_stream(self, state: StreamState) -> None:
        async with self._engine.begin() as connection:
            await self._upsert_stream(connection, state)

    @_storage_errors
    async def load_streams(self) -> list[StreamState]:
        async with self._engine.connect() as connection:
            rows = await connection.execute(select(streams).order_by(streams.c.created_ms))
            return [state_of_row(row) for row in rows]

    @_storage_errors
    async def write(self, writes: Sequence[StreamWrite]) -> None:
        writes = [w for w in writes if w.records or w.state is not None or w.screenshots]
        if not writes:
            return
        async with self._files():
            if self._writer is not None:
                # SQLite: the whole transaction in one hop to the writer thread, where
                # aiosqlite would hop to its thread and back for every statement.
                loop = asyncio.get_running_loop()
                done = await loop.run_in_executor(self._writer, self._write_in_thread, writes)
            else:
                async with self._engine.begin() as connection:
                    done = await connection.run_sync(self._write_transaction, writes)
            newest, oldest, released = done
            self._last.update(newest)
            self._oldest.update(oldest)
            await self._release(released)

    def _write_in_thread(self, writes: Sequence[StreamWrite]) -> _Written:
        assert self._sync_engine is not None
        with self._sync_engine.begin() as connection:
            return self._write_transaction(connection, writes)

    def _write_transaction(self, connection: Connection, writes: Sequence[StreamWrite]) -> _Written:
        """Store ``writes`` in the caller's transaction; returns each written stream's
        newest and oldest seq and the digests of images released by trimming."""
        newest = self._check_seqs(connection, writes)
        self._store_screenshots(connection, writes)
        # Plain tuples through statements compiled once: the hot insert skips
        # SQLAlchemy's per-row parameter processing.
        rows = [event_row(w.stream_id, record) for w in writes for record in w.records]
        if rows:
            connection.exec_driver_sql(self._insert_sql, rows)
        states = {w.stream_id: w.state for w in writes if w.state is not None}
        if states:
            connection.exec_driver_sql(
                self._upsert_sql, [state_row(state) for state in states.values()]
            )
        released, oldest = self._trim_to_capacity(connection, writes, newest)
        return newest, oldest, released

    def _trim_to_capacity(
        self, connection: Connection, writes: Sequence[StreamWrite], newest: dict[str, int]
    ) -> tuple[set[str], dict[str, int]]:
        """Trim each written stream to ``maxHistorySize``, deleting only when something
        is over it; returns the released image digests and each stream's oldest seq."""
        released: set[str] = set()
        oldest: dict[str, int] = {}
        for write in writes:
            stream_id = write.stream_id
            if write.records and stream_id not in oldest:
                if stream_id in self._oldest:
                    first = self._oldest[stream_id]
                else:
                    first = first_seq(connection, stream_id)
                oldest[stream_id] = write.records[0].seq if first is None else first
        for stream_id, last in newest.items():
            capacity = self._capacity.get(stream_id)
            if capacity is not None and last - capacity >= oldest[stream_id]:
                released |= trim(connection, stream_id, last - capacity)
                oldest[stream_id] = last - capacity + 1
        return released, oldest

    def _check_seqs(self, connection: Connection, writes: Sequence[StreamWrite]) -> dict[str, int]:
        """The newest seq per stream after ``writes``; raises if any seq would not follow."""
        newest: dict[str, int] = {}
        for write in writes:
            if not write.records:
                continue
            stream_id = write.stream_id
            last: int | None
            if stream_id in newest:
                last = newest[stream_id]
            elif stream_id in self._last:
                last = self._last[stream_id]
            else:
                last = last_seq(connection, stream_id)
            for record in write.records:
                if last is not None and record.seq != last + 1:
                    raise ValueError(f"seq {record.seq} does not follow {last}")
                last = record.seq
            newest[stream_id] = write.records[-1].seq
        return newest

    def _store_screenshots(self, connection: Connection, writes: Sequence[StreamWrite]) -> None:
        rows = []
        for write in writes:
            for screenshot_id, image in write.screenshots:
                if self._blobs is not None:
                    self._blobs.write_file(image.sha256, image.data)
                data = b"" if self._blobs is not None else image.data
                rows.append((write.stream_id, screenshot_id, image.mime_type, image.sha256, data))
        if rows:
            connection.exec_driver_sql(self._shot_sql, rows)

    @_storage_errors
    async def query(self, stream_id: str, spec: HistoryFilter) -> HistoryPage:
        where = and_(events.c.stream_id == stream_id, *conditions(spec))
        async with self._engine.connect() as connection:
            total = (await connection.execute(select(func.count()).where(where))).scalar() or 0
            rows = await connection.execute(
                select(events.c.seq, events.c.type, events.c.payload)
                .where(where)
                .order_by(events.c.seq)
                .limit(spec.limit)
                .offset(spec.offset)
            )
            return HistoryPage([record_of_row(row) for row in rows], total)

    @_storage_errors
    async def search(self, query: SearchQuery) -> SearchBatch:
        found: list[Found] = []
        full = False  # a statement gave its limit: more may lie below
        async with self._engine.connect() as connection:
            for statement in search_statements(query):
                rows = (await connection.execute(statement)).all()
                full = full or len(rows) == query.limit
                found += (
                    Found((int(row.ts_ms), int(row.seq), row.stream_id), record_of_row(row))
                    for row in rows
                )
        return merged(found, query.limit, full)

    @_storage_errors
    async def read_range(
        self, stream_id: str, after: int, until: int, predicate: Predicate | None
    ) -> ResumeRead:
        mine = events.c.stream_id == stream_id
        async with self._engine.connect() as connection:
            first = (await connection.execute(select(func.min(events.c.seq)).where(mine))).scalar()
            rows = await connection.execute(
                select(events.c.seq, events.c.type, events.c.payload)
                .where(mine, events.c.seq > after, events.c.seq <= until)
                .order_by(events.c.seq)
            )
            records = [record_of_row(row) for row in rows]
        if predicate is not None:
            records = [r for r in records if predicate(r)]
        return ResumeRead(records, until + 1 if first is None else first)

    @_storage_errors
    async def read_tail(self, stream_id: str, count: int) -> list[EventRecord]:
        async with self._engine.connect() as connection:
            rows = await connection.execute(
                select(events.c.seq, events.c.type, events.c.payload)
                .where(events.c.stream_id == stream_id)
                .order_by(events.c.seq.desc())
                .limit(count)
            )
            return [record_of_row(row) for row in reversed(rows.all())]

    async def clear(self, stream_id: str) -> int:
        return await self.compact(stream_id, 0)

    @_storage_errors
    async def compact(self, stream_id: str, keep_count: int) -> int:
        self._oldest.pop(stream_id, None)

        def compact(connection: Connection) -> tuple[int, set[str]]:
            last = last_seq(connection, stream_id)
            if last is None:
                return 0, set()
            return delete_events(connection, stream_id, events.c.seq <= last - keep_count)

        return await self._delete(compact)

    @_storage_errors
    async def expire(self, stream_id: str, older_than: datetime) -> int:
        self._oldest.pop(stream_id, None)
        old = events.c.ts_ms < millis(older_than)
        return await self._delete(lambda connection: delete_events(connection, stream_id, old))

    @_storage_errors
    async def drop_stream(self, stream_id: str) -> None:
        self._capacity.pop(stream_id, None)
        self._last.pop(stream_id, None)
        self._oldest.pop(stream_id, None)

        def drop(connection: Connection) -> tuple[int, set[str]]:
            removed = connection.execute(delete(events).where(events.c.stream_id == stream_id))
            dropped = connection.execute(
                delete(screenshots)
                .where(screenshots.c.stream_id == stream_id)
                .returning(screenshots.c.sha256)
            )
            connection.execute(delete(streams).where(streams.c.stream_id == stream_id))
            return removed.rowcount, {row.sha256 for row in dropped}

        await self._delete(drop)

    @_storage_errors
    async def get_screenshot(self, stream_id: str, screenshot_id: str) -> StoredScreenshot | None:
        async with self._engine.connect() as connection:
            row = (
                await connection.execute(
                    select(screenshots.c.data, screenshots.c.mime_type, screenshots.c.sha256).where(
                        screenshots.c.stream_id == stream_id,
                        screenshots.c.screenshot_id == screenshot_id,
                    )
                )
            ).first()
        if row is None:
            return None
        data = row.data
        if not data and self._blobs is not None:
            data = await self._blobs.read(row.sha256)
            if data is None:
                raise StorageUnavailable(f"screenshot file {row.sha256} is missing")
        return StoredScreenshot(data, row.mime_type, row.sha256)

    def held_in_memory(self) -> int:
        return 0  # history lives in the database; nothing is cached in the hub

    async def evict(self, stream_id: str) -> int:
        return 0

    @_storage_errors
    async def usage_bytes(self, stream_id: str) -> int:
        async with self._engine.connect() as connection:
            held = await connection.execute(
                select(func.coalesce(func.sum(func.length(events.c.payload)), 0)).where(
                    events.c.stream_id == stream_id
                )
            )
            images = await connection.execute(
                select(func.length(screenshots.c.data), screenshots.c.sha256).where(
                    screenshots.c.stream_id == stream_id
                )
            )
            image_bytes = sum(
                size or (0 if self._blobs is None else self._blobs.size(digest))
                for size, digest in images
            )
            return int(held.scalar() or 0) + image_bytes

    async def close(self) -> None:
        await self._engine.dispose()
        if self._writer is not None:
            assert self._sync_engine is not None
            await asyncio.get_running_loop().run_in_executor(
                self._writer, self._sync_engine.dispose
            )
            self._writer.shutdown()

    async def _upsert_stream(self, connection: AsyncConnection, state: StreamState) -> None:
        await connection.exec_driver_sql(self._upsert_sql, state_row(state))

    async def _delete(self, deletion: Callable[[Connection], tuple[int, set[str]]]) -> int:
        """Run ``deletion`` in a transaction, then release the images it freed."""
        async with self._files():
            async with self._engine.begin() as connection:
                count, released = await connection.run_sync(deletion)
            await self._release(released)
            return count

    def _files(self) -> contextlib.AbstractAsyncContextManager[Any]:
        """What a change touching screenshot files holds (nothing without files)."""
        return contextlib.nullcontext() if self._blobs is None else self._blobs.lock

    async def _release(self, digests: Collection[str]) -> None:
        """Delete the image files of ``digests`` that no screenshot row uses any more.
        Called after the deleting transaction committed, holding :meth:`_files`."""
        if self._blobs is None or not digests:
            return
        async with self._engine.connect() as connection:
            used = await connection.execute(
                select(screenshots.c.sha256).where(screenshots.c.sha256.in_(digests)).distinct()
            )
            await self._blobs.remove(set(digests) - {row.sha256 for row in used})


def _blob_directory(url: str) -> BlobDirectory | None:
    """Image files beside a SQLite database file; None (images in the table) otherwise."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    database = Path(parsed.database)
    return BlobDirectory(database.parent / f"{database.name}-screenshots")


def _sqlite_pragmas(dbapi_connection: Any, _: Any) -> None:
    # WAL lets readers go on while one writer commits; NORMAL is durable across a process
    # crash in WAL mode (an OS crash may lose the last commits, a SIGKILL of the process may not).
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()
