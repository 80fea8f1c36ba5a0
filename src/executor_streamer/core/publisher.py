"""Publishing (the original specification's IStreamPublisher, docs/rest.md).

A publish goes: validate (outside any lock) → take the stream's lock → assign seqs,
resolve command ids, stamp, serialize once and check sizes → queue the records, their
screenshots and the stream's new state for the group committer and let go of the lock →
once they are committed (with whatever else queued meanwhile), hand the records to
subscribers and acknowledge the publisher. Anything that fails leaves the stream as it
was: no seq used, no command matched, nothing stored or delivered.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, cast

from pydantic import ValidationError
from pydantic_core import PydanticSerializationError

from ..config import ExecutorStreamerConfig
from ..errors import EventTooLarge, FieldError, InvalidInput, StreamClosed, StreamNotFound
from ..history.base import HistoryStore, StreamWrite
from ..history.records import EventRecord
from ..history.shared import IdempotencyKey
from ..types.enums import SessionStatus, StreamEventType
from ..types.events import (
    COMMAND_EVENT_TYPES,
    CommandCompletedData,
    CommandFailedData,
    CommandStartedData,
    EventInput,
    ScreenshotFields,
    ScreenshotInfo,
    StreamEvent,
    StreamEventData,
)
from ..types.ids import STREAM_ID_PREFIX, new_event_ids
from .commands import CommandTracker
from .committer import GroupCommitter, PendingPublish
from .counters import HubCounters
from .idempotency import InFlight, check_idempotency_key, fingerprint
from .memory_budget import MemoryBudget
from .publish_api import JsonObject, PublishApi
from .shared_publish import SharedPublisher
from .streams import Stream, StreamManager
from .validation import (
    PreparedEvent,
    check_metadata,
    check_screenshot,
    prepare_batch,
    prepare_event,
)


class StreamPublisher(PublishApi):
    """Publishes into streams, creating them on first use when auto-create is on.

    Every method returns the stored event(s), so the caller learns ``id``, ``seq``,
    the ``commandId`` used and a screenshot's ``url``. In-process publishing is not
    rate limited.
    """

    def __init__(
        self,
        config: ExecutorStreamerConfig,
        streams: StreamManager,
        storage: HistoryStore,
        counters: HubCounters,
        budget: MemoryBudget,
    ) -> None:
        self._config = config
        self._limits = config.limits
        self._streams = streams
        self._counters = counters
        self._budget = budget
        self._committer = GroupCommitter(storage, self._apply)
        self._recent = budget.recent
        self._in_flight = InFlight()
        self._shared = (
            None if streams.shared is None else SharedPublisher(self, streams, streams.shared)
        )

    async def _publish_image(
        self, session_id: str, image: bytes, fields: JsonObject, metadata: JsonObject | None
    ) -> StreamEvent:
        try:
            if not isinstance(image, bytes | bytearray | memoryview):
                raise InvalidInput.single("data.image", "must be bytes")
            try:
                checked = ScreenshotFields.model_validate(fields)
            except ValidationError as exc:
                raise InvalidInput.from_pydantic(exc, prefix="data") from None
            check_metadata(metadata, self._limits)
            shot = check_screenshot(bytes(image), checked, self._limits)
        except InvalidInput:
            self._counters.record_rejected()
            raise
        prepared = PreparedEvent(StreamEventType.SCREENSHOT, checked, metadata, shot)
        return (await self.publish_prepared(session_id, [prepared]))[0].event

    async def publish_event(
        self,
        session_id: str,
        event: EventInput | Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
    ) -> StreamEvent:
        """Publish ``{type, data, metadata?}`` as a producer would send it over HTTP.
        ``idempotency_key``: see :meth:`publish_prepared`."""
        try:
            prepared = prepare_event(event, self._limits)
        except InvalidInput:
            self._counters.record_rejected()
            raise
        return (await self.publish_prepared(session_id, [prepared], idempotency_key))[0].event

    async def publish_batch(
        self,
        session_id: str,
        events: Sequence[EventInput | Mapping[str, Any]],
        *,
        idempotency_key: str | None = None,
    ) -> list[StreamEvent]:
        """Publish events atomically and in order: all are stored, or none."""
        try:
            prepared = prepare_batch(events, self._limits)
        except InvalidInput:
            self._counters.record_rejected()
            raise
        records = await self.publish_prepared(session_id, prepared, idempotency_key)
        return [r.event for r in records]

    async def publish_wire(
        self,
        session_id: str,
        document: Any,
        idempotency_key: str | None = None,
        owner: str = "",
    ) -> list[EventRecord]:
        """Publish a decoded request body: one event ``{type, data, metadata?}`` or a
        batch ``{events: [...]}``. Returns the records, wire bytes included. ``owner``:
        whose ``idempotency_key`` it is (see :meth:`publish_prepared`)."""
        try:
            if isinstance(document, dict) and "events" in document:
                items = document["events"]
                if not isinstance(items, list):
                    raise InvalidInput.single("events", "must be a list of events")
                if set(document) - {"events"}:
                    extra = sorted(set(document) - {"events"})
                    raise InvalidInput.single(extra[0], "is not allowed beside events")
                prepared = prepare_batch(items, self._limits)
            elif isinstance(document, dict):
                prepared = [prepare_event(document, self._limits)]
            else:
                raise InvalidInput.single("(body)", "must be an event or {events: [...]}")
        except InvalidInput:
            self._counters.record_rejected()
            raise
        return await self.publish_prepared(session_id, prepared, idempotency_key, owner)

    # -- the one path every publish takes ----------------------------------------------

    async def publish_prepared(
        self,
        session_id: str,
        prepared: Sequence[PreparedEvent],
        idempotency_key: str | None = None,
        owner: str = "",
    ) -> list[EventRecord]:
        """Store and deliver validated events; returns the records, wire bytes included.

        A publish repeated with the same ``idempotency_key`` within 5 minutes stores
        nothing and returns the events the first one stored; with other events it is
        refused (``IDEMPOTENCY_KEY_REUSED``). A key is ``owner``'s (the credential's
        subject over HTTP; "" in-process): another owner's key of the same text is
        another key (docs/rest.md)."""
        try:
            self._streams.check_running()
            idempotency = None
            if idempotency_key is not None:
                check_idempotency_key(idempotency_key)
                idempotency = IdempotencyKey(idempotency_key, owner, fingerprint(prepared))
            if self._shared is not None:
                await self._admit()
                async with self._in_flight:
                    return await self._shared.publish(session_id, prepared, idempotency)
            if idempotency is not None:
                found = self._streams.find(session_id)
                workflow = session_id if found is None else found.workflow_session_id

                def still_stored(records: list[EventRecord]) -> bool:
                    """The stream that stored them is the one the session names now."""
                    current = self._streams.find(workflow)
                    return current is not None and current.id == records[0].event.stream_id

                return await self._recent.run(
                    (owner, workflow, idempotency.key),
                    idempotency.fingerprint,
                    lambda: self._publish_admitted(session_id, prepared),
                    still_stored,
                )
            return await self._publish_admitted(session_id, prepared)
        except Exception:
            self._counters.record_rejected()
            raise

    async def _admit(self) -> None:
        if self._budget.used >= self._budget.limit:
            await self._budget.admit()  # evicts, or refuses with MEMORY_PRESSURE

    async def _publish_admitted(
        self, session_id: str, prepared: Sequence[PreparedEvent]
    ) -> list[EventRecord]:
        """:meth:`_publish_local` within the memory budget (a retry whose key found the
        first result stored is answered without it)."""
        await self._admit()
        return await self._publish_local(session_id, prepared)

    async def _publish_local(
        self, session_id: str, prepared: Sequence[PreparedEvent]
    ) -> list[EventRecord]:
        """The single-process path: seqs taken here, stored by the group committer."""
        while True:
            stream, created = await self._stream_for(session_id)
            async with stream.lock:
                if stream.withdrawn:
                    continue  # its creator's publish failed; look the session up again
                try:
                    pending = self._stage(stream, prepared)
                except Exception:
                    if created:  # a rejected publish leaves no stream behind
                        await self._streams.withdraw(stream)
                    raise
            try:
                # A publisher cancelled now cancels only its wait: the committer
                # still stores and delivers what it staged.
                await pending.done
            except Exception:
                if created:
                    async with stream.lock:
                        await self._streams.withdraw(stream)
                raise
            return list(pending.records)

    @property
    def auto_create(self) -> bool:
        return self._config.server.auto_create_streams

    def record_published(self, records: Sequence[EventRecord]) -> None:
        self._counters.record_published(records)

    async def drain(self) -> None:
        """Wait until every publish staged so far is committed or failed."""
        await self._committer.drain()
        await self._in_flight.idle()

    def _stage(self, stream: Stream, prepared: Sequence[PreparedEvent]) -> PendingPublish:
        """Build the publish and queue it for commit; the caller holds the stream's lock."""
        self._streams.check_running()  # stop() may have begun while we waited
        if not stream.is_open:
            raise StreamClosed(stream.workflow_session_id)
        tracker = stream.head_commands.copy()
        records = self.build_records(
            stream.id,
            stream.workflow_session_id,
            prepared,
            tracker,
            stream.head_seq + 1,
            stream.next_timestamp(),
        )
        last = records[-1]
        status = stream.status
        if status is SessionStatus.INITIALIZING:
            status = SessionStatus.ACTIVE  # the first event activates the stream
        after = stream.state(
            status=status.value,
            last_seq=last.seq,
            last_activity=last.event.timestamp,
            running_commands=tracker.running(),
        )
        shots = [
            (item.screenshot.screenshot_id, item.screenshot.image)
            for item in prepared
            if item.screenshot is not None
        ]
        write = StreamWrite(stream.id, records, after, shots)
        pending = PendingPublish(stream, records, write, tracker)
        self._committer.submit(pending)
        return pending

    def _apply(self, pending: PendingPublish) -> None:
        """A committed publish takes effect: command state, status, counters, delivery."""
        stream, records = pending.stream, pending.records
        stream.commands = pending.commands
        self._streams.mark_active(stream)
        stream.counters.record(records)
        self._counters.record_published(records)
        stream.deliver(records)

    async def _stream_for(self, session_id: str) -> tuple[Stream, bool]:
        """The stream to publish into, and whether this call created it."""
        stream = self._streams.find(session_id)
        if stream is not None:
            return stream, False
        if not self._config.server.auto_create_streams or session_id.startswith(STREAM_ID_PREFIX):
            raise StreamNotFound(session_id)  # a stream id names an existing stream or none
        return await self._streams.ensure_stream(session_id)

    def build_records(
        self,
        stream_id: str,
        session_id: str,
        prepared: Sequence[PreparedEvent],
        tracker: CommandTracker,
        first_seq: int,
        timestamp: datetime,
        step: int = 1,
    ) -> list[EventRecord]:
        """The stored events; ``step`` 0 numbers them all ``first_seq`` (a shared store
        numbers them later)."""
        records: list[EventRecord] = []
        errors: list[FieldError] = []
        too_large = False
        ids = new_event_ids(len(prepared))
        for offset, item in enumerate(prepared):
            index = offset if len(prepared) > 1 else None
            event = StreamEvent.trusted(
                id=ids[offset],
                stream_id=stream_id,
                session_id=session_id,
                seq=first_seq + offset * step,
                type=item.type,
                timestamp=timestamp,
                data=_stored_data(stream_id, item, tracker),
                metadata=item.metadata,
            )
            try:
                record = EventRecord.of(event)
            except PydanticSerializationError as exc:
                errors.append(FieldError("data", f"must be JSON-serializable: {exc}", index))
                continue
            if len(record.payload) > self._limits.max_event_bytes:
                too_large = True
                errors.append(
                    FieldError(
                        "(root)",
                        f"event is {len(record.payload)} bytes serialized; at most "
                        f"{self._limits.max_event_bytes} allowed",
                        index,
                    )
                )
            records.append(record)
        if errors:
            raise (EventTooLarge if too_large else InvalidInput)(errors)
        return records


def _stored_data(stream_id: str, item: PreparedEvent, tracker: CommandTracker) -> StreamEventData:
    """The data as stored: command ids resolved, screenshots turned into ScreenshotInfo."""
    data = item.data
    if item.screenshot is not None:
        shot = item.screenshot
        fields = shot.fields
        return ScreenshotInfo.model_construct(
            screenshot_id=shot.screenshot_id,
            mime_type=fields.mime_type,
            width=fields.width,
            height=fields.height,
            size_bytes=len(shot.image.data),
            sha256=shot.image.sha256,
            url=f"/api/streams/{stream_id}/screenshots/{shot.screenshot_id}",
            caption=fields.caption,
            command_id=fields.command_id,
            page_url=fields.page_url,
        )
    assert item.type is not StreamEventType.SCREENSHOT, "screenshots always carry their image"
    if item.type not in COMMAND_EVENT_TYPES:  # most events: no model class tests
        return cast(StreamEventData, data)
    if isinstance(data, CommandStartedData):
        return data.model_copy(
            update={"command_id": tracker.start(data.command_name, data.command_id)}
        )
    assert isinstance(data, CommandCompletedData | CommandFailedData)
    return data.model_copy(
        update={"command_id": tracker.finish(data.command_name, data.command_id)}
    )
