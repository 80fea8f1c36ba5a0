"""Bringing each hub the events of the streams it watches, in order (docs/multi-node.md).

One pub/sub connection per hub hears the control channel and the sharded channel of
every stream a local subscriber watches. Per stream:

- :meth:`ChannelFollower.follow` subscribes, waits for Redis to confirm, and only then
  reads the stream's top seq: from there on, every event after it arrives on the
  channel, and the hub reads history up to it. Messages that arrive meanwhile wait.
- Events are handed over only as ``last_seq + 1``: older ones are dropped as duplicates,
  and a jump (a message pub/sub lost) is filled from the Redis Stream first.
- A probe every ``probe_interval`` compares each stream's position with its top seq
  (the last message of a burst may be the one lost) and pings the connection: one that
  stopped answering is replaced.
- When the connection drops, live subscribers stay; once Redis answers again, every
  followed stream is subscribed again and caught up from the Stream.
- A message from another epoch (Redis lost its data) resets the stream's position.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
import structlog
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from ..errors import StorageUnavailable
from ..history.records import EventRecord
from ..history.shared import FollowTarget, StreamChanges
from ..types.enums import StreamEventType
from .keys import CONTROL, keys_for, stream_of_channel

if TYPE_CHECKING:
    from .store import RedisHistory

_log = structlog.get_logger("executor_streamer.redis")
_TYPES = {t.value.encode(): t for t in StreamEventType}
FOLLOW_TIMEOUT = 5.0
READ_TIMEOUT = 0.5
SILENT_AFTER_PINGS = 3
"""A connection whose last pong is this many probe intervals (and 2 s) old is dead."""


@dataclass(eq=False)
class _Followed:
    stream_id: str
    target: FollowTarget
    ready: asyncio.Future[None]
    pending: deque[bytes] = field(default_factory=deque)
    """Messages not handed over yet, oldest first."""
    synced: bool = False
    """Caught up since the channel was (re)subscribed: until then, messages wait."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Held by whoever hands the target events: one at a time, so always in order."""


class ChannelFollower:
    def __init__(
        self, client: Redis, listener: Redis, store: RedisHistory, probe_interval: float
    ) -> None:
        """``client`` reads; ``listener``'s pub/sub connection must not reconnect by
        itself, or a reconnect (and the messages lost meanwhile) would go unnoticed."""
        self._client = client
        self._listener = listener
        self._store = store
        self._probe_interval = probe_interval
        self._pubsub: PubSub | None = None
        self._followed: dict[str, _Followed] = {}
        self._reader: asyncio.Task[None] | None = None
        self._prober: asyncio.Task[None] | None = None
        self._catching_up: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._broken = False
        """A command on the connection failed, or it went silent: the reader replaces it.
        Only the reader uses the connection: redis-py's pub/sub fails in odd ways when
        another task sends on it while it is being lost and reconnected."""
        self._last_pong = 0.0
        self._next_ping = 0.0
        self._wanted: set[str] = set()
        """Streams whose channels the reader subscribes next."""
        self._unwanted: set[str] = set()
        """Streams no longer followed, whose channels the reader unsubscribes."""
        self._wake_channel = f"{CONTROL}:wake:{store.node}"
        self.changes: StreamChanges | None = None
        self.reconnects = 0
        self.gaps_filled = 0

    # -- lifetime ----------------------------------------------------------------------

    async def start(self) -> None:
        await self._connect()
        self._reader = asyncio.create_task(self._read(), name="executor-streamer-redis-read")
        self._prober = asyncio.create_task(self._probe(), name="executor-streamer-redis-probe")

    async def stop(self) -> None:
        """The reader is let finish rather than cancelled: redis-py's ``get_message`` may
        never return once cancelled inside its own timeout."""
        self._stopping = True
        await self._wake()
        tasks = {t for t in (self._prober, *self._catching_up) if t is not None}
        for task in tasks:
            task.cancel()
        if self._reader is not None:
            tasks.add(self._reader)
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=3 * READ_TIMEOUT)
            for task in late:
                task.cancel()
        await self._disconnect()

    @property
    def followed(self) -> int:
        return len(self._followed)

    # -- following ---------------------------------------------------------------------

    async def follow(self, stream_id: str, target: FollowTarget) -> None:
        followed = self._followed.get(stream_id)
        if followed is None or followed.target is not target:
            ready = asyncio.get_running_loop().create_future()
            followed = _Followed(stream_id, target, ready)
            self._followed[stream_id] = followed
            self._unwanted.discard(stream_id)
            self._wanted.add(stream_id)
            await self._wake()
        # A caller that gives up (its client left) leaves the follow to the next one.
        try:
            await asyncio.wait_for(asyncio.shield(followed.ready), FOLLOW_TIMEOUT)
        except TimeoutError:
            raise StorageUnavailable("redis did not confirm the subscription in time") from None

    async def _wake(self) -> None:
        """Have the reader look at its to-do list now, not after its read times out."""
        with contextlib.suppress(StorageUnavailable):  # then the reader is reconnecting
            await self._store._call(self._client.publish(self._wake_channel, b""))

    async def _confirmed(self, followed: _Followed) -> None:
        """Subscribed: read where the stream is now, then let messages through."""
        try:
            await self._catch_up(followed, initial=not followed.ready.done())
        except StorageUnavailable:
            return  # the connection is going; the reconnect subscribes and catches up
        if not followed.ready.done():
            followed.ready.set_result(None)

    async def _catch_up(self, followed: _Followed, *, initial: bool = False) -> None:
        """Bring the target to the stream's top seq from the Redis Stream, then hand over
        whatever waited meanwhile."""
        async with followed.lock:
            keys = keys_for(followed.stream_id)
            epoch, top = await self._store._call(self._client.hmget(keys.meta, "epoch", "seq"))
            target = followed.target
            if epoch is not None:
                current, top = epoch.decode(), int(top or 0)
                if initial:
                    target.reset(current, top)  # nothing on this hub holds a position yet
                elif current != target.epoch:
                    target.reset(current, 0)
                await self._fill(followed, top)
            followed.synced = True
            await self._drain(followed)

    async def _fill(self, followed: _Followed, until: int | None) -> None:
        target = followed.target
        if until is not None and until <= target.last_seq:
            return
        records = await self._store.read_after(followed.stream_id, target.last_seq, until)
        records = [r for r in records if r.seq > target.last_seq]
        if records and records[0].seq != target.last_seq + 1:
            # Trimmed before this hub could read them (it was cut off from Redis longer
            # than the history lasts): its subscribers resume and learn what they lost.
            _log.warning(
                "events_lost_before_delivery",
                stream_id=followed.stream_id,
                missing_from=target.last_seq + 1,
                missing_to=records[0].seq - 1,
            )
            target.reset(target.epoch, records[0].seq - 1)
        if records:
            self.gaps_filled += 1
            target.receive(records)

    async def _handle(self, followed: _Followed, message: bytes) -> None:
        epoch, records = _parse(message)
        target = followed.target
        if epoch != target.epoch:
            target.reset(epoch, 0)
        records = [r for r in records if r.seq > target.last_seq]
        if not records:
            return
        if records[0].seq > target.last_seq + 1:
            await self._fill(followed, records[0].seq - 1)
            records = [r for r in records if r.seq > target.last_seq]
        if records:
            target.receive(records)

    async def _drain(self, followed: _Followed) -> None:
        """Hand over waiting messages; the caller holds ``followed.lock``."""
        while followed.pending and followed.synced:
            await self._handle(followed, followed.pending.popleft())

    async def _dispatch(self, followed: _Followed, message: bytes) -> None:
        followed.pending.append(message)
        if followed.lock.locked():
            return  # its holder hands it over before letting go
        try:
            async with followed.lock:
                await self._drain(followed)
        except StorageUnavailable:
            pass  # the probe or the reconnect catches this stream up

    # -- the connection ----------------------------------------------------------------

    async def _connect(self) -> None:
        pubsub = self._listener.pubsub()
        try:
            await pubsub.subscribe(CONTROL, self._wake_channel)
            for followed in self._followed.values():
                followed.synced = False
                await pubsub.ssubscribe(keys_for(followed.stream_id).channel)
        except Exception as exc:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            raise StorageUnavailable(f"redis is not reachable: {exc}") from exc
        self._pubsub = pubsub
        self._broken = False
        self._wanted.clear()
        self._last_pong = asyncio.get_running_loop().time()

    async def _disconnect(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        for followed in self._followed.values():
            followed.synced = False  # whatever is published meanwhile is read back later
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _reconnect(self) -> None:
        await self._disconnect()
        delay = 0.05
        while not self._stopping:
            try:
                await self._connect()
            except StorageUnavailable:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            self.reconnects += 1
            _log.info("redis_pubsub_reconnected", streams=len(self._followed))
            return

    async def _read(self) -> None:
        while not self._stopping:
            pubsub = self._pubsub
            if pubsub is None or self._broken:
                await self._reconnect()
                continue
            try:
                message = await pubsub.get_message(timeout=READ_TIMEOUT)
            except Exception as exc:
                if not self._stopping:
                    _log.warning("redis_pubsub_lost", error=str(exc) or exc.__class__.__name__)
                    await self._reconnect()
                continue
            if message is not None:
                await self._on_message(message)
            await self._housekeeping(pubsub)

    async def _housekeeping(self, pubsub: PubSub) -> None:
        """Subscribes, unsubscribes and pings, sent by the reader between reads."""
        try:
            while self._wanted:
                followed = self._followed.get(self._wanted.pop())
                if followed is not None:
                    followed.synced = False
                    await pubsub.ssubscribe(keys_for(followed.stream_id).channel)
            while self._unwanted:
                await pubsub.sunsubscribe(keys_for(self._unwanted.pop()).channel)
            now = asyncio.get_running_loop().time()
            if now >= self._next_ping:
                self._next_ping = now + self._probe_interval
                await pubsub.ping()
        except Exception:
            self._broken = True

    async def _on_message(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "pong":
            self._last_pong = asyncio.get_running_loop().time()
            return
        channel = message["channel"]
        channel = channel.decode() if isinstance(channel, bytes) else channel
        if kind == "message" and channel == CONTROL:
            self._on_control(message["data"])
            return
        stream_id = stream_of_channel(channel)
        followed = None if stream_id is None else self._followed.get(stream_id)
        if followed is None:
            return
        if kind == "ssubscribe":
            self._spawn(self._confirmed(followed))
        elif kind == "sunsubscribe":  # raced with following the stream again
            self._wanted.add(followed.stream_id)
        elif kind == "smessage":
            await self._dispatch(followed, message["data"])

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._catching_up.add(task)
        task.add_done_callback(self._catching_up.discard)

    def _on_control(self, data: bytes) -> None:
        try:
            change = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if not isinstance(change, dict) or not isinstance(change.get("stream"), str):
            return
        if change.get("node") == self._store.node:
            return  # this hub made the change and applied it already
        if self.changes is not None:
            self.changes.stream_changed(change["stream"], change)

    async def caught_up(self, stream_id: str) -> None:
        """Bring one followed stream to its top seq now (before its subscribers end)."""
        followed = self._followed.get(stream_id)
        if followed is not None and followed.ready.done():
            await self._catch_up(followed)

    async def _probe(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._probe_interval)
            if self._pubsub is None:
                continue
            if loop.time() - self._last_pong > SILENT_AFTER_PINGS * self._probe_interval + 2:
                _log.warning("redis_pubsub_silent")
                self._broken = True  # the reader reconnects and catches up
                continue
            for stream_id, followed in list(self._followed.items()):
                if followed.target.idle and followed.ready.done():
                    del self._followed[stream_id]
                    self._unwanted.add(stream_id)
            with contextlib.suppress(StorageUnavailable):
                await self._check_positions()

    async def _check_positions(self) -> None:
        """A stream whose top seq is past what was handed over lost its last message."""
        ready = [f for f in self._followed.values() if f.ready.done() and f.synced]
        if not ready:
            return
        tops = await self._store.counts([f.stream_id for f in ready])
        for followed in ready:
            known = tops.get(followed.stream_id)
            if known is None or not followed.synced:
                continue
            epoch, top, _ = known
            if epoch != followed.target.epoch or top > followed.target.last_seq:
                await self._catch_up(followed)


def _parse(message: bytes) -> tuple[str, list[EventRecord]]:
    """``E<epoch>\\n<first seq>\\n<type,type,...>\\n<payload>\\n<payload>...``"""
    header, first, types, *payloads = message.split(b"\n")
    seq = int(first)
    records = [
        EventRecord.stored(seq + i, _TYPES[kind], payload)
        for i, (kind, payload) in enumerate(zip(types.split(b","), payloads, strict=True))
    ]
    return header[1:].decode(), records
