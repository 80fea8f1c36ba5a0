"""Which streams exist, shared by every hub: the registry hash (workflow session id →
stream id) beside each stream's own hash, and the control channel that tells every hub
of a change."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from ..history.base import StreamState
from ..history.shared import StreamChanges
from ..types.ids import STREAM_ID_PREFIX
from .calls import call
from .connect import Client
from .follower import ChannelFollower
from .keys import CONTROL, SESSIONS, keys_for
from .layout import commands_json, registry_fields, state_of


class RedisRegistry:
    """A :class:`~executor_streamer.history.shared.StreamRegistry` on Redis.

    A stream's hash and the registry hash may live on different Cluster nodes, so no
    transaction holds both: writes go to the stream's hash first, then the registry,
    and a registry entry whose hash is missing reads as no stream."""

    def __init__(self, client: Client, node: str, follower: ChannelFollower) -> None:
        self._client = client
        self._node = node
        self._follower = follower

    async def save(self, state: StreamState) -> None:
        """The registry fields are this hub's to set; epoch, seq and running commands are
        the publish script's, so they are only filled in when absent."""
        keys = keys_for(state.stream_id)
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.hset(keys.meta, mapping=registry_fields(state))  # type: ignore[arg-type]
            pipe.hsetnx(keys.meta, "epoch", state.epoch)
            pipe.hsetnx(keys.meta, "seq", state.last_seq)
            pipe.hsetnx(keys.meta, "cmds", commands_json(state.running_commands))
            await call(pipe.execute())
        await call(self._client.hset(SESSIONS, state.workflow_session_id, state.stream_id))

    async def register(self, state: StreamState) -> StreamState:
        keys = keys_for(state.stream_id)
        winner = await call(
            self._client.hsetnx(SESSIONS, state.workflow_session_id, state.stream_id)
        )
        if not winner:
            found = await self.lookup(state.workflow_session_id)
            if found is not None:
                return found
            await call(self._client.hset(SESSIONS, state.workflow_session_id, state.stream_id))
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.hset(keys.meta, mapping=registry_fields(state))  # type: ignore[arg-type]
            pipe.hsetnx(keys.meta, "epoch", state.epoch)
            pipe.hsetnx(keys.meta, "seq", state.last_seq)
            await call(pipe.execute())
        await self.announce(state.stream_id, {"created": state.workflow_session_id})
        return state

    async def restore_registry(self, streams: Sequence[tuple[str, str]]) -> None:
        async with self._client.pipeline(transaction=False) as pipe:
            for stream_id, _ in streams:
                pipe.hget(keys_for(stream_id).meta, "wf")
            found = await call(pipe.execute())
        for (stream_id, session), held in zip(streams, found, strict=True):
            if held is not None and held.decode() == session:
                # HSETNX: an entry made meanwhile (a new stream for the session) stays.
                await call(self._client.hsetnx(SESSIONS, session, stream_id))

    async def load(self) -> list[StreamState]:
        """Every stream the registry names whose hash is there."""
        sessions = await call(self._client.hgetall(SESSIONS))
        ids = [stream_id.decode() for stream_id in sessions.values()]
        async with self._client.pipeline(transaction=False) as pipe:
            for stream_id in ids:
                pipe.hgetall(keys_for(stream_id).meta)
            metas = await call(pipe.execute())
        return [
            state
            for stream_id, meta in zip(ids, metas, strict=True)
            if (state := state_of(stream_id, meta)) is not None
        ]

    async def lookup(self, ref: str) -> StreamState | None:
        stream_id: str | None = ref
        if not ref.startswith(STREAM_ID_PREFIX):
            found = await call(self._client.hget(SESSIONS, ref))
            stream_id = None if found is None else found.decode()
        if stream_id is None:
            return None
        meta = await call(self._client.hgetall(keys_for(stream_id).meta))
        return state_of(stream_id, meta)

    async def forget(self, stream_id: str) -> None:
        """Remove the stream's registry entry, before its keys go: an entry left naming a
        deleted stream (a hub's ``restore_registry`` racing this) reads as no stream."""
        session = await call(self._client.hget(keys_for(stream_id).meta, "wf"))
        if session is not None:
            await call(self._client.hdel(SESSIONS, session))

    async def announce(self, stream_id: str, change: dict[str, Any]) -> None:
        message = orjson.dumps({"stream": stream_id, "node": self._node, **change})
        await call(self._client.publish(CONTROL, message))

    def watch_changes(self, handler: StreamChanges) -> None:
        self._follower.changes = handler
