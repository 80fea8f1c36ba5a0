"""HTTP long polling: ``GET /api/streams/{id}/poll`` (docs/protocol.md).

A polling client keeps one subscription per stream between polls, so events published
between two polls wait for it (up to ``bufferSize``) instead of being looked up again.
A poll whose ``since`` is not where that subscription stands, or whose filters changed,
or whose subscription was dropped, starts a fresh one from ``since`` through the
resume path, so polling has the same no-gap, no-duplicate guarantee as the other
transports.
"""

from __future__ import annotations

import asyncio
import time
import weakref

from starlette.responses import Response

from ..core.clients import ClientSession
from ..core.hub import ExecutorStreamer
from ..core.streams import Stream
from ..core.subscription import CloseReason, Subscription
from ..history.records import EventRecord
from ..types.enums import ClientType
from ..types.filters import StreamFilter
from .frames import json_list
from .metrics import ServerMetrics

MAX_EVENTS_PER_POLL = 1000
# Touch the client this often while a poll waits, so a long poll is never "idle".
KEEPALIVE_SLICE = 5.0
POLL_INTERVAL = 0.05
"""A client that polls again at once is answered at most this often, so that while
events keep coming each answer carries several: each poll is a whole HTTP request, and
a hundred clients answered once per event were more than one core could serve (the
fan-out benchmark's long-polling row). A poll that waited for its events, the usual
case on a quiet stream, is answered at once."""

# When each subscription's client was last answered with events (weak: a subscription
# that is gone takes its entry along).
_answered: weakref.WeakKeyDictionary[Subscription, float] = weakref.WeakKeyDictionary()


async def poll(
    hub: ExecutorStreamer,
    metrics: ServerMetrics,
    ref: str,
    since: int,
    filters: list[StreamFilter] | None,
    wait_seconds: float,
    client_id: str | None,
    epoch: str | None = None,
    *,
    owner: str | None = None,
) -> Response:
    """``owner``: whom the caller is (``Gate.owner_key``); a ``client_id`` registered by
    another owner is not theirs, and the poll registers a client of its own."""
    stream = hub.streams.resolve(ref)
    client = _client_for(hub, client_id, owner)
    client.polls_in_progress += 1
    try:
        return await _answer(hub, metrics, stream, client, since, filters, wait_seconds, epoch)
    finally:
        client.polls_in_progress -= 1


async def _answer(
    hub: ExecutorStreamer,
    metrics: ServerMetrics,
    stream: Stream,
    client: ClientSession,
    since: int,
    filters: list[StreamFilter] | None,
    wait_seconds: float,
    epoch: str | None,
) -> Response:
    client.touch()
    sub = client.subscriptions.get(stream.id)
    recovered = True
    effective = list(stream.config.event_filters) if filters is None else filters
    foreign = epoch is not None and epoch != stream.epoch  # a position from another life
    if foreign or _must_restart(sub, since, effective, stream.is_open):
        sub = await hub.open_subscription(
            stream.id, filters=filters, since=since, epoch=epoch, client=client
        )
        recovered = sub.recovered
    assert sub is not None
    await _wait_for_events(sub, client, wait_seconds)
    await _pace(sub)
    records = [item for item in sub.drain(MAX_EVENTS_PER_POLL) if isinstance(item, EventRecord)]
    if records:
        _answered[sub] = time.monotonic()
    metrics.record_delivered(records)
    client.touch()
    more = sub.pending > 0
    body = json_list(
        "events",
        records,
        clientId=client.id,
        lastSeq=sub.resume_position,
        epoch=stream.epoch,
        recovered=recovered,
        more=more,
        closed=sub.close_reason is CloseReason.STREAM_CLOSED and not more,
    )
    return Response(body, media_type="application/json", headers={"cache-control": "no-store"})


async def _pace(sub: Subscription) -> None:
    """Hold an answer until ``POLL_INTERVAL`` after the client's previous one."""
    last = _answered.get(sub)
    if last is None or sub.closed:
        return
    wait = last + POLL_INTERVAL - time.monotonic()
    if wait > 0:
        await asyncio.sleep(wait)


def _client_for(hub: ExecutorStreamer, client_id: str | None, owner: str | None) -> ClientSession:
    """The polling client of that id if ``owner`` registered it, or else a newly
    registered one: a ``clientId`` someone else learnt (from a log, a shared URL) never
    lets them take another subject's events or move its position."""
    if client_id is not None:
        client = hub.clients.find(client_id)
        if (
            client is not None
            and client.type is ClientType.HTTP_POLLING
            and client.subject == owner
        ):
            return client
    client = hub.connect(ClientType.HTTP_POLLING)
    client.subject = owner
    return client


def _must_restart(
    sub: Subscription | None, since: int, filters: list[StreamFilter], stream_open: bool
) -> bool:
    if sub is None or sub.resume_position != since or sub.filters != filters:
        return True
    if sub.closed and not sub.pending:
        # Dropped (slow between polls) or closed then reopened: start again from since.
        return sub.close_reason is not CloseReason.STREAM_CLOSED or stream_open
    return False


async def _wait_for_events(sub: Subscription, client: ClientSession, seconds: float) -> None:
    if sub.pending or sub.closed or seconds <= 0:
        return
    ready = asyncio.Event()
    sub.on_ready = lambda _: ready.set()
    deadline = time.monotonic() + seconds
    try:
        while not ready.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                await asyncio.wait_for(ready.wait(), min(left, KEEPALIVE_SLICE))
            except TimeoutError:
                client.touch()
    finally:
        sub.on_ready = None
