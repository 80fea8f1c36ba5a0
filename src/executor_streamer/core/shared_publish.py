"""Publishing into a store shared by several hubs (docs/multi-node.md).

The events are validated, their command ids and screenshots resolved and serialized
here as on one hub, but with the seq and timestamp cut out of each payload: the store
numbers and stamps them atomically, whichever hub publishes. Subscribers are not fed
from here: every hub that has subscribers follows the stream and gets the events in seq
order from the store, this one included.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from ..errors import StreamNotFound
from ..history.records import STAMP_FIELD, STAMP_SIZE, EventRecord
from ..history.shared import CommandOp, EventParts, IdempotencyKey, SharedHistory
from ..types.base import format_timestamp, utc_now
from ..types.enums import StreamEventType
from ..types.events import CommandCompletedData, CommandFailedData, CommandStartedData
from ..types.ids import STREAM_ID_PREFIX, new_stream_id
from .commands import CommandTracker
from .streams import Stream, StreamManager
from .validation import PreparedEvent

if TYPE_CHECKING:
    from .publisher import StreamPublisher

_SEQ = b',"seq":0,'


def split_payload(payload: bytes) -> tuple[bytes, bytes, bytes]:
    """``(head, mid, tail)`` of a payload serialized with seq 0, such that the payload
    with seq ``n`` and stamp ``t`` is ``head + n + mid + t + tail``. The fields before
    ``seq`` are ids whose characters cannot form ``,"seq":0,``."""
    at = payload.index(_SEQ) + len(_SEQ) - 2
    head, rest = payload[:at], payload[at + 1 :]
    stamp = rest.index(STAMP_FIELD) + len(STAMP_FIELD)
    return head, rest[:stamp], rest[stamp + STAMP_SIZE :]


class SharedPublisher:
    def __init__(
        self, publisher: StreamPublisher, streams: StreamManager, store: SharedHistory
    ) -> None:
        self._publisher = publisher
        self._streams = streams
        self._store = store

    async def publish(
        self,
        session_id: str,
        prepared: Sequence[PreparedEvent],
        idempotency: IdempotencyKey | None,
    ) -> list[EventRecord]:
        stamp = utc_now()
        stream = await self._streams.discover(session_id)
        if stream is None:
            if not self._publisher.auto_create or session_id.startswith(STREAM_ID_PREFIX):
                raise StreamNotFound(session_id)
            # Validate and size the events before the stream exists: a rejected publish
            # leaves nothing behind, on any hub.
            candidate = new_stream_id()
            parts = self._parts(candidate, session_id, prepared, stamp)
            stream, _ = await self._streams.ensure_stream(session_id, stream_id=candidate)
            if stream.id != candidate:
                parts = self._parts(stream.id, session_id, prepared, stamp)
        else:
            parts = self._parts(stream.id, stream.workflow_session_id, prepared, stamp)
        published = await self._store.publish(
            stream.state(), parts, format_timestamp(stamp), idempotency
        )
        records = published.records
        if not published.repeated and records:
            self._applied(stream, published.epoch, records)
        return records

    def _applied(self, stream: Stream, epoch: str, records: list[EventRecord]) -> None:
        # With subscribers here the stream is followed, and its position moves only as
        # events reach them in order; without, nothing waits for them.
        if not stream.subscriptions:
            if epoch != stream.epoch:
                stream.epoch, stream.last_seq = epoch, 0
            stream.last_seq = max(stream.last_seq, records[-1].seq)
        self._streams.mark_active(stream)
        stream.counters.record(records)
        self._publisher.record_published(records)

    def _parts(
        self,
        stream_id: str,
        session_id: str,
        prepared: Sequence[PreparedEvent],
        stamp: datetime,
    ) -> list[EventParts]:
        tracker = CommandTracker()  # matches within the batch; the store matches the rest
        records = self._publisher.build_records(
            stream_id, session_id, prepared, tracker, 0, stamp, step=0
        )
        parts = []
        for item, record in zip(prepared, records, strict=True):
            head, mid, tail = split_payload(record.payload)
            shot = item.screenshot
            parts.append(
                EventParts(
                    record.type,
                    head,
                    mid,
                    tail,
                    _command(item, record),
                    None if shot is None else (shot.screenshot_id, shot.image),
                )
            )
        return parts


def _command(item: PreparedEvent, record: EventRecord) -> tuple[CommandOp, str, str] | None:
    data = record.event.data
    if isinstance(data, CommandStartedData) and item.type is StreamEventType.COMMAND_STARTED:
        assert data.command_id is not None
        return ("start", data.command_name, data.command_id)
    if isinstance(data, CommandCompletedData | CommandFailedData):
        assert data.command_id is not None
        given = getattr(item.data, "command_id", None) is not None
        return ("finish" if given else "match", data.command_name, data.command_id)
    return None
