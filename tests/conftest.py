"""Shared fixtures: a running in-process hub on the seed's defaults."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import pytest

from executor_streamer import ExecutorStreamer, ExecutorStreamerConfig, StreamEvent, Subscription
from executor_streamer.core.subscription import flatten
from executor_streamer.demo import render_png
from executor_streamer.history import MemoryHistory, ResumeRead, StreamWrite
from executor_streamer.history.records import Predicate
from executor_streamer.types import StreamConfig

PNG = render_png(8, 6, 0.5, 3)
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 60

pytest_plugins = ["tests.live_server"]

HubFactory = Callable[..., Awaitable[ExecutorStreamer]]


@pytest.fixture
async def make_hub() -> AsyncIterator[HubFactory]:
    """Start hubs with config overrides (nested, camelCase or snake_case); all stop after."""
    hubs: list[ExecutorStreamer] = []

    async def factory(**overrides: Any) -> ExecutorStreamer:
        hub = ExecutorStreamer(ExecutorStreamerConfig().with_overrides(overrides))
        await hub.start()
        hubs.append(hub)
        return hub

    yield factory
    for hub in hubs:
        await hub.stop()


@pytest.fixture
async def hub(make_hub: HubFactory) -> ExecutorStreamer:
    """A running hub on the seed's defaults."""
    return await make_hub()


def drain_events(sub: Subscription) -> list[StreamEvent]:
    """Everything queued on ``sub`` now, replays expanded, without waiting."""
    return [record.event for record in flatten(sub.drain())]


def seqs(events: list[StreamEvent]) -> list[int]:
    return [e.seq for e in events]


class YieldingHistory(MemoryHistory):
    """The memory backend, yielding to the event loop ``yields`` times around each
    append, read and stream opening, as a durable backend suspends on I/O. It lets tests
    interleave publishes and subscribes where the plain memory backend never would."""

    def __init__(self, yields: int) -> None:
        super().__init__()
        self.yields = yields

    async def _pause(self) -> None:
        for _ in range(self.yields):
            await asyncio.sleep(0)

    async def open_stream(self, stream_id: str, config: StreamConfig) -> None:
        await self._pause()
        await super().open_stream(stream_id, config)

    async def write(self, writes: Sequence[StreamWrite]) -> None:
        await self._pause()
        await super().write(writes)
        await self._pause()

    async def read_range(
        self, stream_id: str, after: int, until: int, predicate: Predicate | None
    ) -> ResumeRead:
        await self._pause()
        read = await super().read_range(stream_id, after, until, predicate)
        await self._pause()
        return read
