"""What a backend shared by several hub processes adds to :class:`HistoryStore`
(docs/multi-node.md), as small interfaces: :class:`SharedHistory`, whose parts are a
:class:`StreamRegistry`, :class:`HubReports`, an ``OnceStore`` for tickets and
``ConnectionCaps``. The Redis engine implements them.

With a shared backend the store, not the hub, assigns seqs: a publish hands over its
events with the seq and timestamp cut out (:class:`EventParts`), and the store returns
them numbered. Each hub follows the streams its own subscribers watch and hands their
events to a :class:`FollowTarget` in seq order, with no gap and no duplicate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from limits.aio.storage import Storage

from ..security.rate_limits import ConnectionCaps
from ..security.tickets import OnceStore
from ..types.enums import StreamEventType
from .base import HistoryStore, StoredScreenshot, StreamState
from .records import EventRecord

CommandOp = Literal["start", "finish", "match"]
"""``start`` and ``finish`` name their command id; ``match`` finishes the newest running
command of the same name, or keeps the id given when none runs."""


@dataclass(frozen=True, slots=True)
class EventParts:
    """One event serialized without its seq and timestamp: its payload is
    ``head + seq + mid + timestamp + tail``."""

    type: StreamEventType
    head: bytes
    mid: bytes
    tail: bytes
    command: tuple[CommandOp, str, str] | None = None
    """(op, command name, command id) for command events."""
    screenshot: tuple[str, StoredScreenshot] | None = None


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    """An ``Idempotency-Key`` as the hub keeps it (docs/rest.md): the key is its owner's
    (the credential's subject; "" in-process and without authentication) and names one
    publish into one stream, whose events ``fingerprint`` sums up."""

    key: str
    owner: str
    fingerprint: str


@dataclass(frozen=True, slots=True)
class Published:
    epoch: str
    records: list[EventRecord]
    new_epoch: bool
    """The store held no state for the stream: history (re)starts at seq 1."""
    repeated: bool = False
    """The idempotency key was seen before: these are the events the first call stored."""


class FollowTarget(Protocol):
    """A hub's view of one stream it follows."""

    @property
    def epoch(self) -> str: ...

    @property
    def last_seq(self) -> int:
        """The newest seq handed over: the next :meth:`receive` starts right after it."""

    @property
    def idle(self) -> bool:
        """Nothing on this hub watches the stream any more: it may be unfollowed."""

    def receive(self, records: list[EventRecord]) -> None:
        """Events ``last_seq + 1 ...`` in order, of the current epoch."""

    def reset(self, epoch: str, last_seq: int) -> None:
        """The stream is now at ``epoch`` and ``last_seq``, and positions held before
        mean nothing (another epoch, or events trimmed before they were handed over):
        whoever held one must resume. Also called, with nobody holding one yet, when a
        stream is first followed."""


class StreamChanges(Protocol):
    """Where a hub applies what other hubs did to streams (created, status, purged)."""

    def stream_changed(self, stream_id: str, change: dict[str, Any]) -> None: ...


class StreamRegistry(Protocol):
    """Which streams exist, shared by every hub, and the news of their changes."""

    async def lookup(self, ref: str) -> StreamState | None:
        """The registry entry of a stream id or workflow session id, if any hub made one."""

    async def register(self, state: StreamState) -> StreamState:
        """Enter a new stream, unless another hub entered one for the same workflow
        session first: then that one's state."""

    async def restore_registry(self, streams: Sequence[tuple[str, str]]) -> None:
        """Enter again ``(stream id, workflow session id)`` pairs the registry lost while
        their streams still exist (the Redis holding the registry lost its data, the
        streams' own did not); a stream that is gone is left out."""

    async def announce(self, stream_id: str, change: dict[str, Any]) -> None:
        """Tell every hub that the stream changed (JSON-able ``change``)."""

    def watch_changes(self, handler: StreamChanges) -> None:
        """Where this hub applies what other hubs announce."""


class HubReports(Protocol):
    """Each hub's latest figures (its clients, its counters), for the cluster-wide views."""

    async def put_report(self, report: bytes, ttl_seconds: float) -> None:
        """This hub's report, replacing its previous one."""

    async def reports(self) -> dict[str, bytes]:
        """The other hubs' latest reports, by node."""

    async def drop_reports(self, nodes: Sequence[str]) -> None:
        """Forget the reports of hubs that stopped reporting."""


@runtime_checkable
class SharedHistory(HistoryStore, Protocol):
    """History several hubs share: the store numbers events, and brings each hub the
    events of the streams it follows. It also holds the other parts such a backend shares,
    each behind its own narrow interface; the hub and the app hand each part to the code
    that needs it (``core/streams.py`` the registry, ``core/all_hubs.py`` the reports,
    ``server/auth.py`` the tickets, connection caps and rate-limit storage)."""

    node: str
    """This process's name among the hubs (the ``node`` label on ``/metrics``)."""

    @property
    def registry(self) -> StreamRegistry: ...

    @property
    def tickets(self) -> OnceStore:
        """Where single-use tickets wait, so one hub's ticket opens a connection to another."""

    @property
    def reports(self) -> HubReports: ...

    @property
    def connection_caps(self) -> ConnectionCaps:
        """Where ``maxConnectionsPerSubject`` counts connections, shared by every hub."""

    def rate_limit_storage(self) -> Storage:
        """Where the ``limits`` library keeps counters, shared by every hub."""

    async def publish(
        self,
        state: StreamState,
        parts: Sequence[EventParts],
        timestamp: str,
        idempotency: IdempotencyKey | None,
    ) -> Published:
        """Number and store ``parts`` atomically and tell every hub following the stream.
        Raises ``StreamClosed`` if the stream is closed and ``StorageUnavailable`` when the
        store cannot be reached; then nothing is known to be stored, and a retry with the
        same ``idempotency_key`` is safe."""

    async def follow(self, stream_id: str, target: FollowTarget) -> None:
        """Return once every event after ``target.last_seq`` (as the store reports it
        now) will reach ``target.receive``, in seq order."""

    async def caught_up(self, stream_id: str) -> None:
        """Hand a followed stream's target every event stored so far, now."""

    async def counts(self, stream_ids: Sequence[str]) -> dict[str, tuple[str, int, int]]:
        """Per stream: epoch, top seq and events ever published, cluster-wide."""
