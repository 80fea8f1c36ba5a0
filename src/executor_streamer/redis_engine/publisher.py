"""Publishing on Redis: one script numbers a batch of events, stores it and tells every
hub following the stream, atomically (``publish.lua``).

A publish is never retried blindly: a script whose reply was lost may have run, and
running it again would store the events twice. Every publish carries an idempotency
key (the caller's, or one made up for it), so :meth:`RedisPublisher.publish` can send
the script again after a connection failure (a connection a Redis restart left dead,
say): a script that did run answers with what it stored.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import Any

import orjson
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..errors import IdempotencyKeyReused, StorageUnavailable, StreamClosed
from ..history.base import StreamState
from ..history.records import EventRecord
from ..history.shared import EventParts, IdempotencyKey, Published
from ..types.base import format_timestamp
from ..types.ids import new_epoch, new_event_ids
from .batcher import ScriptBatcher
from .calls import call
from .connect import Client
from .event_log import RedisEventLog
from .keys import SESSIONS, keys_for

IDEMPOTENCY_MS = 5 * 60 * 1000
RETRY_KEY_MS = 60 * 1000
_REUSED = "this Idempotency-Key was used for other events within 5 minutes"
"""How long the key of a publish without one is kept: only for the engine's own retries."""
PUBLISH_RETRIES = (0.05, 0.25)
"""Pauses before sending a publish again after its connection failed."""
_RETRIABLE = (RedisConnectionError, RedisTimeoutError, OSError)
_OPS = {"start": "s", "finish": "f", "match": "F"}


class RedisPublisher:
    def __init__(self, batcher: ScriptBatcher, client: Client, log: RedisEventLog) -> None:
        """``batcher`` runs the publish script on connections that never retry by
        themselves; ``client`` (which may) mends the registry, ``log`` reads back what
        a repeated publish stored."""
        self._batcher = batcher
        self._client = client
        self._log = log

    async def publish(
        self,
        state: StreamState,
        parts: Sequence[EventParts],
        timestamp: str,
        idempotency: IdempotencyKey | None,
    ) -> Published:
        keys = keys_for(state.stream_id)
        if idempotency is not None:
            owner = hashlib.sha256(idempotency.owner.encode()).hexdigest()[:16]
            idem = keys.idempotency(f"u:{owner}:{idempotency.key}")
            kept, fingerprint = IDEMPOTENCY_MS, idempotency.fingerprint
        else:
            # An event id is random enough, and cheaper than asking the OS again.
            idem, kept = keys.idempotency("a:" + new_event_ids(1)[0]), RETRY_KEY_MS
            fingerprint = "-"
        args: list[Any] = [
            new_epoch(),  # taken only if the stream has no state (new, or Redis lost it)
            state.config.get("max_history_size", self._log.capacity(state.stream_id)),
            fingerprint,
            kept,
            timestamp,
            state.workflow_session_id,
            orjson.dumps(state.config),
            orjson.dumps(state.metadata),
            format_timestamp(state.created_at),
            keys.channel,
            len(parts),
        ]
        for part in parts:
            op, name, command_id = ("", "", "")
            if part.command is not None:
                op, name, command_id = _OPS[part.command[0]], part.command[1], part.command[2]
            shot_id, mime, sha, data = "", "", "", b""
            if part.screenshot is not None:
                shot_id, image = part.screenshot
                mime, sha, data = image.mime_type, image.sha256, image.data
            args += [part.type.value, part.head, part.mid, part.tail, op, name, command_id]
            args += [shot_id, mime, sha, data]
        script_keys = [keys.meta, keys.events, keys.images, idem]
        for pause in (*PUBLISH_RETRIES, None):
            try:
                reply = await call(self._batcher.call(script_keys, args))
                break
            except StorageUnavailable as exc:
                if pause is None or not isinstance(exc.__cause__, _RETRIABLE):
                    raise
                await asyncio.sleep(pause)
        outcome = reply[0].decode()
        if outcome == "closed":
            raise StreamClosed(state.workflow_session_id)
        if outcome == "dup":
            epoch, first, count, *stored = reply[1].decode().split("\n")
            if stored and stored[0] != fingerprint:
                raise IdempotencyKeyReused(_REUSED)
            records = await self._log.read_after(
                state.stream_id, int(first) - 1, int(first) + int(count) - 1
            )
            return Published(epoch, records, new_epoch=False, repeated=idempotency is not None)
        epoch, first, stamp = reply[1].decode(), int(reply[2]), reply[3]
        if int(reply[4]):  # a new epoch: the registry entry may be gone with the data
            await call(self._client.hsetnx(SESSIONS, state.workflow_session_id, keys.stream_id))
        resolved = iter(reply[5:])
        records = []
        for seq, part in enumerate(parts, first):
            tail = part.tail
            if part.command is not None and part.command[0] == "match":
                found = next(resolved)
                if found.decode() != part.command[2]:
                    tail = tail.replace(
                        b'"commandId":"' + part.command[2].encode() + b'"',
                        b'"commandId":"' + found + b'"',
                        1,
                    )
            payload = b"".join((part.head, str(seq).encode(), part.mid, stamp, tail))
            records.append(EventRecord.stored(seq, part.type, payload))
        return Published(epoch, records, new_epoch=bool(int(reply[4])))
