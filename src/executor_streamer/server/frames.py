"""Wire frames built from an event's serialized payload, never by re-serializing it.

Each published event was turned into JSON bytes once (``EventRecord.payload``); the
frames below only concatenate those bytes with a fixed envelope.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from ..history.records import EventRecord

SSE_RETRY_MS = 3000


def sse_event(record: EventRecord) -> bytes:
    return b"event: stream_event\nid: %d\ndata: %b\n\n" % (record.seq, record.payload)


def sse_replay_event(record: EventRecord) -> bytes:
    """A replayed event: no ``id:``, which would move the client's Last-Event-ID back."""
    return b"event: replay_event\ndata: %b\n\n" % record.payload


def sse_frame(event: str, data: Any) -> bytes:
    """A control frame (subscribed, heartbeat, error, recovery); JSON keeps it on one line."""
    return b"event: %b\ndata: %b\n\n" % (event.encode(), orjson.dumps(data))


def sse_preamble() -> bytes:
    # The comment line makes proxies and browsers flush the response headers at once.
    return b": executor-streamer\nretry: %d\n\n" % SSE_RETRY_MS


def ws_event(record: EventRecord, replay: bool = False) -> bytes:
    if replay:
        return b'{"type":"event","event":%b,"metadata":{"replay":true}}' % record.payload
    return b'{"type":"event","event":%b}' % record.payload


def ws_events(records: Sequence[EventRecord]) -> bytes:
    return b'{"type":"events","events":[%b]}' % b",".join(r.payload for r in records)


def ws_message(kind: str, metadata: dict[str, Any] | None = None, **fields: Any) -> bytes:
    message: dict[str, Any] = {"type": kind, **fields}
    if metadata is not None:
        message["metadata"] = metadata
    return orjson.dumps(message)


def json_list(key: str, records: Iterable[EventRecord], **fields: Any) -> bytes:
    """``{key: [events...], **fields}`` with the events spliced in as they are."""
    head = orjson.dumps(fields)[:-1] if fields else b"{"
    sep = b"," if fields else b""
    return head + sep + b'"%b":[%b]}' % (key.encode(), b",".join(r.payload for r in records))
