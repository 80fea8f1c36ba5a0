"""The engine assembled: one object for the hub, its parts behind their own interfaces."""

from __future__ import annotations

from executor_streamer.history.shared import HubReports, SharedHistory, StreamRegistry
from executor_streamer.redis_engine.store import RedisHistory
from executor_streamer.security.rate_limits import ConnectionCaps
from executor_streamer.security.tickets import OnceStore


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
