"""Each stream's events in a Redis Stream (entry id ``<seq>-0``, so a resume is one
``XRANGE``) and its screenshots in a hash beside it: reading, writing records the caller
numbered, and trimming."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from ..errors import StorageUnavailable
from ..history.base import (
    HistoryPage,
    ResumeRead,
    StoredScreenshot,
    StreamWrite,
    page_in_slices,
)
from ..history.records import EventRecord, Predicate, history_predicate, stamp_text
from ..history.search import (
    FIRST_CHUNK,
    SEARCH_CHUNK,
    SearchBatch,
    SearchQuery,
    search_streams,
)
from ..types.base import format_timestamp
from ..types.filters import HistoryFilter
from .calls import call
from .connect import Client
from .keys import SESSIONS, StreamKeys, keys_for
from .layout import owned_fields, record_of, registry_fields, screenshot_id_of, seq_of
from .scripts import Scripts

READ_CHUNK = 1000
DEFAULT_CAPACITY = 1000
"""``maxHistorySize`` of a stream this hub has not opened (another hub's)."""


class RedisEventLog:
    def __init__(self, client: Client, scripts: Scripts) -> None:
        self._client = client
        self._scripts = scripts
        self._capacity: dict[str, int] = {}

    def open(self, stream_id: str, capacity: int) -> None:
        """Keep at most ``capacity`` events of the stream (trimmed as it is written)."""
        self._capacity[stream_id] = capacity

    def capacity(self, stream_id: str) -> int:
        return self._capacity.get(stream_id, DEFAULT_CAPACITY)

    # -- writing records the caller numbered -------------------------------------------

    async def write(self, writes: Sequence[StreamWrite]) -> None:
        """Store records the caller numbered (the single-process path; the hub itself
        publishes through ``publisher.RedisPublisher``): all of them or, if any seq does
        not follow its stream's last, none.

        One script checks and writes on one server. On a Cluster one script cannot span
        nodes, so each slot's streams get their own, after the seqs of all are checked
        here first; the scripts check again, so only writers racing each other (which
        the single-process path never has) could see part of a call stored."""
        groups: dict[int, list[StreamWrite]] = {}
        for write in writes:
            slot = 0
            if isinstance(self._client, RedisCluster):
                slot = self._client.keyslot(keys_for(write.stream_id).meta)
            groups.setdefault(slot, []).append(write)
        if len(groups) > 1:
            await self._check_follows(writes)
        for group in groups.values():
            await self._append(group)
        sessions = {w.state.workflow_session_id: w.stream_id for w in writes if w.state}
        if sessions:
            await call(self._client.hset(SESSIONS, mapping=sessions))  # type: ignore[arg-type]

    async def _check_follows(self, writes: Sequence[StreamWrite]) -> None:
        """What ``append.lua`` checks before writing, for writes it cannot see together."""
        streams = list(dict.fromkeys(w.stream_id for w in writes))
        async with self._client.pipeline(transaction=False) as pipe:
            for stream_id in streams:
                pipe.hget(keys_for(stream_id).meta, "seq")
            stored = await call(pipe.execute())
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
                fields = {**registry_fields(write.state), **owned_fields(write.state)}
                for name, value in fields.items():
                    state += [name, value]
            args += [self.capacity(write.stream_id), len(state), *state]
            args.append(len(write.records))
            images = dict(write.screenshots)
            for record in write.records:
                shot = screenshot_id_of(record)
                image = images.get(shot) if shot else None
                args += [record.seq, record.type.value, record.payload, shot or ""]
                if image is None:
                    args += ["", "", b""]
                else:
                    args += [image.mime_type, image.sha256, image.data]
        try:
            await call(self._scripts.append(keys=keys, args=args))
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
        return await page_in_slices(in_time, spec, history_predicate(spec))

    async def read_range(
        self, stream_id: str, after: int, until: int, predicate: Predicate | None
    ) -> ResumeRead:
        keys = keys_for(stream_id)
        first = await call(self._client.xrange(keys.events, "-", "+", count=1))
        if not first:
            return ResumeRead([], until + 1)
        records = await self.read_after(stream_id, after, until)
        if predicate is not None:
            records = [r for r in records if predicate(r)]
        return ResumeRead(records, seq_of(first[0][0]))

    async def read_after(self, stream_id: str, after: int, until: int | None) -> list[EventRecord]:
        """Every held event with ``after < seq <= until`` (to the newest if None)."""
        return [record async for record in self._scan(keys_for(stream_id), after, until)]

    async def search(self, query: SearchQuery) -> SearchBatch:
        return await search_streams(
            query, sorted(query.stream_ids), lambda s: self._newest_first(s, query)
        )

    async def _newest_first(
        self, stream_id: str, query: SearchQuery
    ) -> AsyncIterator[list[EventRecord]]:
        """The stream's held events, newest first, in chunks (keys, types and times are
        checked by the caller: entries are numbered by seq, which says nothing of time)."""
        events = keys_for(stream_id).events
        high = "+"
        if query.before is not None and query.before[2] == stream_id:
            high = f"({query.before[1]}-0"
        size = FIRST_CHUNK  # most streams of a search give only their head
        while True:
            entries = await call(self._client.xrevrange(events, high, "-", count=size))
            if not entries:
                return
            yield [record_of(entry) for entry in entries]
            if len(entries) < size:
                return
            high = f"({entries[-1][0].decode()}"
            size = min(size * 2, SEARCH_CHUNK)

    async def read_tail(self, stream_id: str, count: int) -> list[EventRecord]:
        entries = await call(
            self._client.xrevrange(keys_for(stream_id).events, "+", "-", count=count)
        )
        return [record_of(entry) for entry in reversed(entries)]

    async def get_screenshot(self, stream_id: str, screenshot_id: str) -> StoredScreenshot | None:
        images = keys_for(stream_id).images
        fields = [f"{screenshot_id}:{suffix}" for suffix in "dmh"]
        data, mime, sha = await call(self._client.hmget(images, fields))
        if data is None or mime is None or sha is None:
            return None
        return StoredScreenshot(data, mime.decode(), sha.decode())

    async def usage_bytes(self, stream_id: str) -> int:
        keys = keys_for(stream_id)
        used = 0
        async for record in self._scan(keys, 0):
            used += len(record.payload)
        fields = await call(self._client.hkeys(keys.images))
        images = [f for f in fields if f.endswith(b":d")]
        if images:
            async with self._client.pipeline(transaction=False) as pipe:
                for field in images:
                    pipe.hstrlen(keys.images, field)
                used += sum(await call(pipe.execute()))
        return used

    async def counts(self, stream_ids: Sequence[str]) -> dict[str, tuple[str, int, int]]:
        async with self._client.pipeline(transaction=False) as pipe:
            for stream_id in stream_ids:
                pipe.hmget(keys_for(stream_id).meta, "epoch", "seq", "total")
            rows = await call(pipe.execute())
        return {
            stream_id: (epoch.decode(), int(seq or 0), int(total or 0))
            for stream_id, (epoch, seq, total) in zip(stream_ids, rows, strict=True)
            if epoch is not None
        }

    async def _scan(
        self, keys: StreamKeys, after: int, until: int | None = None
    ) -> AsyncIterator[EventRecord]:
        """Held events with ``after < seq <= until``, in chunks (an async iterator)."""
        low = f"{after + 1}-0"
        high = "+" if until is None else f"{until}-0"
        while True:
            if until is not None and after >= until:
                return
            entries = await call(self._client.xrange(keys.events, low, high, count=READ_CHUNK))
            for entry in entries:
                yield record_of(entry)
            if len(entries) < READ_CHUNK:
                return
            after = seq_of(entries[-1][0])
            low = f"{after + 1}-0"

    # -- trimming ----------------------------------------------------------------------

    async def clear(self, stream_id: str) -> int:
        return await self.compact(stream_id, 0)

    async def compact(self, stream_id: str, keep_count: int) -> int:
        keys = keys_for(stream_id)
        removed = await call(
            self._scripts.keep(keys=[keys.events, keys.images], args=[keep_count, ""])
        )
        return int(removed)

    async def expire(self, stream_id: str, older_than: datetime) -> int:
        keys = keys_for(stream_id)
        cutoff = format_timestamp(older_than).encode()
        # Remove only below the first event found new enough, or below the last one seen:
        # never "all" (compact to 0), which would take an event published meanwhile.
        keep_from: int | None = None
        async for record in self._scan(keys, 0):
            keep_from = record.seq
            if stamp_text(record.payload) >= cutoff:
                break
            keep_from += 1
        if keep_from is None:
            return 0
        removed = await call(
            self._scripts.keep(keys=[keys.events, keys.images], args=[0, keep_from])
        )
        return int(removed)

    async def delete(self, stream_id: str) -> None:
        """The stream's hash, events and screenshots, in one step."""
        keys = keys_for(stream_id)
        await call(self._client.delete(keys.meta, keys.events, keys.images))
        self._capacity.pop(stream_id, None)
