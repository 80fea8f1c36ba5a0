"""``Retry-After`` means it: a client that waits as long as a refusal said is let in."""

from __future__ import annotations

import asyncio

import pytest

from executor_streamer.errors import RateLimited
from executor_streamer.security.rate_limits import RateLimits


@pytest.mark.parametrize(("rate", "burst"), [(20, 20), (20, 60), (20, 5)])
async def test_a_publisher_that_waits_its_retry_after_is_let_in(rate: int, burst: int) -> None:
    limits = RateLimits(requests_per_minute=10, events_per_second=rate, connections_per_subject=1)
    accepted = 0
    with pytest.raises(RateLimited) as refused:
        for _ in range(10 * max(rate, burst)):
            await limits.events("wf-1", 1, burst)
            accepted += 1
    assert accepted == max(rate, burst)  # a burst below the rate is one second's worth
    assert refused.value.retry_after >= 1
    await asyncio.sleep(refused.value.retry_after)  # what the refusal said to wait
    await limits.events("wf-1", 1, burst)
