"""Lifecycle callbacks (the original specification's SessionLifecycleCallbacks, plus client events).

Hooks are emitted synchronously wherever the hub changes state, including inside
fan-out, and run in order on one task the hub owns. So a slow or failing callback
never delays a publish or breaks the hub; its exception is logged and the next
callback runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from ..types.enums import SessionStatus
from ..types.events import ErrorContext
from ..types.streams import MODULE_ID, StreamClientInfo

_log = structlog.get_logger("executor_streamer.lifecycle")


@dataclass(frozen=True)
class LifecycleCallbacks:
    """Each hook is optional and async. ``module_id`` is always ``executor-streamer``."""

    on_session_created: Callable[[str, str, str], Awaitable[None]] | None = None
    """(module_id, workflow_session_id, stream_id)"""
    on_session_status_changed: (
        Callable[[str, str, SessionStatus, SessionStatus], Awaitable[None]] | None
    ) = None
    """(module_id, workflow_session_id, old_status, new_status)"""
    on_session_destroyed: Callable[[str, str], Awaitable[None]] | None = None
    """(module_id, workflow_session_id): the stream was purged."""
    on_session_error: Callable[[str, str, ErrorContext], Awaitable[None]] | None = None
    """(module_id, workflow_session_id, error): the stream entered ERROR."""
    on_client_attached: Callable[[str, StreamClientInfo], Awaitable[None]] | None = None
    """(stream_id, client)"""
    on_client_detached: Callable[[str, str], Awaitable[None]] | None = None
    """(stream_id, client_id)"""


class LifecycleNotifier:
    """Runs callbacks in emission order on one owned task."""

    def __init__(self) -> None:
        self.callbacks = LifecycleCallbacks()
        self._queue: asyncio.Queue[tuple[str, tuple[Any, ...]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="executor-streamer-lifecycle")

    async def stop(self) -> None:
        """Run what is already queued, then stop."""
        if self._task is None:
            return
        await self._queue.join()
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None

    async def drain(self) -> None:
        """Wait until every callback emitted so far has run."""
        if self._task is not None:
            await self._queue.join()

    def created(self, workflow_session_id: str, stream_id: str) -> None:
        self._emit("on_session_created", MODULE_ID, workflow_session_id, stream_id)

    def status_changed(
        self, workflow_session_id: str, old: SessionStatus, new: SessionStatus
    ) -> None:
        self._emit("on_session_status_changed", MODULE_ID, workflow_session_id, old, new)

    def destroyed(self, workflow_session_id: str) -> None:
        self._emit("on_session_destroyed", MODULE_ID, workflow_session_id)

    def errored(self, workflow_session_id: str, error: ErrorContext) -> None:
        self._emit("on_session_error", MODULE_ID, workflow_session_id, error)

    def client_attached(self, stream_id: str, client: StreamClientInfo) -> None:
        self._emit("on_client_attached", stream_id, client)

    def client_detached(self, stream_id: str, client_id: str) -> None:
        self._emit("on_client_detached", stream_id, client_id)

    def _emit(self, hook: str, *args: Any) -> None:
        if getattr(self.callbacks, hook) is not None:
            self._queue.put_nowait((hook, args))

    async def _run(self) -> None:
        while True:
            hook, args = await self._queue.get()
            try:
                callback = getattr(self.callbacks, hook)
                if callback is not None:
                    await callback(*args)
            except Exception:
                _log.exception("lifecycle_callback_failed", hook=hook)
            finally:
                self._queue.task_done()
