"""Shared fixtures: a running in-process hub on the seed's defaults."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from executor_streamer import ExecutorStreamer, ExecutorStreamerConfig, StreamEvent, Subscription
from executor_streamer.demo import render_png

PNG = render_png(8, 6, 0.5, 3)
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 60

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
    out: list[StreamEvent] = []
    for item in sub.drain():
        records = getattr(item, "records", None)
        if records is None:
            out.append(item.event)  # type: ignore[union-attr]
        else:
            out.extend(r.event for r in records)
    return out


def seqs(events: list[StreamEvent]) -> list[int]:
    return [e.seq for e in events]
