"""The hub's unit of storage and fan-out: an event plus its wire bytes."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..types.events import StreamEvent
from .filters import data_text

_to_json = StreamEvent.__pydantic_serializer__.to_json


@dataclass(frozen=True, slots=True)
class EventRecord:
    """A published event, validated once and serialized once (DESIGN.md §9).

    Fan-out hands the same record to every subscriber; transports write ``payload``
    as it is, so no event is serialized per client.
    """

    event: StreamEvent
    payload: bytes
    """The event as compact camelCase JSON."""
    seq: int = field(init=False)
    """``event.seq``, kept as a plain field: fan-out reads it per subscriber per event."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "seq", self.event.seq)

    def data_text(self) -> str:
        """The event's ``data`` as JSON text, as searches match it (``filters.data_text``).

        Cut out of ``payload`` rather than serialized again: the envelope's fields before
        ``data`` are ids, numbers, an enum and a timestamp, none of which can hold the text
        ``,"data":``, and without metadata ``data`` is the last field."""
        if self.event.metadata is not None:
            return data_text(self.event)
        start = self.payload.index(b',"data":') + len(b',"data":')
        return self.payload[start:-1].decode()

    @classmethod
    def of(cls, event: StreamEvent) -> EventRecord:
        """Serialize ``event``; raises pydantic's serialization error for non-JSON data."""
        return cls(event, _to_json(event, by_alias=True, exclude_none=True))
