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


_Entry = tuple[float, "asyncio.Future[list[EventRecord]]", str]
"""When it expires, the first call's result, and its fingerprint."""


class RecentPublishes:
    """Results of recent publishes by (owner, workflow session id, key), oldest first. The
    caller names the stream by its workflow session id whatever reference the publish
    used, so a retry naming it by its ``str_`` id finds the first result."""

    def __init__(self, kept_seconds: float = KEPT_SECONDS, max_keys: int = MAX_KEYS) -> None:
        self._kept = kept_seconds
        self._max = max_keys
        self._entries: OrderedDict[tuple[str, str, str], _Entry] = OrderedDict()

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
            self._expire(time.monotonic())
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
                del self._entries[key]
        future: asyncio.Future[list[EventRecord]] = asyncio.get_running_loop().create_future()
        self._entries[key] = (time.monotonic() + self._kept, future, print_)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
        try:
            records = await publish()
        except BaseException as exc:
            held = self._entries.get(key)
            if held is not None and held[1] is future:
                del self._entries[key]
            future.set_exception(exc if isinstance(exc, Exception) else asyncio.CancelledError())
            future.exception()  # retrieved, whether anyone waited or not
            raise
        future.set_result(records)
        return records

    def _expire(self, now: float) -> None:
        while self._entries:
            expires = next(iter(self._entries.values()))[0]
            if expires > now:
                return
            self._entries.popitem(last=False)


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
