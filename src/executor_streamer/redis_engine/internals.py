"""Every use of redis-py's undocumented parts, in one place.

A Cluster client keeps its map of slots to nodes in ``nodes_manager`` and re-reads it
only when a command is redirected. The follower's pub/sub connections issue no such
command, so when one loses its node the engine asks for a fresh map itself with
``nodes_manager.initialize()`` (CLUSTER SLOTS), which redis-py does not document.
pyproject.toml bounds redis-py to the major versions the tests ran against;
:func:`verify` checks the part, the store calls it when it starts on a Cluster, and
``tests/redis_engine/test_internals.py`` runs it.
"""

from __future__ import annotations

import importlib.metadata
import inspect

from redis.asyncio.cluster import NodesManager, RedisCluster

__all__ = ["missing_parts", "reread_slot_map", "verify"]


async def reread_slot_map(cluster: RedisCluster) -> None:
    """Read the Cluster's slot map again from its nodes."""
    await cluster.nodes_manager.initialize()


def missing_parts() -> list[str]:
    """What :func:`reread_slot_map` relies on and the installed redis-py no longer has."""
    missing: list[str] = []
    initialize = getattr(NodesManager, "initialize", None)
    if initialize is None or not inspect.iscoroutinefunction(initialize):
        missing.append("redis.asyncio.cluster NodesManager.initialize (a coroutine)")
    # The names the constructor's code uses (no source files needed; past its decorators).
    if "nodes_manager" not in inspect.unwrap(RedisCluster.__init__).__code__.co_names:
        missing.append("redis.asyncio.cluster RedisCluster.nodes_manager")
    return missing


def verify() -> None:
    """Raise, naming what is missing and the installed version, if a part is gone."""
    missing = missing_parts()
    if missing:
        raise RuntimeError(
            f"private parts of redis-py the engine uses are gone ({', '.join(missing)}) "
            f"with redis {importlib.metadata.version('redis')}: install a version "
            "pyproject.toml allows, or adapt executor_streamer/redis_engine/internals.py"
        )
