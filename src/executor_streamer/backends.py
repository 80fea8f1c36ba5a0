"""Which history backend a configuration names, built here and only here.

The core works against the protocols in ``history/base.py`` and ``history/shared.py`` and
never names a backend; the hub asks :func:`storage_for` when it is given no store. The
backends' libraries are optional extras (``sqlite``, ``postgres``, ``redis``), so each is
imported only when chosen, and a missing one is a ``ConfigError`` that names the extra.
"""

from __future__ import annotations

from pathlib import Path

from .config import ExecutorStreamerConfig
from .errors import ConfigError
from .history.base import HistoryStore
from .history.memory import MemoryHistory


def storage_for(config: ExecutorStreamerConfig) -> HistoryStore:
    """A new store of the backend ``persistence`` names (docs/architecture.md), not yet started."""
    persistence = config.persistence
    backend = persistence.storage_backend
    if backend == "memory":
        return MemoryHistory()
    if backend == "redis":
        try:
            # redis-py is an optional extra: imported only when chosen.
            from .redis_engine.store import RedisHistory
        except ImportError as exc:
            raise ConfigError(
                "persistence.storageBackend: 'redis' needs the 'redis' extra "
                f"(pip install 'executor-streamer[redis]'): {exc}"
            ) from None
        if not persistence.connection_string:
            raise ConfigError("persistence.connectionString: required for the 'redis' backend")
        return RedisHistory(persistence.connection_string)
    try:
        # SQLAlchemy and the drivers are optional extras: imported only when chosen.
        from .history.sql import SqlHistory
    except ImportError as exc:
        extra = "sqlite" if backend == "file" else "postgres"
        raise ConfigError(
            f"persistence.storageBackend: {backend!r} needs the {extra!r} extra "
            f"(pip install 'executor-streamer[{extra}]'): {exc}"
        ) from None
    return SqlHistory(sql_url(backend, persistence.connection_string))


DEFAULT_FILE = Path("data/executor-streamer.db")


def sql_url(backend: str, connection_string: str | None) -> str:
    """The SQLAlchemy URL for ``file`` (a path or sqlite URL) or ``database`` (any URL)."""
    if backend == "file":
        target = connection_string or str(DEFAULT_FILE)
        if "://" in target:
            return target
        path = Path(target).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite+aiosqlite:///{path}"
    if not connection_string:
        raise ConfigError("persistence.connectionString: required for the 'database' backend")
    for plain, async_driver in (
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgres://", "postgresql+asyncpg://"),
        ("sqlite://", "sqlite+aiosqlite://"),
    ):
        if connection_string.startswith(plain):
            return async_driver + connection_string[len(plain) :]
    return connection_string
