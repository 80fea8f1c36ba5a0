"""History, registry and publishing on Redis (docs/multi-node.md).

``RedisHistory`` is the :class:`~executor_streamer.history.shared.SharedStore` that lets
any number of hub processes act as one: the publish script numbers events, a Redis
Stream per stream holds them (entry id ``<seq>-0``, so a resume is one ``XRANGE``), and
the :class:`~.follower.ChannelFollower` brings each hub the events of the streams its
subscribers watch.

A publish is never retried blindly: a script whose reply was lost may have run, and
running it again would store the events twice. Every publish carries an idempotency
key (the caller's, or one made up for it), so :meth:`RedisHistory.publish` can send the
script again after a connection failure (a connection a Redis restart left dead, say):
a script that did run answers with what it stored. Reads are idempotent and retried by
redis-py as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Sequence
from datetime import datetime
from typing import Any

import orjson
from limits.aio.storage import RedisClusterStorage, RedisStorage, Storage
from limits.aio.storage.redis.redispy import RedispyBridge
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..errors import StorageUnavailable, StreamClosed
from ..history.base import (
    HistoryPage,
    ResumeRead,
    StoredScreenshot,
    StreamState,
    StreamWrite,
    page_of,
)
from ..history.records import (
    EventRecord,
    Predicate,
    history_predicate,
    parse_stamp,
    stamp_text,
)
from ..history.shared import EventParts, FollowTarget, Published, StreamChanges
from ..types.base import format_timestamp
from ..types.enums import StreamEventType
from ..types.filters import HistoryFilter
from ..types.ids import new_epoch, new_event_ids
from ..types.streams import StreamConfig
from .batcher import ScriptBatcher
from .connect import Client, RedisTarget
from .follower import ChannelFollower
from .internals import verify as verify_internals
from .keys import CONTROL, NODES, ONCE, PREFIX, SESSIONS, StreamKeys, keys_for
from .routing import ClusterNodes, SingleServer
from .scripts import Scripts
from .slots import RedisConnectionSlots

IDEMPOTENCY_MS = 5 * 60 * 1000
RETRY_KEY_MS = 60 * 1000
"""How long the key of a publish without one is kept: only for the engine's own retries."""
PUBLISH_RETRIES = (0.05, 0.25)
"""Pauses before sending a publish again after its connection failed."""
_RETRIABLE = (RedisConnectionError, RedisTimeoutError, OSError)
READ_CHUNK = 1000
_OPS = {"start": "s", "finish": "f", "match": "F"}


def node_name() -> str:
    """Host and process, and a suffix: two hubs in one process are two nodes too."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


class RedisHistory:
    """A :class:`~executor_streamer.history.shared.SharedStore` on one Redis server or a
    Redis Cluster (``connect.py``)."""

    def __init__(self, url: str, *, probe_interval: float = 1.0) -> None:
        self.url = url
        self.target = RedisTarget.parse(url)
        self.node = node_name()
        self._node = self.node.encode()
        timeouts: dict[str, Any] = {"socket_timeout": 5.0, "socket_connect_timeout": 2.0}
        self._redis = self.target.client(
            retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), 2),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
            **timeouts,
        )
        # The publish script runs on a client that never retries by itself (see the
        # module's doc); :meth:`publish` retries with an idempotency key instead. So do
        # the pub/sub connections (``follower.py``).
        no_retry = {"retry": Retry(NoBackoff(), 0), **timeouts}
        self._publisher = self.target.client(**no_retry)
        self._scripts = Scripts(self._redis)
        self._publish_routes = self._routes(self._publisher, no_retry)
        self._publishes = ScriptBatcher(
            self._publisher, Scripts(self._publisher).publish, self._publish_routes
        )
        listeners = self._routes(self._redis, no_retry) or SingleServer(
            Redis.from_url(url, **no_retry)
        )
        self.follower = ChannelFollower(self._redis, listeners, self, probe_interval)
        self._slots = RedisConnectionSlots(self._redis, self)
        self._capacity: dict[str, int] = {}
        self._limit_storages: list[RedisClusterStorage] = []

    def _routes(self, client: Client, options: dict[str, Any]) -> ClusterNodes | None:
        """On a Cluster, plain connections to its primaries, found by ``client``'s map."""
        if not isinstance(client, RedisCluster):
            return None
        return ClusterNodes(
            client, lambda host, port: self.target.node_client(host, port, **options)
        )

    # -- lifetime ----------------------------------------------------------------------

    async def start(self) -> None:
        if self.target.cluster:
            verify_internals()  # loud now, rather than a follower that cannot recover later
        await self.ping()
        # A Cluster client reads the slot map at its first command: the publisher's
        # pipelines go by that map (``batcher.py``).
        await self._call(self._publisher.ping())
        await self.follower.start()

    async def ping(self) -> None:
        await self._call(self._redis.ping())

    async def close(self) -> None:
        await self.follower.stop()
        await self._slots.close()
        with contextlib.suppress(StorageUnavailable):  # gone: no more report from here
            await self.drop_reports([self.node])
        for storage in self._limit_storages:
            # limits has no close of its own; its bridge holds the client it made.
            if isinstance(storage.bridge, RedispyBridge):
                client = storage.bridge.get_connection()
                if isinstance(client, RedisCluster):
                    await client.aclose()
        if self._publish_routes is not None:
            await self._publish_routes.aclose()
        await self._redis.aclose()
        await self._publisher.aclose()

    # -- registry ----------------------------------------------------------------------

    async def open_stream(self, stream_id: str, config: StreamConfig) -> None:
        self._capacity[stream_id] = config.max_history_size

    async def save_stream(self, state: StreamState) -> None:
        """The registry fields are this hub's to set; epoch, seq and running commands are
        the publish script's, so they are only filled in when absent.

        The stream's hash first, then the registry: on a Cluster they live on different
        nodes, so no transaction holds both, and a registry entry whose hash is missing
        would name a stream that cannot be read (a hash without an entry is only found
        by its id, until the next save)."""
        keys = keys_for(state.stream_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hset(keys.meta, mapping=_registry_fields(state))  # type: ignore[arg-type]
            pipe.hsetnx(keys.meta, "epoch", state.epoch)
            pipe.hsetnx(keys.meta, "seq", state.last_seq)
            pipe.hsetnx(keys.meta, "cmds", _commands_json(state.running_commands))
            await self._call(pipe.execute())
        await self._call(self._redis.hset(SESSIONS, state.workflow_session_id, state.stream_id))

    async def register(self, state: StreamState) -> StreamState:
        keys = keys_for(state.stream_id)
        winner = await self._call(
            self._redis.hsetnx(SESSIONS, state.workflow_session_id, state.stream_id)
        )
        if not winner:
            found = await self.lookup(state.workflow_session_id)
            if found is not None:
                return found
            await self._call(self._redis.hset(SESSIONS, state.workflow_session_id, state.stream_id))
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hset(keys.meta, mapping=_registry_fields(state))  # type: ignore[arg-type]
            pipe.hsetnx(keys.meta, "epoch", state.epoch)
            pipe.hsetnx(keys.meta, "seq", state.last_seq)
            await self._call(pipe.execute())
        await self.announce(state.stream_id, {"created": state.workflow_session_id})
        return state

    async def restore_registry(self, streams: Sequence[tuple[str, str]]) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for stream_id, _ in streams:
                pipe.hget(keys_for(stream_id).meta, "wf")
            found = await self._call(pipe.execute())
        for (stream_id, session), held in zip(streams, found, strict=True):
            if held is not None and held.decode() == session:
                # HSETNX: an entry made meanwhile (a new stream for the session) stays.
                await self._call(self._redis.hsetnx(SESSIONS, session, stream_id))

    async def load_streams(self) -> list[StreamState]:
        sessions = await self._call(self._redis.hgetall(SESSIONS))
        ids = [stream_id.decode() for stream_id in sessions.values()]
        async with self._redis.pipeline(transaction=False) as pipe:
            for stream_id in ids:
                pipe.hgetall(keys_for(stream_id).meta)
            metas = await self._call(pipe.execute())
        return [
            state
            for stream_id, meta in zip(ids, metas, strict=True)
            if (state := _state(stream_id, meta)) is not None
        ]

    async def lookup(self, ref: str) -> StreamState | None:
        stream_id: str | None = ref
        if not ref.startswith("str_"):
            found = await self._call(self._redis.hget(SESSIONS, ref))
            stream_id = None if found is None else found.decode()
        if stream_id is None:
            return None
        meta = await self._call(self._redis.hgetall(keys_for(stream_id).meta))
        return _state(stream_id, meta)

    async def announce(self, stream_id: str, change: dict[str, Any]) -> None:
        message = orjson.dumps({"stream": stream_id, "node": self.node, **change})
        await self._call(self._redis.publish(CONTROL, message))

    def watch_changes(self, handler: StreamChanges) -> None:
        self.follower.changes = handler

    async def follow(self, stream_id: str, target: FollowTarget) -> None:
        await self.follower.follow(stream_id, target)

    async def put_once(self, key: str, value: bytes, ttl_seconds: float) -> None:
        await self._call(self._redis.set(ONCE + key, value, px=int(ttl_seconds * 1000)))

    async def take_once(self, key: str) -> bytes | None:
        value: bytes | None = await self._call(self._redis.getdel(ONCE + key))
        return value

    def rate_limit_storage(self) -> Storage:
        if self.target.cluster:
            storage = RedisClusterStorage(
                self.target.limits_uri(),
                implementation="redispy",
                key_prefix=PREFIX + "limits",
                **({"ssl": True} if self.target.tls else {}),
            )
            self._limit_storages.append(storage)
            return storage
        assert isinstance(self._redis, Redis)
        # On this store's connection pool, so closing the store closes its connections.
        return RedisStorage(
            self.target.limits_uri(),
            implementation="redispy",
            key_prefix=PREFIX + "limits",
            connection_pool=self._redis.connection_pool,  # type: ignore[arg-type]
        )

    async def put_report(self, report: bytes, ttl_seconds: float) -> None:
        await self._call(self._redis.hset(NODES, self.node, report))

    async def reports(self) -> dict[str, bytes]:
        found: dict[bytes, bytes] = await self._call(self._redis.hgetall(NODES))
        return {node.decode(): report for node, report in found.items() if node != self._node}

    async def drop_reports(self, nodes: Sequence[str]) -> None:
        if nodes:
            await self._call(self._redis.hdel(NODES, *nodes))

    def connection_slots(self) -> RedisConnectionSlots:
        return self._slots

    async def caught_up(self, stream_id: str) -> None:
        await self.follower.caught_up(stream_id)

    async def counts(self, stream_ids: Sequence[str]) -> dict[str, tuple[str, int, int]]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for stream_id in stream_ids:
                pipe.hmget(keys_for(stream_id).meta, "epoch", "seq", "total")
            rows = await self._call(pipe.execute())
        return {
            stream_id: (epoch.decode(), int(seq or 0), int(total or 0))
            for stream_id, (epoch, seq, total) in zip(stream_ids, rows, strict=True)
            if epoch is not None
        }

    # -- publishing --------------------------------------------------------------------

    async def publish(
        self,
        state: StreamState,
        parts: Sequence[EventParts],
        timestamp: str,
        idempotency_key: str | None,
    ) -> Published:
        keys = keys_for(state.stream_id)
        if idempotency_key is not None:
            idem, kept = keys.idempotency("u:" + idempotency_key), IDEMPOTENCY_MS
        else:
            # An event id is random enough, and cheaper than asking the OS again.
            idem, kept = keys.idempotency("a:" + new_event_ids(1)[0]), RETRY_KEY_MS
        args: list[Any] = [
            new_epoch(),  # taken only if the stream has no state (new, or Redis lost it)
            state.config.get("max_history_size", self._capacity.get(state.stream_id, 1000)),
            "1",
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
                reply = await self._call(self._publishes.call(script_keys, args))
                break
            except StorageUnavailable as exc:
                if pause is None or not isinstance(exc.__cause__, _RETRIABLE):
                    raise
                await asyncio.sleep(pause)
        outcome = reply[0].decode()
        if outcome == "closed":
            raise StreamClosed(state.workflow_session_id)
        if outcome == "dup":
            epoch, first, count = reply[1].decode().split("\n")
            records = await self._range(keys, int(first) - 1, int(first) + int(count) - 1)
            return Published(epoch, records, new_epoch=False, repeated=idempotency_key is not None)
        epoch, first, stamp = reply[1].decode(), int(reply[2]), reply[3]
        if int(reply[4]):  # a new epoch: the registry entry may be gone with the data
            await self._call(
                self._redis.hsetnx(SESSIONS, state.workflow_session_id, keys.stream_id)
            )
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

    async def write(self, writes: Sequence[StreamWrite]) -> None:
        """Store records the caller numbered (the single-process path; the hub itself
        publishes through :meth:`publish`): all of them or, if any seq does not follow
        its stream's last, none.

        One script checks and writes on one server. On a Cluster one script cannot span
        nodes, so each slot's streams get their own, after the seqs of all are checked
        here first; the scripts check again, so only writers racing each other (which
        the single-process path never has) could see part of a call stored."""
        groups: dict[int, list[StreamWrite]] = {}
        for write in writes:
            slot = 0
            if isinstance(self._redis, RedisCluster):
                slot = self._redis.keyslot(keys_for(write.stream_id).meta)
            groups.setdefault(slot, []).append(write)
        if len(groups) > 1:
            await self._check_follows(writes)
        for group in groups.values():
            await self._append(group)
        sessions = {w.state.workflow_session_id: w.stream_id for w in writes if w.state}
        if sessions:
            await self._call(self._redis.hset(SESSIONS, mapping=sessions))  # type: ignore[arg-type]

    async def _check_follows(self, writes: Sequence[StreamWrite]) -> None:
        """What ``append.lua`` checks before writing, for writes it cannot see together."""
        streams = list(dict.fromkeys(w.stream_id for w in writes))
        async with self._redis.pipeline(transaction=False) as pipe:
            for stream_id in streams:
                pipe.hget(keys_for(stream_id).meta, "seq")
            stored = await self._call(pipe.execute())
        last = {s: -1 if seq is None else int(seq) for s, seq in zip(streams, stored, strict=True)}
        for write in writes:
            for record in write.records:
                if last[write.stream_id] > 0 and record.seq != last[write.stream_id] + 1:
                    raise ValueError(f"seq {record.seq} does not follow {last[write.stream_id]}")
                last[write.stream_id] = record.seq

    async def _append(self, writes: Sequence[StreamWrite]) -> None:
        keys: list[str] = []
        args: list[Any] = [len(writes)]
        for write in writes:
            stream_keys = keys_for(write.stream_id)
            keys += [stream_keys.meta, stream_keys.events, stream_keys.images]
            state: list[Any] = []
            if write.state is not None:
                fields = {**_registry_fields(write.state), **_owned_fields(write.state)}
                for name, value in fields.items():
                    state += [name, value]
            args += [self._capacity.get(write.stream_id, 1000), len(state), *state]
            args.append(len(write.records))
            images = dict(write.screenshots)
            for record in write.records:
                shot = _screenshot_id(record)
                image = images.get(shot) if shot else None
                args += [record.seq, record.type.value, record.payload, shot or ""]
                if image is None:
                    args += ["", "", b""]
                else:
                    args += [image.mime_type, image.sha256, image.data]
        try:
            await self._call(self._scripts.append(keys=keys, args=args))
        except StorageUnavailable as exc:
            if isinstance(exc.__cause__, ResponseError) and "does not follow" in str(exc.__cause__):
                raise ValueError(str(exc.__cause__)) from None
            raise

    # -- reading -----------------------------------------------------------------------

    async def query(self, stream_id: str, spec: HistoryFilter) -> HistoryPage:
        keys = keys_for(stream_id)
        after = 0 if spec.after_seq is None else spec.after_seq
        start = None if spec.start_time is None else format_timestamp(spec.start_time).encode()
        end = None if spec.end_time is None else format_timestamp(spec.end_time).encode()
        in_time: list[EventRecord] = []
        async for record in self._scan(keys, after):
            stamp = stamp_text(record.payload)
            if start is not None and stamp < start:
                continue
            if end is not None and stamp > end:
                break  # stamps never decrease along seqs
            in_time.append(record)
        return page_of(in_time, spec, history_predicate(spec))

    async def read_range(
        self, stream_id: str, after: int, until: int, predicate: Predicate | None
    ) -> ResumeRead:
        keys = keys_for(stream_id)
        first = await self._call(self._redis.xrange(keys.events, "-", "+", count=1))
        if not first:
            return ResumeRead([], until + 1)
        records = await self._range(keys, after, until)
        if predicate is not None:
            records = [r for r in records if predicate(r)]
        return ResumeRead(records, _seq(first[0][0]))

    async def read_after(self, stream_id: str, after: int, until: int | None) -> list[EventRecord]:
        """Every held event with ``after < seq <= until`` (to the newest if None)."""
        return await self._range(keys_for(stream_id), after, until)

    async def read_tail(self, stream_id: str, count: int) -> list[EventRecord]:
        entries = await self._call(
            self._redis.xrevrange(keys_for(stream_id).events, "+", "-", count=count)
        )
        return [_record(entry) for entry in reversed(entries)]

    async def get_screenshot(self, stream_id: str, screenshot_id: str) -> StoredScreenshot | None:
        images = keys_for(stream_id).images
        fields = [f"{screenshot_id}:{suffix}" for suffix in "dmh"]
        data, mime, sha = await self._call(self._redis.hmget(images, fields))
        if data is None or mime is None or sha is None:
            return None
        return StoredScreenshot(data, mime.decode(), sha.decode())

    async def usage_bytes(self, stream_id: str) -> int:
        keys = keys_for(stream_id)
        used = 0
        async for record in self._scan(keys, 0):
            used += len(record.payload)
        fields = await self._call(self._redis.hkeys(keys.images))
        images = [f for f in fields if f.endswith(b":d")]
        if images:
            async with self._redis.pipeline(transaction=False) as pipe:
                for field in images:
                    pipe.hstrlen(keys.images, field)
                used += sum(await self._call(pipe.execute()))
        return used

    # -- maintenance -------------------------------------------------------------------

    async def clear(self, stream_id: str) -> int:
        return await self.compact(stream_id, 0)

    async def compact(self, stream_id: str, keep_count: int) -> int:
        keys = keys_for(stream_id)
        removed = await self._call(
            self._scripts.keep(keys=[keys.events, keys.images], args=[keep_count, ""])
        )
        return int(removed)

    async def expire(self, stream_id: str, older_than: datetime) -> int:
        keys = keys_for(stream_id)
        cutoff = format_timestamp(older_than).encode()
        keep_from: int | None = None
        async for record in self._scan(keys, 0):
            if stamp_text(record.payload) >= cutoff:
                keep_from = record.seq
                break
        if keep_from is None:
            return await self.compact(stream_id, 0)
        removed = await self._call(
            self._scripts.keep(keys=[keys.events, keys.images], args=[0, keep_from])
        )
        return int(removed)

    async def drop_stream(self, stream_id: str) -> None:
        keys = keys_for(stream_id)
        session = await self._call(self._redis.hget(keys.meta, "wf"))
        # The registry entry first. An entry left naming a deleted stream (a hub's
        # restore_registry racing this) reads as no stream: lookups find no hash.
        if session is not None:
            await self._call(self._redis.hdel(SESSIONS, session))
        await self._call(self._redis.delete(keys.meta, keys.events, keys.images))
        self._capacity.pop(stream_id, None)

    # -- helpers -----------------------------------------------------------------------

    async def _range(self, keys: StreamKeys, after: int, until: int | None) -> list[EventRecord]:
        return [record async for record in self._scan(keys, after, until)]

    async def _scan(
        self, keys: StreamKeys, after: int, until: int | None = None
    ) -> AsyncIterator[EventRecord]:
        """Held events with ``after < seq <= until``, in chunks (an async iterator)."""
        low = f"{after + 1}-0"
        high = "+" if until is None else f"{until}-0"
        while True:
            if until is not None and after >= until:
                return
            entries = await self._call(self._redis.xrange(keys.events, low, high, count=READ_CHUNK))
            for entry in entries:
                yield _record(entry)
            if len(entries) < READ_CHUNK:
                return
            after = _seq(entries[-1][0])
            low = f"{after + 1}-0"

    @staticmethod
    async def _call(awaitable: Awaitable[Any]) -> Any:
        """Await a Redis command; any failure to get an answer is StorageUnavailable.
        (Typed Any: redis-py's replies are unions of every shape a command may give.)"""
        try:
            return await awaitable
        except ResponseError as exc:
            raise StorageUnavailable(f"redis refused: {exc}") from exc
        except (RedisError, RedisClusterException, OSError) as exc:
            raise StorageUnavailable(
                f"redis is not reachable: {exc.__class__.__name__}: {exc}"
            ) from exc


def _seq(entry_id: bytes) -> int:
    return int(entry_id.split(b"-", 1)[0])


def _record(entry: tuple[bytes, dict[bytes, bytes]]) -> EventRecord:
    entry_id, fields = entry
    return EventRecord.stored(_seq(entry_id), StreamEventType(fields[b"t"].decode()), fields[b"p"])


def _screenshot_id(record: EventRecord) -> str | None:
    if record.type is not StreamEventType.SCREENSHOT:
        return None
    data = record.event.data
    return getattr(data, "screenshot_id", None)


def _commands_json(running: dict[str, str]) -> bytes:
    return orjson.dumps([[command_id, name] for command_id, name in running.items()])


def _registry_fields(state: StreamState) -> dict[str, Any]:
    return {
        "wf": state.workflow_session_id,
        "status": state.status,
        "config": orjson.dumps(state.config),
        "meta": orjson.dumps(state.metadata),
        "created": format_timestamp(state.created_at),
        "activity": format_timestamp(state.last_activity),
    }


def _owned_fields(state: StreamState) -> dict[str, Any]:
    return {
        "epoch": state.epoch,
        "seq": state.last_seq,
        "cmds": _commands_json(state.running_commands),
    }


def _state(stream_id: str, meta: dict[bytes, bytes]) -> StreamState | None:
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
