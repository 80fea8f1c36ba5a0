"""Shared fixtures: a running in-process hub on the original specification's defaults."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Sequence
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

pytest_plugins = ["tests.live_server", "tests.redis_server"]

# -- no credential in any log, over the whole test session ----------------------------------

_CREDENTIAL = re.compile(
    r"eyJ[\w-]{8,}\.eyJ[\w-]{8,}\.[\w-]+"  # a JWT
    r"|[?&](?:ticket|token)=(?!\[redacted\])[\w.-]{8,}"  # a ticket or token in a URL
    r"|bearer\s+(?!\[redacted\])[\w.~+/-]{8,}",  # an Authorization value
    re.IGNORECASE,
)
_CLIENT_LOG_LINE = re.compile(r"^\s*[A-Z]+\s+(?:websockets\.client|httpx|httpcore)[.:]")
"""Log lines of the tests' own clients (which log what they send at DEBUG): not the hub's."""


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    """Fail any test whose captured output or logs hold a token, ticket or Bearer value
    (docs/security.md: they never reach the logs). tests/server/test_security.py checks
    its own tests more closely, at DEBUG and with uvicorn's access log on."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        return
    leaked = [
        found.group(0)[:20] + "..."
        for _, text in report.sections
        for line in text.splitlines()
        if not _CLIENT_LOG_LINE.match(line)
        for found in [_CREDENTIAL.search(line)]
        if found
    ]
    if leaked:
        report.outcome = "failed"
        report.longrepr = f"a credential reached the captured output or logs: {leaked}"


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
    """A running hub on the original specification's defaults."""
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
