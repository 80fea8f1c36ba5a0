"""Routes of SSE and long polling; the protocols live in sse.py and polling.py. ``/ws`` is
dispatched by the app itself (``app.HubApp``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Security

from ..core.hub import ExecutorStreamer
from ..core.subscription import CloseReason
from ..errors import HubNotRunning
from ..types.base import utc_now
from ..types.enums import ClientType
from .auth import BEARER, TICKET, Gate, TicketCaller, discover, gate_of
from .polling import poll
from .query import FILTER, SEQ, filters_from_query, parse_seq
from .rest import ERRORS, hub_of
from .schemas import PollResponse
from .sse import EventStreamResponse

router = APIRouter()
EPOCH = (
    "The stream epoch `since` belongs to: from another epoch, the resume is incomplete "
    "(recovered: false) and everything history holds is sent"
)


@router.get(
    "/api/streams/{ref}/events",
    responses={200: {"content": {"text/event-stream": {}}}, **ERRORS},
    summary="Server-Sent Events",
    response_model=None,
    # The schemes, for the documentation: the credential itself is checked (and a ticket
    # spent) once, in open_event_stream.
    dependencies=[Security(BEARER), Security(TICKET)],
)
async def sse(
    request: Request,
    ref: str,
    types: Annotated[str | None, Query(description="e.g. REASONING,STATUS")] = None,
    expression: Annotated[str | None, Query(alias="filter", description=FILTER)] = None,
    since: Annotated[str | None, Query(description="Resume after this seq", pattern=SEQ)] = None,
    epoch: Annotated[str | None, Query(description=EPOCH, max_length=64)] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", pattern=SEQ)] = None,
) -> EventStreamResponse:
    """Documents the route; requests reach :func:`open_event_stream` through
    ``app.HubApp``, which answers them ahead of the middleware stack."""
    return await open_event_stream(request, ref, types, since, last_event_id, epoch, expression)


async def open_event_stream(
    request: Request,
    ref: str,
    types: str | None,
    since: str | None,
    last_event_id: str | None,
    epoch: str | None = None,
    expression: str | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> EventStreamResponse:
    """Subscribe a new SSE client to ``ref``; ``headers`` go out with the response's."""
    state = request.app.state
    hub: ExecutorStreamer = state.hub
    gate: Gate = state.gate
    connections = state.connections
    gate.check_origin(request)
    principal = await gate.principal(request, ticket=True)
    await discover(request, ref)
    if connections.closing:
        raise HubNotRunning("the server is shutting down")
    gate.may_subscribe(principal, hub, ref)
    filters = filters_from_query(types, expression)
    # A browser's EventSource resends Last-Event-ID when it reconnects: it wins.
    resume = parse_seq(last_event_id, "header.Last-Event-ID")
    if resume is None:
        resume = parse_seq(since, "query.since")
    stream = hub.streams.resolve(ref)
    subject = gate.subject_key(principal)
    release = await gate.rate.hold_connection(subject) if gate.rate else _nothing
    try:
        client = hub.connect(ClientType.SERVER_SENT_EVENTS)
        try:
            sub = await hub.open_subscription(
                stream.id, filters=filters, since=resume, epoch=epoch, client=client
            )
        except BaseException:
            hub.disconnect(client.id, CloseReason.UNSUBSCRIBED)
            raise
    except BaseException:
        release()
        raise
    return EventStreamResponse(
        hub,
        client,
        sub,
        state.metrics,
        connections,
        headers or [],
        expires_at=principal.expires_at,
        release=release,
    )


def _nothing() -> None:
    pass


@router.get(
    "/api/streams/{ref}/poll",
    response_model=PollResponse,
    responses=ERRORS,
    summary="Long polling",
)
async def long_poll(
    request: Request,
    ref: str,
    caller: TicketCaller,
    since: Annotated[str, Query(description="Return events after this seq", pattern=SEQ)] = "0",
    types: Annotated[str | None, Query()] = None,
    expression: Annotated[str | None, Query(alias="filter", description=FILTER)] = None,
    wait: Annotated[float, Query(alias="timeout", ge=0, le=60, description="Seconds")] = 25,
    client_id: Annotated[str | None, Query(alias="clientId")] = None,
    epoch: Annotated[str | None, Query(description=EPOCH, max_length=64)] = None,
) -> object:
    hub = hub_of(request)
    Gate.may_subscribe(caller, hub, ref)
    filters = filters_from_query(types, expression)
    position = parse_seq(since, "query.since") or 0
    if caller.expires_at is not None:  # a poll never waits past its credential
        wait = max(0.0, min(wait, (caller.expires_at - utc_now()).total_seconds()))
    owner = gate_of(request).owner_key(caller)  # a clientId answers only its owner
    return await poll(
        hub, request.app.state.metrics, ref, position, filters, wait, client_id, epoch, owner=owner
    )
