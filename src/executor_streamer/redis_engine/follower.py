"""Bringing each hub the events of the streams it watches, in order (docs/multi-node.md).

One pub/sub connection per Redis server (one, or each node of a Cluster that owns a
watched stream's slot, ``routing.py``) hears the sharded channel of every stream a local
subscriber watches; one of them hears the control channel too. Per stream:

- :meth:`ChannelFollower.follow` subscribes, waits for Redis to confirm, and only then
  reads the stream's top seq: from there on, every event after it arrives on the
  channel, and the hub reads history up to it. Messages that arrive meanwhile wait.
- Events are handed over only as ``last_seq + 1``: older ones are dropped as duplicates,
  and a jump (a message pub/sub lost) is filled from the Redis Stream first.
- A probe every ``probe_interval`` compares each stream's position with its top seq
  (the last message of a burst may be the one lost) and pings the connection: one that
  stopped answering is replaced.
- When a connection drops, live subscribers stay; once Redis answers again, every
  stream it carried is subscribed again (on a Cluster, where its slot is now) and caught
  up from the Stream.
- A message from another epoch (Redis lost its data) resets the stream's position, and
  so does a top seq below it (a Cluster failover lost events the replica never got).
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
from redis.asyncio.client import PubSub

from ..errors import StorageUnavailable
from ..history.records import EventRecord
from ..history.shared import FollowTarget, StreamChanges
from ..types.enums import StreamEventType
from .calls import call
from .connect import Client
from .keys import CONTROL, keys_for, stream_of_channel
from .routing import Listeners

if TYPE_CHECKING:
    from .event_log import RedisEventLog

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


@dataclass(eq=False)
class _Listener:
    """One pub/sub connection to one Redis server, used only by its reader task:
    redis-py's pub/sub fails in odd ways when another task sends on it while it is being
    lost and reconnected. Other tasks leave their requests on its to-do lists."""

    node: str
    wake_channel: str
    control: bool = False
    """Hears the control channel."""
    streams: set[str] = field(default_factory=set)
    """Streams whose channels live on this server."""
    wanted: set[str] = field(default_factory=set)
    """Streams whose channels the reader subscribes next."""
    unwanted: set[str] = field(default_factory=set)
    """Streams no longer followed, whose channels the reader unsubscribes."""
    pubsub: PubSub | None = None
    broken: bool = False
    """A command on the connection failed, or it went silent: the reader replaces it."""
    last_pong: float = 0.0
    next_ping: float = 0.0
    reader: asyncio.Task[None] | None = None


class ChannelFollower:
    def __init__(
        self,
        client: Client,
        listeners: Listeners,
        node: str,
        log: RedisEventLog,
        probe_interval: float,
    ) -> None:
        """``client`` reads; the ``listeners``' connections must not reconnect by
        themselves, or a reconnect (and the messages lost meanwhile) would go unnoticed."""
        self._client = client
        self._servers = listeners
        self._node = node
        self._log = log
        self._probe_interval = probe_interval
        self._listeners: dict[str, _Listener] = {}
        self._route: dict[str, _Listener] = {}
        """Followed stream → the listener its channel is subscribed on."""
        self._followed: dict[str, _Followed] = {}
        self._prober: asyncio.Task[None] | None = None
        self._catching_up: set[asyncio.Task[None]] = set()
        self._started = False
        self._stopping = False
        self.changes: StreamChanges | None = None
        self.reconnects = 0
        self.gaps_filled = 0

    # -- lifetime ----------------------------------------------------------------------

    async def start(self) -> None:
        listener = self._listener_for(CONTROL)
        listener.control = True
        await self._connect(listener)
        self._started = True
        self._start_reader(listener)
        self._prober = asyncio.create_task(self._probe(), name="executor-streamer-redis-probe")

    async def stop(self) -> None:
        """Readers are let finish rather than cancelled: redis-py's ``get_message`` may
        never return once cancelled inside its own timeout."""
        self._stopping = True
        for listener in self._listeners.values():
            await self._wake(listener)
        tasks = {t for t in (self._prober, *self._catching_up) if t is not None}
        for task in tasks:
            task.cancel()
        tasks |= {lst.reader for lst in self._listeners.values() if lst.reader is not None}
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=3 * READ_TIMEOUT)
            for task in late:
                task.cancel()
        for listener in self._listeners.values():
            await self._disconnect(listener)
        await self._servers.aclose()

    @property
    def followed(self) -> int:
        return len(self._followed)

    @property
    def connections(self) -> int:
        """Pub/sub connections held: one per server listened to."""
        return sum(1 for lst in self._listeners.values() if lst.pubsub is not None)

    def server_of(self, stream_id: str) -> str | None:
        """The server whose connection carries a followed stream's channel."""
        listener = self._route.get(stream_id)
        return None if listener is None else listener.node

    def _listener_for(self, channel: str) -> _Listener:
        node = self._servers.node_of(channel)
        listener = self._listeners.get(node)
        if listener is None:
            wake = f"{CONTROL}:wake:{self._node}:{node}"
            listener = self._listeners[node] = _Listener(node, wake)
            if self._started:
                self._start_reader(listener)
        return listener

    def _start_reader(self, listener: _Listener) -> None:
        listener.reader = asyncio.create_task(
            self._read(listener), name=f"executor-streamer-redis-read-{listener.node}"
        )

    # -- following ---------------------------------------------------------------------

    async def follow(self, stream_id: str, target: FollowTarget) -> None:
        followed = self._followed.get(stream_id)
        if followed is None or followed.target is not target:
            listener = self._listener_for(keys_for(stream_id).channel)
            ready = asyncio.get_running_loop().create_future()
            followed = _Followed(stream_id, target, ready)
            self._followed[stream_id] = followed
            self._move(stream_id, listener)
            await self._wake(listener)
        # A caller that gives up (its client left) leaves the follow to the next one.
        try:
            await asyncio.wait_for(asyncio.shield(followed.ready), FOLLOW_TIMEOUT)
        except TimeoutError:
            raise StorageUnavailable("redis did not confirm the subscription in time") from None

    def _move(self, stream_id: str, listener: _Listener) -> None:
        """Have ``listener`` subscribe the stream's channel (again)."""
        before = self._route.get(stream_id)
        if before is not None and before is not listener:
            before.streams.discard(stream_id)
            before.wanted.discard(stream_id)
        self._route[stream_id] = listener
        listener.streams.add(stream_id)
        listener.unwanted.discard(stream_id)
        listener.wanted.add(stream_id)

    async def _wake(self, listener: _Listener) -> None:
        """Have a reader look at its to-do list now, not after its read times out."""
        with contextlib.suppress(StorageUnavailable):  # then the reader is reconnecting
            await call(self._client.publish(listener.wake_channel, b""))

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
            epoch, top = await call(self._client.hmget(keys.meta, "epoch", "seq"))
            target = followed.target
            if epoch is not None:
                current, top = epoch.decode(), int(top or 0)
                if initial:
                    target.reset(current, top)  # nothing on this hub holds a position yet
                elif current != target.epoch:
                    target.reset(current, 0)
                elif top < target.last_seq:
                    # Events this hub handed over are gone, and their seqs will be given
                    # again (a Cluster failover lost what the replica had not received):
                    # its subscribers resume, and learn it.
                    _log.warning(
                        "history_rolled_back",
                        stream_id=followed.stream_id,
                        top=top,
                        handed_over=target.last_seq,
                    )
                    target.reset(current, top)
                await self._fill(followed, top)
            followed.synced = True
            await self._drain(followed)

    async def _fill(self, followed: _Followed, until: int | None) -> None:
        target = followed.target
        if until is not None and until <= target.last_seq:
            return
        records = await self._log.read_after(followed.stream_id, target.last_seq, until)
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

    # -- the connections ---------------------------------------------------------------

    async def _connect(self, listener: _Listener) -> None:
        pubsub = self._servers.client(listener.node).pubsub()
        try:
            await pubsub.subscribe(listener.wake_channel)
            if listener.control:
                await pubsub.subscribe(CONTROL)
            for stream_id in listener.streams:
                self._followed[stream_id].synced = False
                await pubsub.ssubscribe(keys_for(stream_id).channel)
        except Exception as exc:
            with contextlib.suppress(Exception):
                await pubsub.aclose()
            raise StorageUnavailable(f"redis is not reachable: {exc}") from exc
        listener.pubsub = pubsub
        listener.broken = False
        listener.wanted.clear()
        listener.last_pong = asyncio.get_running_loop().time()

    async def _disconnect(self, listener: _Listener) -> None:
        pubsub, listener.pubsub = listener.pubsub, None
        for stream_id in listener.streams:
            # Whatever is published meanwhile is read back later.
            self._followed[stream_id].synced = False
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def _reconnect(self, listener: _Listener) -> bool:
        """Connect again; False if nothing is left for this server to carry."""
        await self._disconnect(listener)
        delay = 0.05
        while not self._stopping:
            with contextlib.suppress(StorageUnavailable):
                await self._reroute(listener)
            if self._listeners.get(listener.node) is not listener:
                return False
            try:
                await self._connect(listener)
            except StorageUnavailable:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            self.reconnects += 1
            _log.info("redis_pubsub_reconnected", node=listener.node, streams=len(listener.streams))
            return True
        return False

    async def _reroute(self, listener: _Listener) -> None:
        """On a Cluster, a server that went away may have handed its slots to another
        (a failover, a resharding): move what it carried to where it lives now. A
        listener left with nothing to carry is retired."""
        await self._servers.relearn()
        if listener.control and (found := self._listener_for(CONTROL)) is not listener:
            listener.control, found.control = False, True
            found.broken = True  # its reader connects again, now with the control channel
        for stream_id in list(listener.streams):
            found = self._listener_for(keys_for(stream_id).channel)
            if found is not listener:
                self._move(stream_id, found)
                await self._wake(found)
        if not listener.streams and not listener.control:
            del self._listeners[listener.node]

    async def _relocate(self, stream_id: str) -> None:
        """A stream's channel was let go by its server (its slot moved): subscribe it
        where it lives now."""
        with contextlib.suppress(StorageUnavailable):
            await self._servers.relearn()
        if stream_id not in self._followed:
            return
        try:
            listener = self._listener_for(keys_for(stream_id).channel)
        except StorageUnavailable:
            listener = self._route[stream_id]
        self._move(stream_id, listener)
        await self._wake(listener)

    async def _read(self, listener: _Listener) -> None:
        while not self._stopping:
            pubsub = listener.pubsub
            if pubsub is None or listener.broken:
                if not await self._reconnect(listener):
                    return
                continue
            try:
                message = await pubsub.get_message(timeout=READ_TIMEOUT)
            except Exception as exc:
                if not self._stopping:
                    _log.warning(
                        "redis_pubsub_lost",
                        node=listener.node,
                        error=str(exc) or exc.__class__.__name__,
                    )
                    if not await self._reconnect(listener):
                        return
                continue
            if message is not None:
                await self._on_message(listener, message)
            await self._housekeeping(listener, pubsub)

    async def _housekeeping(self, listener: _Listener, pubsub: PubSub) -> None:
        """Subscribes, unsubscribes and pings, sent by the reader between reads."""
        try:
            while listener.wanted:
                stream_id = listener.wanted.pop()
                followed = self._followed.get(stream_id)
                if followed is not None and self._route.get(stream_id) is listener:
                    followed.synced = False
                    await pubsub.ssubscribe(keys_for(stream_id).channel)
            while listener.unwanted:
                await pubsub.sunsubscribe(keys_for(listener.unwanted.pop()).channel)
            now = asyncio.get_running_loop().time()
            if now >= listener.next_ping:
                listener.next_ping = now + self._probe_interval
                await pubsub.ping()
        except Exception:
            listener.broken = True

    async def _on_message(self, listener: _Listener, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "pong":
            listener.last_pong = asyncio.get_running_loop().time()
            return
        channel = message["channel"]
        channel = channel.decode() if isinstance(channel, bytes) else channel
        if kind == "message" and channel == CONTROL:
            self._on_control(message["data"])
            return
        stream_id = stream_of_channel(channel)
        followed = None if stream_id is None else self._followed.get(stream_id)
        if followed is None or self._route.get(followed.stream_id) is not listener:
            return
        if kind == "ssubscribe":
            self._spawn(self._confirmed(followed))
        elif kind == "sunsubscribe":
            # Raced with following the stream again, or the server let go of the channel
            # (its slot moved to another node): subscribe it where it is now.
            followed.synced = False
            self._spawn(self._relocate(followed.stream_id))
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
        if change.get("node") == self._node:
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
        silent_after = SILENT_AFTER_PINGS * self._probe_interval + 2
        while True:
            await asyncio.sleep(self._probe_interval)
            for listener in list(self._listeners.values()):
                if listener.pubsub is not None and loop.time() - listener.last_pong > silent_after:
                    _log.warning("redis_pubsub_silent", node=listener.node)
                    listener.broken = True  # its reader reconnects and catches up
            for stream_id, followed in list(self._followed.items()):
                if followed.target.idle and followed.ready.done():
                    del self._followed[stream_id]
                    listener = self._route.pop(stream_id)
                    listener.streams.discard(stream_id)
                    listener.wanted.discard(stream_id)
                    listener.unwanted.add(stream_id)
            with contextlib.suppress(StorageUnavailable):
                await self._check_positions()

    async def _check_positions(self) -> None:
        """A stream whose top seq is past what was handed over lost its last message."""
        ready = [f for f in self._followed.values() if f.ready.done() and f.synced]
        if not ready:
            return
        tops = await self._log.counts([f.stream_id for f in ready])
        for followed in ready:
            known = tops.get(followed.stream_id)
            if known is None or not followed.synced:
                continue
            epoch, top, _ = known
            # Only a top past the position: one below it may just be older than events
            # handed over since it was read (a history that went back is found when
            # the connection that lost it is replaced, in ``_catch_up``).
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
