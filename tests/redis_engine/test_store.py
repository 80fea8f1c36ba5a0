"""The engine assembled: one object for the hub, its parts behind their own interfaces."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from executor_streamer import ExecutorStreamer
from executor_streamer.config import ExecutorStreamerConfig
from executor_streamer.history import StreamWrite
from executor_streamer.history.records import EventRecord
from executor_streamer.history.shared import HubReports, SharedHistory, StreamRegistry
from executor_streamer.redis_engine.store import RedisHistory
from executor_streamer.security.rate_limits import ConnectionCaps
from executor_streamer.security.tickets import OnceStore
from executor_streamer.types import StreamConfig, StreamEvent


async def test_the_engine_is_a_shared_history_made_of_narrow_parts() -> None:
    """RedisHistory is what the hub takes for a shared backend, and each part is what its
    user takes (mypy checks the assignments; isinstance the runtime view the hub has)."""
    engine = RedisHistory("redis://127.0.0.1:1/0")  # never connected: no server needed
    try:
        shared: SharedHistory = engine
        registry: StreamRegistry = engine.registry
        reports: HubReports = engine.reports
        tickets: OnceStore = engine.tickets
        caps: ConnectionCaps = engine.connection_caps
        assert isinstance(shared, SharedHistory)
        assert {registry, reports, tickets, caps} <= set(vars(engine).values())
    finally:
        await engine.close()


async def test_retention_never_takes_an_event_published_while_it_looks(redis_url: str) -> None:
    """Retention reads a stream, then removes what it read as old. A hub on start found a
    new stream empty, another publish stored its first event, and the "remove all" that
    followed took that acknowledged event. Now only what was read is ever removed."""
    engine = RedisHistory(redis_url)
    await engine.start()
    try:
        await engine.open_stream("s1", StreamConfig())
        log = engine.log
        original = log._scan

        async def scan_then_publish(*args: Any, **kwargs: Any) -> AsyncIterator[EventRecord]:
            async for record in original(*args, **kwargs):
                yield record
            await engine.write([StreamWrite("s1", [record_at(1, T0)])])

        log._scan = scan_then_publish  # type: ignore[method-assign]
        assert await engine.expire("s1", T0 + timedelta(days=1)) == 0
        log._scan = original  # type: ignore[method-assign]
        assert [r.seq for r in await engine.read_tail("s1", 10)] == [1]
        await engine.write([StreamWrite("s1", [record_at(2, T0 + timedelta(hours=2))])])
        assert await engine.expire("s1", T0 + timedelta(hours=1)) == 1
        assert [r.seq for r in await engine.read_tail("s1", 10)] == [2]
        assert await engine.expire("s1", T0 + timedelta(days=1)) == 1
        assert await engine.read_tail("s1", 10) == []
    finally:
        await engine.close()


T0 = datetime(2026, 1, 1, tzinfo=UTC)


def record_at(seq: int, at: datetime) -> EventRecord:
    return EventRecord.of(
        StreamEvent.model_validate(
            {
                "id": f"evt_{seq}",
                "streamId": "s1",
                "sessionId": "wf-1",
                "seq": seq,
                "type": "STATUS",
                "timestamp": at,
                "data": {"statusType": "n", "status": "s"},
            }
        )
    )


async def test_a_hub_stopped_right_after_starting_stops(redis_url: str) -> None:
    """Its maintenance loop, cancelled inside its first Redis calls, lost the cancellation
    there and ran on, and stop() waited for it forever."""
    config = ExecutorStreamerConfig().with_overrides(
        {"persistence": {"storageBackend": "redis", "connectionString": redis_url}}
    )
    for _ in range(3):
        hub = ExecutorStreamer(config)
        await hub.start()
        await asyncio.wait_for(hub.stop(), 10)
