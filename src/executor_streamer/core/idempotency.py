"""Idempotent publishing (docs/rest.md, ``Idempotency-Key``) on a single-process backend.

A producer whose publish failed in flight (a timeout, a dropped connection) cannot know
whether it was stored. Sent again with the same key within :data:`KEPT_SECONDS`, the
publish stores nothing and returns what the first one stored. A key is its owner's (the
credential's subject) and names one publish into one stream: another subject's key of the
same text is another key, and the same key with other events is refused
(``IDEMPOTENCY_KEY_REUSED``). The Redis engine keeps keys in Redis instead, so they hold
across hubs.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence

import orjson

from ..errors import IdempotencyKeyReused, InvalidInput
from ..history.records import EventRecord
from .validation import PreparedEvent

KEPT_SECONDS = 300.0
MAX_KEYS = 100_000
_KEY = re.compile(r"[\x21-\x7e]{1,255}")


def check_idempotency_key(key: object) -> str:
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise InvalidInput.single(
            "Idempotency-Key", "must be 1-255 printable ASCII characters without spaces"
        )
    return key


REUSED = "this Idempotency-Key was used for other events within 5 minutes"


def fingerprint(prepared: Sequence[PreparedEvent]) -> str:
    """What a publish asked to store, summed up: equal for a retry of the same request,
    different for other events (computed only for publishes that carry a key)."""
    digest = hashlib.sha256()
    for event in prepared:
        digest.update(event.type.value.encode())
        digest.update(event.data.model_dump_json(by_alias=True).encode())
        digest.update(orjson.dumps(event.metadata, option=orjson.OPT_SORT_KEYS))
        if event.screenshot is not None:
            digest.update(event.screenshot.image.sha256.encode())
        digest.update(b"\x00")
    return digest.hexdigest()[:32]


KEY_OVERHEAD = 600
"""Bytes a remembered key costs besides its events: the key tuple and its strings, the
fingerprint, the future and its dict slot."""
RECORD_OVERHEAD = 1500
"""Bytes a remembered event costs besides its JSON: the record and the parsed event the
publish built (both measured with tracemalloc in tests/core/test_idempotency.py)."""

_Entry = tuple[float, "asyncio.Future[list[EventRecord]]", str, int]
"""When it expires, the first call's result, its fingerprint, and the bytes it holds."""


def held_by(records: Sequence[EventRecord]) -> int:
    """What a remembered result keeps alive, as the memory budget counts history."""
    return sum(len(record.payload) + RECORD_OVERHEAD for record in records)


class RecentPublishes:
    """Results of recent publishes by (owner, workflow session id, key), oldest first. The
    caller names the stream by its workflow session id whatever reference the publish
    used, so a retry naming it by its ``str_`` id finds the first result.

    The results are the stored events themselves, which a retry is answered with, so
    they count against the memory budget (:attr:`held_bytes`) like history does: at most
    :data:`MAX_KEYS` keys for :data:`KEPT_SECONDS` each, and no more bytes than the
    budget allows."""

    def __init__(
        self,
        kept_seconds: float = KEPT_SECONDS,
        max_keys: int = MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._kept = kept_seconds
        self._max = max_keys
        self.clock = clock
        """What expiry is reckoned by (a test moves it on)."""
        self._entries: OrderedDict[tuple[str, str, str], _Entry] = OrderedDict()
        self.held_bytes = 0
        """Bytes the remembered results keep alive (their events and the keys)."""

    async def run(
        self,
        key: tuple[str, str, str],
        print_: str,
        publish: Callable[[], Awaitable[list[EventRecord]]],
        still_stored: Callable[[list[EventRecord]], bool] = lambda records: True,
    ) -> list[EventRecord]:
        """The first result for ``key``; ``publish`` runs only when there is none. A
        publish that failed leaves no result: the next call with the key publishes, and
        so does one whose result ``still_stored`` denies (its stream was purged since).
        A call whose ``print_`` (:func:`fingerprint`) differs from the first one's is
        refused with :class:`IdempotencyKeyReused`."""
        while True:
            self.expire()
            entry = self._entries.get(key)
            if entry is None:
                break
            if entry[2] != print_:
                raise IdempotencyKeyReused(REUSED)
            try:  # the first call with this key is still in flight, or has stored
                records = list(await asyncio.shield(entry[1]))
            except Exception:
                continue
            if still_stored(records):
                return records
            if self._entries.get(key) is entry:
                self._drop(key)
        future: asyncio.Future[list[EventRecord]] = asyncio.get_running_loop().create_future()
        self._entries[key] = (self.clock() + self._kept, future, print_, KEY_OVERHEAD)
        self.held_bytes += KEY_OVERHEAD
        while len(self._entries) > self._max:
            self._drop(next(iter(self._entries)))
        try:
            records = await publish()
        except BaseException as exc:
            held = self._entries.get(key)
            if held is not None and held[1] is future:
                self._drop(key)
            future.set_exception(exc if isinstance(exc, Exception) else asyncio.CancelledError())
            future.exception()  # retrieved, whether anyone waited or not
            raise
        future.set_result(records)
        held = self._entries.get(key)
        if held is not None and held[1] is future:  # still remembered: count its events
            size = KEY_OVERHEAD + held_by(records)
            self._entries[key] = (held[0], held[1], held[2], size)
            self.held_bytes += size - KEY_OVERHEAD
        return records

    def _drop(self, key: tuple[str, str, str]) -> None:
        self.held_bytes -= self._entries.pop(key)[3]

    def expire(self) -> None:
        """Forget the results kept past :data:`KEPT_SECONDS` (also run once a second by
        the memory budget, so results no publish asks about are not held longer)."""
        now = self.clock()
        while self._entries:
            oldest, entry = next(iter(self._entries.items()))
            if entry[0] > now:
                return
            self._drop(oldest)


class InFlight:
    """Counts publishes under way, so stopping can wait for them."""

    def __init__(self) -> None:
        self._count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def __aenter__(self) -> None:
        self._count += 1
        self._idle.clear()

    async def __aexit__(self, *exc_info: object) -> None:
        self._count -= 1
        if not self._count:
            self._idle.set()

    async def idle(self) -> None:
        await self._idle.wait()
