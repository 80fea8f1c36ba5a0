"""One rule for every Redis command the engine sends: a failure to get an answer is
``StorageUnavailable`` (the hub answers 503 and changes nothing), whatever redis-py raised."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from redis.exceptions import RedisClusterException, RedisError, ResponseError

from ..errors import StorageUnavailable


async def call(awaitable: Awaitable[Any]) -> Any:
    """Await a Redis command. (Typed Any: redis-py's replies are unions of every shape a
    command may give.)"""
    try:
        return await awaitable
    except ResponseError as exc:
        raise StorageUnavailable(f"redis refused: {exc}") from exc
    except (RedisError, RedisClusterException, OSError) as exc:
        raise StorageUnavailable(
            f"redis is not reachable: {exc.__class__.__name__}: {exc}"
        ) from exc
