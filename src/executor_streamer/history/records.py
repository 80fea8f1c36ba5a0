"""The hub's unit of storage and fan-out: an event plus its wire bytes."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime

from ..types.enums import StreamEventType
from ..types.events import StreamEvent
from ..types.filters import HistoryFilter

_to_json = StreamEvent.__pydantic_serializer__.to_json
_from_json = StreamEvent.model_validate_json


def data_text(event: StreamEvent) -> str:
    """The event's ``data`` as the JSON text a search matches against."""
    return event.data.model_dump_json(by_alias=True, exclude_none=True)


class EventRecord:
    """A published event, validated once and serialized once (docs/architecture.md).

    Fan-out hands the same record to every subscriber; transports write ``payload``
    as it is, so no event is serialized per client. A record read back from storage
    (:meth:`stored`) carries only the bytes and what fan-out reads per event; its
    ``event`` is parsed from ``payload`` the first time a filter or caller asks for it,
    so a replay that needs no filter parses nothing.
    """

    __slots__ = ("_event", "payload", "seq", "type", "view")

    payload: bytes
    """The event as compact camelCase JSON."""
    seq: int
    """``event.seq``, kept as a plain field: fan-out reads it per subscriber per event."""
    type: StreamEventType
    """``event.type``, for the same reason (delivery metrics count by type)."""
    view: object | None
    """What filter expressions see of the event (core/expressions.py), built by the first
    one that reads it: every subscription filtering this record reads the same one."""

    def __init__(self, event: StreamEvent, payload: bytes) -> None:
        self._event: StreamEvent | None = event
        self.payload = payload
        self.seq = event.seq
        self.type = event.type
        self.view = None

    @classmethod
    def of(cls, event: StreamEvent) -> EventRecord:
        """Serialize ``event``; raises pydantic's serialization error for non-JSON data."""
        return cls(event, _to_json(event, by_alias=True, exclude_none=True))

    @classmethod
    def stored(cls, seq: int, type: StreamEventType, payload: bytes) -> EventRecord:
        """A record for ``payload`` as storage kept it; ``event`` is parsed on demand."""
        record = cls.__new__(cls)
        record._event = None
        record.payload = payload
        record.seq = seq
        record.type = type
        record.view = None
        return record

    @property
    def event(self) -> StreamEvent:
        if self._event is None:
            self._event = _from_json(self.payload)
        return self._event

    def data_text(self) -> str:
        """The event's ``data`` as JSON text, as searches match it (:func:`data_text`).

        Cut out of ``payload`` rather than serialized again: the envelope's fields before
        ``data`` are ids, numbers, an enum and a timestamp, none of which can hold the text
        ``,"data":``, and without metadata ``data`` is the last field."""
        if self.event.metadata is not None:
            return data_text(self.event)
        start = self.payload.index(b',"data":') + len(b',"data":')
        return self.payload[start:-1].decode()

    def __repr__(self) -> str:
        return f"EventRecord(seq={self.seq}, type={self.type.value}, payload={self.payload!r})"


def drop_views(records: Iterable[EventRecord]) -> None:
    """Let go of what filter expressions saw of ``records``, once they are filtered: a
    view holds the event read into CEL values, several times its JSON, and records stay
    queued for subscribers or kept for idempotency keys long after."""
    for record in records:
        if record.view is not None:
            record.view = None


STAMP_FIELD = b'"timestamp":"'
STAMP_SIZE = len("2026-01-01T00:00:00.000Z")


def stamp_text(payload: bytes) -> bytes:
    """An event's timestamp as the fixed-width RFC 3339 text of its payload, found
    without parsing it (text order is time order). The envelope's fields before it are
    ids, a seq and a type, none of which can hold ``"timestamp":"``."""
    at = payload.index(STAMP_FIELD) + len(STAMP_FIELD)
    return payload[at : at + STAMP_SIZE]


def parse_stamp(text: bytes) -> datetime:
    """A stamp as the wire writes it (``2026-01-01T10:00:00.123Z``), back to a datetime."""
    return datetime.fromisoformat(text.decode())


def stamp_of(payload: bytes) -> datetime:
    return parse_stamp(stamp_text(payload))


Predicate = Callable[[EventRecord], bool]
"""A compiled filter. It takes the record, not the event: a record read back from storage
parses its event only when asked, and the commonest filter, by event type, never asks."""


def history_predicate(spec: HistoryFilter) -> Predicate | None:
    """The predicate of a history query over events in seq order, ignoring ``limit``,
    ``offset``, ``after_seq`` and the time bounds: stamps never decrease along seqs, so
    the caller answers those by position (a record read back from storage would parse
    its event to be checked against them). An expression is the hub's to evaluate
    (``core.stream_history``): a backend handed one refuses rather than ignore it."""
    if spec.expression is not None:
        raise ValueError("HistoryFilter.expression reached a backend: use hub.history.query")
    checks: list[Predicate] = []
    if spec.event_types is not None:
        types = frozenset(spec.event_types)
        checks.append(lambda r: r.type in types)
    if spec.search_text is not None:
        needle = spec.search_text.casefold()
        checks.append(lambda r: needle in r.data_text().casefold())
    if not checks:
        return None
    return lambda record: all(check(record) for check in checks)
