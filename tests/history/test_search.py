"""``HistoryStore.search`` on every backend, against a reference written here: the events
a query selects, newest first by (timestamp, seq, stream id), paged by key."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from executor_streamer.history import HistoryStore, StreamWrite, sql_tables
from executor_streamer.history.records import EventRecord
from executor_streamer.history.search import SearchKey, SearchQuery, millis_of
from executor_streamer.types import StreamConfig, StreamEvent
from executor_streamer.types.enums import StreamEventType

from .test_contract import StoreFactory, make_store

__all__ = ["make_store"]

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
STREAMS = ["s1", "s2", "s3", "s4"]
KINDS = ["STATUS", "REASONING", "ERROR"]


def event(stream: str, seq: int, kind: str, at: datetime) -> EventRecord:
    data: dict[str, object] = (
        {"code": "E", "message": f"{stream} {seq}"}
        if kind == "ERROR"
        else {"thought": "t", "confidence": 0.5, "reasoningType": "p"}
        if kind == "REASONING"
        else {"statusType": "n", "status": f"{stream} {seq}"}
    )
    return EventRecord.of(
        StreamEvent.model_validate(
            {
                "id": f"evt_{stream}_{seq}",
                "streamId": stream,
                "sessionId": f"wf-{stream}",
                "seq": seq,
                "type": kind,
                "timestamp": at,
                "data": data,
            }
        )
    )


async def corpus(store: HistoryStore, seed: int = 7) -> list[tuple[SearchKey, EventRecord]]:
    """Four streams, 60 events in all, stamps shared across streams and within one (ties
    broken by seq, then stream id), written in several publishes as the committer does."""
    rng = random.Random(seed)
    written: list[tuple[SearchKey, EventRecord]] = []
    clock = {s: T0 for s in STREAMS}
    seqs = dict.fromkeys(STREAMS, 0)
    for stream in STREAMS[1:]:
        await store.open_stream(stream, StreamConfig(max_history_size=100))
    for _ in range(12):
        writes = []
        for stream in rng.sample(STREAMS, 2):
            records = []
            for _ in range(rng.randint(1, 4)):
                clock[stream] += timedelta(milliseconds=rng.choice([0, 0, 1, 5]))
                seqs[stream] += 1
                rec = event(stream, seqs[stream], rng.choice(KINDS), clock[stream])
                records.append(rec)
                written.append(((millis_of(clock[stream]), seqs[stream], stream), rec))
            writes.append(StreamWrite(stream, records))
        await store.write(writes)
    return written


def expected(written: list[tuple[SearchKey, EventRecord]], query: SearchQuery) -> list[SearchKey]:
    keys = [
        key
        for key, rec in written
        if key[2] in query.stream_ids
        and (query.event_types is None or rec.type in query.event_types)
        and (query.start_ms is None or key[0] >= query.start_ms)
        and (query.end_ms is None or key[0] <= query.end_ms)
        and (query.before is None or key < query.before)
    ]
    return sorted(keys, reverse=True)


async def every_page(store: HistoryStore, query: SearchQuery) -> list[SearchKey]:
    """Follow ``last`` from batch to batch, as the hub does, to the end."""
    keys: list[SearchKey] = []
    for _ in range(200):
        batch = await store.search(query)
        got = [f.key for f in batch.found]
        assert got == sorted(got, reverse=True)
        assert all(f.key == (f.key[0], f.record.seq, f.record.event.stream_id) for f in batch.found)
        keys += got
        if batch.last is None:
            return keys
        query = replace(query, before=batch.last)
    raise AssertionError("paging did not end")


QUERIES = [
    {},
    {"stream_ids": frozenset({"s2", "s4"})},
    {"event_types": frozenset({StreamEventType.ERROR})},
    {"event_types": frozenset({StreamEventType.ERROR, StreamEventType.STATUS})},
    {"event_types": frozenset()},
    {"start_ms": 5, "end_ms": 20},
    {"start_ms": 12},
    {"stream_ids": frozenset({"s1"}), "end_ms": 9},
]


def query_fields(shape: dict[str, object]) -> tuple[object, dict[str, object]]:
    """A QUERIES entry as SearchQuery's stream ids (every stream by default) and its
    other fields, the time bounds moved from ms after T0 to ms since the epoch."""
    fields = dict(shape)
    for bound in ("start_ms", "end_ms"):
        if bound in fields:
            fields[bound] = millis_of(T0) + int(fields[bound])  # type: ignore[call-overload]
    return fields.pop("stream_ids", frozenset(STREAMS)), fields


@pytest.mark.parametrize("shape", QUERIES, ids=[str(i) for i in range(len(QUERIES))])
@pytest.mark.parametrize("limit", [1, 7, 100])
async def test_search_pages_equal_the_reference(
    make_store: StoreFactory, shape: dict[str, object], limit: int
) -> None:
    store = await make_store(100)
    written = await corpus(store)
    stream_ids, fields = query_fields(shape)
    for all_streams in (False, True) if stream_ids == frozenset(STREAMS) else (False,):
        query = SearchQuery(
            limit=limit,
            stream_ids=stream_ids,  # type: ignore[arg-type]
            all_streams=all_streams,
            **fields,  # type: ignore[arg-type]
        )
        assert await every_page(store, query) == expected(written, query)


async def test_search_from_a_cursor_inside_a_tie(make_store: StoreFactory) -> None:
    """A page that ends among events of one millisecond goes on with the rest of them."""
    store = await make_store(100)
    written = await corpus(store)
    keys = sorted((k for k, _ in written), reverse=True)
    for cut in (keys[3], keys[10], keys[-2]):
        query = SearchQuery(limit=5, stream_ids=frozenset(STREAMS), before=cut)
        assert await every_page(store, query) == [k for k in keys if k < cut]


async def test_search_of_unknown_or_no_streams_is_empty(make_store: StoreFactory) -> None:
    store = await make_store(100)
    await corpus(store)
    for ids in (frozenset(), frozenset({"nope"})):
        batch = await store.search(SearchQuery(limit=10, stream_ids=ids))
        assert batch.found == [] and batch.last is None


@pytest.mark.parametrize("shape", QUERIES, ids=[str(i) for i in range(len(QUERIES))])
async def test_sql_reads_many_streams_in_slices(
    make_store: StoreFactory, shape: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past FEW_STREAMS the SQL backends name the streams in one statement per slice of
    MAX_LISTED_STREAMS and merge (4 streams in slices of 3 here): the same pages."""
    monkeypatch.setattr(sql_tables, "FEW_STREAMS", 1)
    monkeypatch.setattr(sql_tables, "MAX_LISTED_STREAMS", 3)
    store = await make_store(100)
    written = await corpus(store)
    stream_ids, fields = query_fields(shape)
    query = SearchQuery(limit=5, stream_ids=stream_ids, **fields)  # type: ignore[arg-type]
    assert await every_page(store, query) == expected(written, query)
