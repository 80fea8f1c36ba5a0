"""Search across runs (docs/query.md): events of every stream a caller may watch,
newest first, a page at a time.

The backend answers what it can without reading events (``history/search.py``): which
streams, types, times and keys. Before asking, the expression itself narrows the streams
and types (:meth:`~executor_streamer.core.expressions.Expression.may_match`): in
``type == "COMMAND_FAILED" && data.error.code == "TIMEOUT"`` only one type can match, and
the SQL backends read only its rows. The hub evaluates the expression on what remains.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from ..errors import InvalidInput
from ..history.base import HistoryStore
from ..history.records import EventRecord, drop_views
from ..history.search import MAX_MILLIS, SearchKey, SearchQuery, millis_of
from ..security.scope import Scope, pattern_matches
from ..types.enums import StreamEventType
from ..types.filters import MAX_SEQ
from .expressions import Expression, compile_expression
from .stream_history import EVALUATED_PER_TURN
from .streams import Stream, StreamManager

SEARCH_LIMIT = 100
SEARCH_LIMIT_MAX = 1000
EXAMINED_PER_PAGE = 50_000
"""Events an expression is evaluated on for one page at most: a search that finds
little returns a short page (or none) with a cursor to go on from, rather than hold a
request for seconds. ~0.3 s of evaluation."""
BATCH = 1000


@dataclass(frozen=True, slots=True)
class SearchPage:
    records: list[EventRecord]
    next_cursor: str | None
    """Where the next page starts; None once nothing older remains. A page can be
    shorter than the limit, or empty, and still have one (:data:`EXAMINED_PER_PAGE`)."""


@dataclass(frozen=True, slots=True)
class SearchRequest:
    expression: str | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    streams: str | None = None
    """A scope pattern (docs/security.md): only runs whose workflow session id it matches."""
    limit: int = SEARCH_LIMIT
    cursor: str | None = None


class RunSearch:
    def __init__(self, streams: StreamManager, storage: HistoryStore, max_length: int) -> None:
        self._streams = streams
        self._storage = storage
        self._max_length = max_length

    async def search(self, scope: Scope, request: SearchRequest) -> SearchPage:
        """One page of the events ``request`` selects in the streams ``scope`` may
        subscribe to. Raises InvalidInput for a bad cursor, InvalidFilter for a bad
        expression."""
        before = None if request.cursor is None else decode_cursor(request.cursor)
        expression = (
            None
            if request.expression is None
            else compile_expression(request.expression, self._max_length)
        )
        query = await self._query(scope, request, expression, before)
        if query is None:
            return SearchPage([], None)
        page: list[EventRecord] = []
        examined = 0
        while True:
            batch = await self._storage.search(query)
            for found in batch.found:
                examined += 1
                if expression is None or expression.matches(found.record):
                    page.append(found.record)
                    if len(page) == request.limit:
                        drop_views(f.record for f in batch.found)
                        return SearchPage(page, encode_cursor(found.key))
                if examined % EVALUATED_PER_TURN == 0:
                    await asyncio.sleep(0)
            drop_views(f.record for f in batch.found)
            if batch.last is None:
                return SearchPage(page, None)
            if examined >= EXAMINED_PER_PAGE:
                return SearchPage(page, encode_cursor(batch.last))
            query = replace(query, before=batch.last)

    async def streams_for(self, scope: Scope, pattern: str | None) -> list[tuple[Stream, bool]]:
        """The streams ``scope`` may subscribe to whose workflow session id ``pattern``
        matches (all, if None), each with whether that is every stream the hub knows
        and the caller may read any."""
        await self._streams.sync_registry()  # hubs sharing a backend search every hub's runs
        every = list(self._streams)
        chosen = [
            s
            for s in every
            if scope.may_subscribe(s.workflow_session_id)
            and (pattern is None or pattern_matches(pattern, s.workflow_session_id))
        ]
        # "Every stream" only when no pattern narrows it: a stream created meanwhile (on
        # another hub, say) must not slip past a pattern the statement no longer names.
        whole = len(chosen) == len(every) and scope.may_subscribe_all() and pattern in (None, "*")
        return [(s, whole) for s in chosen]

    async def every(
        self,
        streams: Sequence[tuple[Stream, bool]],
        types: frozenset[StreamEventType] | None,
        start_ms: int | None,
        end_ms: int | None,
        expression: Expression | None = None,
    ) -> AsyncIterator[EventRecord]:
        """Every event of ``streams`` (as :meth:`streams_for` gives them) of these types
        in these times, newest first, for analytics: read a batch at a time, other tasks
        getting a turn between them."""
        ids, whole, types = _narrowed(streams, types, expression)
        if not ids or types == frozenset():
            return
        query: SearchQuery | None = SearchQuery(
            limit=BATCH,
            stream_ids=ids,
            all_streams=whole,
            event_types=types,
            start_ms=start_ms,
            end_ms=end_ms,
        )
        evaluated = 0
        while query is not None:
            batch = await self._storage.search(query)
            for found in batch.found:
                if expression is None or expression.matches(found.record):
                    yield found.record
                evaluated += 1
                if evaluated % EVALUATED_PER_TURN == 0:
                    await asyncio.sleep(0)
            drop_views(f.record for f in batch.found)
            query = None if batch.last is None else replace(query, before=batch.last)

    async def _query(
        self,
        scope: Scope,
        request: SearchRequest,
        expression: Expression | None,
        before: SearchKey | None,
    ) -> SearchQuery | None:
        """What to ask the backend, or None when no event can match."""
        streams = await self.streams_for(scope, request.streams)
        ids, whole, types = _narrowed(streams, None, expression)
        if not ids or types == frozenset():
            return None
        start = None if request.start_time is None else millis_of(request.start_time)
        end = None if request.end_time is None else millis_of(request.end_time)
        return SearchQuery(
            limit=BATCH if expression is not None else request.limit,
            stream_ids=ids,
            all_streams=whole,
            event_types=types,
            start_ms=start,
            end_ms=end,
            before=before,
        )


def _narrowed(
    streams: Sequence[tuple[Stream, bool]],
    types: frozenset[StreamEventType] | None,
    expression: Expression | None,
) -> tuple[frozenset[str], bool, frozenset[StreamEventType] | None]:
    """What a search must read of ``streams`` (as :meth:`RunSearch.streams_for` gives
    them) and of ``types`` (None: any): the stream ids and types ``expression`` may match,
    and whether those ids are still every stream."""
    chosen = [s for s, _ in streams]
    if expression is not None:
        chosen = [
            s
            for s in chosen
            if expression.may_match(streamId=s.id, sessionId=s.workflow_session_id)
        ]
        candidates = StreamEventType if types is None else types
        types = frozenset(t for t in candidates if expression.may_match(type=t.value))
        if len(types) == len(StreamEventType):
            types = None
    whole = bool(streams) and streams[0][1] and len(chosen) == len(streams)
    return frozenset(s.id for s in chosen), whole, types


def encode_cursor(key: SearchKey) -> str:
    millis, seq, stream_id = key
    text = f"{millis}:{seq}:{stream_id}".encode()
    return base64.urlsafe_b64encode(text).decode().rstrip("=")


def decode_cursor(cursor: str) -> SearchKey:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        millis, seq, stream_id = text.split(":", 2)
        key = int(millis), int(seq), stream_id
        # Within what events can carry (a seq from 1, a stamp from 1970 to 9999), so no
        # backend meets a number it cannot hold.
        readable = stream_id.isascii() and 0 < len(stream_id) <= 64
        if readable and 0 <= key[0] <= MAX_MILLIS and 1 <= key[1] <= MAX_SEQ:
            return key
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise InvalidInput.single("query.cursor", "is not a cursor from a previous page")
