"""Group commit: publishes are stored together, acknowledged and delivered in seq order.

A publisher holds its stream's lock only to assign seqs and build its records, then
submits them here and waits. One task takes whatever has queued up meanwhile, from any
number of publishers and streams, and stores it with a single
:meth:`~executor_streamer.history.base.HistoryStore.write` (one transaction on SQL). So
while a transaction is in flight the next one fills up, and a durable backend's cost per
commit is shared by every event in it instead of paid per publish.

Once a write is stored, each publish in it is applied in order (the stream's seq and
command state advance and subscribers get the records) and its publisher is
acknowledged. If a write fails, nothing in it was stored: its publishes fail, and so do
the later ones already queued for the same streams, since their seqs follow seqs that
now do not exist. The streams' staged state then falls back to what was committed, and
the next publish reuses those seqs.

Applying a stored publish never fails its publisher or stops the committer: fan-out calls
into transport code (``Subscription.on_ready``), which contains its own failures, and
anything else that raises while applying is logged, the publish still acknowledged.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

from ..errors import StorageUnavailable
from ..history.base import HistoryStore, StreamWrite
from ..history.records import EventRecord
from .commands import CommandTracker

if TYPE_CHECKING:
    from .streams import Stream

_log = structlog.get_logger("executor_streamer.committer")


@dataclass(eq=False, slots=True)
class PendingPublish:
    """One publish between building its records and its commit."""

    stream: Stream
    records: Sequence[EventRecord]
    write: StreamWrite
    commands: CommandTracker
    """The stream's command state once this publish is applied."""
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class GroupCommitter:
    def __init__(
        self,
        storage: HistoryStore,
        apply: Callable[[PendingPublish], None],
        max_events: int = 10_000,
    ) -> None:
        self._storage = storage
        self._apply = apply
        self._max_events = max_events
        self._queue: deque[PendingPublish] = deque()
        self._task: asyncio.Task[None] | None = None

    def submit(self, pending: PendingPublish) -> None:
        """Queue a publish; its ``done`` resolves once it is stored and applied. Called
        with the stream's lock held, so a stream's publishes queue in seq order."""
        pending.stream.staged.append(pending)
        self._queue.append(pending)
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="executor-streamer-commit")

    async def drain(self) -> None:
        """Wait until everything submitted so far is stored or failed."""
        while self._task is not None:
            await asyncio.wait({self._task})

    async def _run(self) -> None:
        try:
            while self._queue:
                batch = self._take()
                try:
                    await self._storage.write([p.write for p in batch])
                except Exception as exc:
                    self._fail(batch, exc)
                else:
                    for pending in batch:
                        self._commit(pending)
        finally:
            self._task = None

    def _take(self) -> list[PendingPublish]:
        """Everything queued, up to about ``max_events`` events (at least one publish)."""
        batch = [self._queue.popleft()]
        count = len(batch[0].records)
        while self._queue and count + len(self._queue[0].records) <= self._max_events:
            pending = self._queue.popleft()
            count += len(pending.records)
            batch.append(pending)
        return batch

    def _commit(self, pending: PendingPublish) -> None:
        stream = pending.stream
        assert stream.staged[0] is pending, "a stream's publishes commit in the order they queued"
        stream.staged.popleft()
        try:
            self._apply(pending)
        except Exception:
            # The events are stored: their publisher is acknowledged and the committer
            # goes on whatever went wrong in delivering them. (Subscribers contain their
            # transports' failures themselves; this is the last line.)
            _log.exception("apply_failed", stream_id=stream.id)
        if not pending.done.done():  # its publisher may have been cancelled meanwhile
            pending.done.set_result(None)
        if not stream.staged:
            stream.notify_settled()

    def _fail(self, batch: list[PendingPublish], exc: Exception) -> None:
        streams = {p.stream for p in batch}
        later = [p for p in self._queue if p.stream in streams]
        self._queue = deque(p for p in self._queue if p.stream not in streams)
        for pending in [*batch, *later]:
            if not pending.done.done():
                pending.done.set_exception(_failure(exc))
                pending.done.exception()  # seen, even if its publisher is gone
        for stream in streams:
            stream.staged.clear()
            stream.notify_settled()


def _failure(exc: Exception) -> StorageUnavailable:
    """A fresh error per publisher (one instance raised in many tasks would collect every
    task's traceback). Whatever the backend raised, the publish was not stored: 503."""
    if isinstance(exc, StorageUnavailable):
        failure = StorageUnavailable(exc.message, exc.details)
    else:
        failure = StorageUnavailable(f"history storage failed: {exc.__class__.__name__}: {exc}")
    failure.__cause__ = exc
    return failure
