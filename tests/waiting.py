"""Waiting, in the tests, for a condition rather than for a fixed time.

A test that sleeps for a while and then looks is a guess at how long the system takes: too
short on a loaded machine and it fails, too long and the suite crawls. These helpers poll
the condition itself until it holds or a generous deadline passes; they answer whether it
held, and the caller asserts, saying what it waited for::

    assert await eventually(lambda: len(seen) == 3), "the three events did not arrive"
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

EVERY = 0.01
"""Seconds between two checks of a condition."""


async def eventually(condition: Callable[[], object], seconds: float = 20) -> bool:
    """Whether ``condition()`` became true within ``seconds`` (checked every 10 ms); the
    caller asserts, saying what it waited for."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not condition():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(EVERY)
    return True


async def eventually_async(check: Callable[[], Awaitable[object]], seconds: float = 20) -> bool:
    """Whether ``await check()`` became true within ``seconds`` (checked every 10 ms), for
    a condition that must itself wait, such as a request to the hub; the caller asserts."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not await check():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(EVERY)
    return True


def eventually_blocking(
    condition: Callable[[], object], seconds: float = 20, every: float = EVERY
) -> bool:
    """Whether ``condition()`` became true within ``seconds`` (checked every ``every``
    seconds), blocking the calling thread: for code with no event loop, such as waiting
    for a server in another thread or process; the caller asserts."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(every)
    return True


async def clear_of_a_minute_edge(margin: float = 10.0) -> None:
    """Return at once, unless the wall clock is within ``margin`` seconds of a whole
    minute: then wait until that minute has begun.

    Per-minute rate limits count in the ``limits`` library's sliding windows, which are
    whole minutes of the wall clock. Across an edge, the previous minute's count is weighed
    by the time left of it and rounded down, so a burst that straddles the edge is counted
    one short; a test of an exact count starts clear of that."""
    assert await eventually(lambda: time.time() % 60 < 60 - margin, margin + 5), "clock stood"
