"""What a WebSocket connection has to write, in the order it must go out: the replies
queued while handling messages, then, per subscription, its events as frames (a
``subscribed`` always precedes that subscription's events and a ``replay_done`` follows
its replay). Knows nothing of the socket: ``websocket.WebSocketSession`` writes what
:meth:`Outbox.take` hands it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..core.subscription import CloseReason, ReplayBatch, Subscription
from ..history.records import EventRecord
from .errors import CLOSE_FOR_REASON, CLOSE_STREAM_CLOSED
from .flush import Flusher
from .frames import ws_event, ws_events, ws_message

ENDS_CONNECTION = frozenset({CloseReason.SLOW_CONSUMER, CloseReason.RESET})
"""A subscription ended for these closes the whole connection: the client reconnects and
resumes every stream from its positions (and epochs)."""


@dataclass
class Subscribed:
    """One subscription of a connection, and how its events are framed."""

    sub: Subscription
    batch: bool
    """Several events in one ``events`` frame."""
    from_query: bool
    """Opened by ``/ws?streamId=``: its end closes the connection."""


@dataclass(slots=True)
class Taken:
    frames: list[bytes]
    delivered: list[EventRecord]
    """The events among ``frames``, for the delivery metrics."""
    close_with: tuple[int, str] | None = None
    """A subscription asked to close the connection (with this code and reason)."""


class Outbox:
    __slots__ = ("_flusher", "bytes", "replies")

    def __init__(self, flusher: Flusher) -> None:
        self._flusher = flusher
        self.replies: list[bytes] = []  # a list: an empty deque costs ~600 bytes
        self.bytes = 0
        """The replies' size, counted against ``limits.maxQueuedBytes``."""

    def put(self, frame: bytes) -> None:
        self.replies.append(frame)
        self.bytes += len(frame)

    def queue(self, kind: str, metadata: dict[str, Any]) -> None:
        self.put(ws_message(kind, metadata))

    def queue_error(
        self,
        code: str,
        message: str,
        request_id: Any = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        error: dict[str, Any] = {"code": code, "message": message}
        if details:
            error["details"] = details
        metadata = None if request_id is None else {"requestId": request_id}
        self.put(ws_message("error", metadata, error=error))

    def take_replies(self) -> list[bytes]:
        replies, self.replies, self.bytes = self.replies, [], 0
        return replies

    def take(self, subs: dict[str, Subscribed]) -> Taken:
        """The queued replies, then frames for what every subscription has queued, until
        one asks to close the connection. A subscription that ended and has nothing left
        to report is removed from ``subs``."""
        taken = Taken(self.take_replies(), [])
        for entry in list(subs.values()):
            self._take_items(entry, subs, taken)
            if taken.close_with is not None:
                break
        return taken

    def _take_items(self, entry: Subscribed, subs: dict[str, Subscribed], taken: Taken) -> None:
        sub = entry.sub
        if sub.close_reason in ENDS_CONNECTION:
            taken.close_with = CLOSE_FOR_REASON[sub.close_reason]
            return
        frames, delivered = taken.frames, taken.delivered
        live = sub.drain_live()
        if live is None:  # a replay batch is queued: frame what comes before and after it
            live = []
            for item in sub.drain():
                if isinstance(item, EventRecord):
                    live.append(item)
                    continue
                self._live_frames(live, entry.batch, frames)
                delivered += live
                live = []
                frames.extend(ws_event(record, replay=True) for record in item.records)
                delivered += item.records
                frames.append(ws_message("replay_done", _replay_done(sub.stream_id, item)))
        self._live_frames(live, entry.batch, frames)
        delivered += live
        if sub.closed and not sub.pending and subs.get(sub.stream_id) is entry:
            del subs[sub.stream_id]
            if sub.close_reason is CloseReason.STREAM_CLOSED:
                frames.append(
                    ws_message(
                        "error",
                        {"streamId": sub.stream_id},
                        error={"code": "STREAM_CLOSED", "message": "the stream was closed"},
                    )
                )
                if entry.from_query:
                    taken.close_with = (CLOSE_STREAM_CLOSED, "stream closed")

    def _live_frames(self, records: list[EventRecord], batch: bool, frames: list[bytes]) -> None:
        if records:
            build = _batch_frame if batch else _event_frames
            frames.extend(self._flusher.frames(build, records, build))


def _replay_done(stream_id: str, batch: ReplayBatch) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "streamId": stream_id,
        "count": len(batch.records),
        "lastSeq": batch.last_seq,
    }
    if batch.request_id is not None:
        metadata["requestId"] = batch.request_id
    return metadata


def _batch_frame(records: Sequence[EventRecord]) -> list[bytes]:
    return [ws_events(records)]


def _event_frames(records: Sequence[EventRecord]) -> list[bytes]:
    return [ws_event(record) for record in records]
