"""The hub's unit of storage and fan-out: an event plus its wire bytes."""

from __future__ import annotations

from dataclasses import dataclass

from ..types.events import StreamEvent

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

    @property
    def seq(self) -> int:
        return self.event.seq

    @classmethod
    def of(cls, event: StreamEvent) -> EventRecord:
        """Serialize ``event``; raises pydantic's serialization error for non-JSON data."""
        return cls(event, _to_json(event, by_alias=True, exclude_none=True))
