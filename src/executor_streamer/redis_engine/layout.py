"""How a stream's state and events are written in Redis (the keys are ``keys.py``'s):
the fields of its hash, and an event as a Stream entry."""

from __future__ import annotations

from typing import Any

import orjson

from ..history.base import StreamState
from ..history.records import EventRecord, parse_stamp
from ..types.base import format_timestamp
from ..types.enums import StreamEventType


def seq_of(entry_id: bytes) -> int:
    """The seq of a Stream entry id ``<seq>-0``."""
    return int(entry_id.split(b"-", 1)[0])


def record_of(entry: tuple[bytes, dict[bytes, bytes]]) -> EventRecord:
    entry_id, fields = entry
    return EventRecord.stored(
        seq_of(entry_id), StreamEventType(fields[b"t"].decode()), fields[b"p"]
    )


def screenshot_id_of(record: EventRecord) -> str | None:
    if record.type is not StreamEventType.SCREENSHOT:
        return None
    data = record.event.data
    return getattr(data, "screenshot_id", None)


def commands_json(running: dict[str, str]) -> bytes:
    return orjson.dumps([[command_id, name] for command_id, name in running.items()])


def registry_fields(state: StreamState) -> dict[str, Any]:
    """The fields a hub sets: what the registry says of a stream."""
    return {
        "wf": state.workflow_session_id,
        "status": state.status,
        "config": orjson.dumps(state.config),
        "meta": orjson.dumps(state.metadata),
        "created": format_timestamp(state.created_at),
        "activity": format_timestamp(state.last_activity),
    }


def owned_fields(state: StreamState) -> dict[str, Any]:
    """The fields the publish script owns once the stream exists."""
    return {
        "epoch": state.epoch,
        "seq": state.last_seq,
        "cmds": commands_json(state.running_commands),
    }


def state_of(stream_id: str, meta: dict[bytes, bytes]) -> StreamState | None:
    """The stream a hash describes; None for a hash without an entry or an epoch."""
    if b"wf" not in meta or b"epoch" not in meta:
        return None
    activity = meta.get(b"activity", b"")
    stamp = meta.get(b"ts", b"")
    running = orjson.loads(meta.get(b"cmds") or b"[]")
    return StreamState(
        stream_id=stream_id,
        workflow_session_id=meta[b"wf"].decode(),
        status=meta.get(b"status", b"INITIALIZING").decode(),
        config=orjson.loads(meta.get(b"config") or b"{}"),
        metadata=orjson.loads(meta.get(b"meta") or b"{}"),
        epoch=meta[b"epoch"].decode(),
        created_at=parse_stamp(meta[b"created"]),
        last_activity=parse_stamp(max(activity, stamp)),
        last_seq=int(meta.get(b"seq") or 0),
        running_commands={command_id: name for command_id, name in running},
    )
