"""What other hubs sharing the backend do, applied to this hub's streams
(docs/multi-node.md).

:class:`FollowedStream` is how the shared store hands a followed stream's events to
the local subscribers, in seq order; :class:`AnnouncedChanges` applies the changes other
hubs announce (a stream made, closed, reopened, purged). Lifecycle callbacks run on the
hub where a change was made, not again on every hub that hears of it.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import structlog

from ..history.base import StreamState
from ..history.records import EventRecord, stamp_of
from ..types.enums import SessionStatus
from ..types.streams import StreamConfig
from .subscription import CloseReason

if TYPE_CHECKING:
    from .streams import Stream, StreamManager

_log = structlog.get_logger("executor_streamer.other_hubs")


class FollowedStream:
    """A stream as its events arrive from the shared store (a ``FollowTarget``)."""

    __slots__ = ("stream",)

    def __init__(self, stream: Stream) -> None:
        self.stream = stream

    @property
    def epoch(self) -> str:
        return self.stream.epoch

    @property
    def last_seq(self) -> int:
        return self.stream.last_seq

    @property
    def idle(self) -> bool:
        return not self.stream.subscriptions

    def receive(self, records: list[EventRecord]) -> None:
        stream = self.stream
        if stream.status is SessionStatus.INITIALIZING:
            stream.status = SessionStatus.ACTIVE
        # Read back from the store, the records parse their events only when asked: the
        # stamp is cut out of the bytes instead (a parse per delivery cost 4 % of a hub).
        stream.deliver(records, stamp_of(records[-1].payload))

    def reset(self, epoch: str, last_seq: int) -> None:
        """Positions held here mean nothing now (another epoch, or events lost before they
        could be handed over): subscribers are closed to resume, and learn it."""
        stream = self.stream
        if stream.subscriptions:
            for sub in list(stream.subscriptions):
                sub.close(CloseReason.RESET)
            _log.warning("stream_reset", stream_id=stream.id, epoch=epoch, last_seq=last_seq)
        stream.epoch, stream.last_seq = epoch, last_seq


class AnnouncedChanges:
    """Applies other hubs' announcements to the local registry (a ``StreamChanges``)."""

    def __init__(self, manager: StreamManager) -> None:
        self._manager = manager
        self._tasks: set[asyncio.Task[None]] = set()
        self._followers: dict[str, FollowedStream] = {}

    def target(self, stream: Stream) -> FollowedStream:
        follower = self._followers.get(stream.id)
        if follower is None or follower.stream is not stream:
            follower = self._followers[stream.id] = FollowedStream(stream)
        return follower

    async def caught_up(self, stream: Stream) -> None:
        """Hand local subscribers every event stored so far (before they end)."""
        shared = self._manager.shared
        if shared is not None and stream.subscriptions:
            await shared.follow(stream.id, self.target(stream))
            await shared.caught_up(stream.id)

    def stream_changed(self, stream_id: str, change: dict[str, Any]) -> None:
        task = asyncio.create_task(self._apply(stream_id, change))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _apply(self, stream_id: str, change: dict[str, Any]) -> None:
        manager = self._manager
        try:
            stream = manager.find(stream_id)
            if change.get("purged"):
                if stream is not None:
                    manager.forget(stream)
                self._followers.pop(stream_id, None)
                return
            if stream is None:
                await manager.discover(stream_id)
                return
            status = change.get("status")
            if isinstance(status, str):
                self._set(stream, SessionStatus(status), change)
                if stream.status is SessionStatus.CLOSED:
                    await self.caught_up(stream)
                    for sub in list(stream.subscriptions):
                        sub.close(CloseReason.STREAM_CLOSED)
        except Exception:
            _log.exception("remote_change_failed", stream_id=stream_id, change=change)

    def refresh(self, stream: Stream, state: StreamState) -> None:
        """The registry's entry for a known stream, read in a periodic sync."""
        if state.status != stream.status.value:
            self.stream_changed(stream.id, {"status": state.status, "config": state.config})
        if not stream.subscriptions and (
            state.epoch != stream.epoch or state.last_seq > stream.last_seq
        ):
            stream.epoch, stream.last_seq = state.epoch, state.last_seq
        if state.last_activity > stream.last_activity:
            stream.last_activity = state.last_activity

    @staticmethod
    def _set(stream: Stream, status: SessionStatus, change: dict[str, Any]) -> None:
        if isinstance(change.get("config"), dict):
            config = StreamConfig.model_validate(change["config"])
            if config != stream.config:
                stream.config = config
        if isinstance(change.get("metadata"), dict):
            stream.metadata = change["metadata"]
        stream.status = status
