"""redis-py's undocumented parts that redis_engine/internals.py uses are there."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio.cluster import NodesManager

from executor_streamer.redis_engine import internals


def test_every_private_part_is_there() -> None:
    """Under the installed redis-py, the Cluster client's slot map can be re-read."""
    assert internals.missing_parts() == []
    internals.verify()


def test_a_missing_part_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """If redis-py drops NodesManager.initialize, verify() says so with the version."""

    def initialize(self: Any) -> None:  # no longer a coroutine
        return None

    monkeypatch.setattr(NodesManager, "initialize", initialize)
    assert internals.missing_parts() == [
        "redis.asyncio.cluster NodesManager.initialize (a coroutine)"
    ]
    with pytest.raises(RuntimeError, match=r"NodesManager\.initialize.*redis \d"):
        internals.verify()
