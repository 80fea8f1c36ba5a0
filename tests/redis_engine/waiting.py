"""Waiting, in the Redis engine's tests, for what arrives over the network in its own time."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def eventually(condition: Callable[[], object], seconds: float = 20) -> bool:
    """Whether ``condition()`` became true within ``seconds`` (checked every 10 ms); the
    caller asserts, saying what it waited for."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True
