"""The REST API of docs/rest.md: thin handlers over the hub."""

from __future__ import annotations

import base64
import binascii
import time
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, Depends, Header, Query, Request, Security
from starlette.responses import Response

from ..core.hub import ExecutorStreamer
from ..core.streams import Stream
from ..core.subscription import CloseReason
from ..errors import ClientNotFound, InvalidInput
from ..security import Principal
from ..types.analytics import ClientActivityReport, StreamMetrics, StreamStats
from ..types.base import Timestamp
from ..types.enums import StreamEventType
from ..types.filters import MAX_SEQ, HistoryFilter
from ..types.streams import StreamClientInfo, StreamSession
from .auth import BEARER, Admin, Caller, Gate, admin, discover, gate_of
from .auth import caller as authenticated
from .bodies import json_body, json_content
from .frames import json_list
from .query import FILTER, parse_event_types
from .schemas import (
    CreateStreamRequest,
    ErrorBody,
    HistoryResponse,
    PublishResponse,
    ReplayAccepted,
    TicketResponse,
)

router = APIRouter(prefix="/api")
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (401, 403, 404, 409, 413, 422, 429, 503)
}


def hub_of(request: Request) -> ExecutorStreamer:
    hub: ExecutorStreamer = request.app.state.hub
    return hub


def described(session: StreamSession, caller: Principal) -> dict[str, Any]:
    """A stream's description as ``caller`` may read it: who watches it (the clients,
    their ids and filters) is an operator's to know, like the client list itself."""
    wire = session.to_wire()
    if not caller.scope.admin:
        wire["clients"] = []
    return wire


def json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    if hasattr(payload, "model_dump"):
        body = payload.model_dump_json(by_alias=True, exclude_none=True).encode()
    else:
        body = orjson.dumps(payload, option=orjson.OPT_NON_STR_KEYS)
    return Response(body, status_code=status, media_type="application/json", headers=headers)


# -- the stream list, newest activity first, in pages --------------------------------------

LIST_LIMIT = 100
LIST_LIMIT_MAX = 1000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NEXT = "A cursor for the next page (absent on the last): pass it as ?cursor="
_LINK = 'The next page, as <URL>; rel="next" (absent on the last)'
_LIST_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "headers": {
            "X-Next-Cursor": {"description": _NEXT, "schema": {"type": "string"}},
            "Link": {"description": _LINK, "schema": {"type": "string"}},
        }
    },
    **ERRORS,
}
Position = tuple[int, str]
"""Where a stream stands in the list: its last activity (microseconds since the epoch)
and its id. The list is in descending order of it; a cursor is the last item's."""


def position(stream: Stream) -> Position:
    return (stream.last_activity - _EPOCH) // timedelta(microseconds=1), stream.id


def encode_cursor(at: Position) -> str:
    return base64.urlsafe_b64encode(f"{at[0]}:{at[1]}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> Position:
    """The position a cursor from :func:`encode_cursor` stands for; 422 for any other."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        micros, _, stream_id = text.partition(":")
        if stream_id:
            return int(micros), stream_id
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise InvalidInput.single("query.cursor", "is not a cursor from a previous page")


@router.get(
    "/streams",
    response_model=list[StreamSession],
    responses=_LIST_RESPONSES,
    summary="Streams the caller may watch, newest activity first",
)
async def list_streams(
    request: Request,
    caller: Caller,
    include_closed: Annotated[
        bool,
        Query(alias="all", description="Closed streams too (their history stays readable)"),
    ] = False,
    limit: Annotated[int, Query(ge=1, le=LIST_LIMIT_MAX, description="Streams per page")] = (
        LIST_LIMIT
    ),
    cursor: Annotated[
        str | None,
        Query(
            description="From X-Next-Cursor of the previous page: the streams after it",
            pattern=r"^[A-Za-z0-9_-]{1,400}$",
        ),
    ] = None,
) -> Response:
    after = None if cursor is None else decode_cursor(cursor)
    hub = hub_of(request)
    await hub.streams.sync_registry()  # hubs sharing a backend list every hub's streams
    # No await from here to the cursor: the page and its cursor are of one moment.
    shown = sorted(
        (
            (position(s), s)
            for s in hub.streams
            if (s.is_open or include_closed) and caller.scope.may_subscribe(s.workflow_session_id)
        ),
        key=lambda item: item[0],
        reverse=True,
    )
    if after is not None:
        shown = [item for item in shown if item[0] < after]
    page = [stream for _, stream in shown[:limit]]
    headers = None
    if len(shown) > limit:
        following = encode_cursor(shown[limit - 1][0])
        url = request.url.include_query_params(cursor=following)
        headers = {"x-next-cursor": following, "link": f'<{url.path}?{url.query}>; rel="next"'}
    return json([described(s, caller) for s in await hub.stream_sessions(page)], 200, headers)


@router.post(
    "/streams",
    # The credential first: a caller without one learns nothing, not even about bodies.
    dependencies=[Security(authenticated), Depends(json_content)],
    status_code=201,
    response_model=StreamSession,
    responses={200: {"model": StreamSession, "description": "Already existed"}, **ERRORS},
    summary="Create a stream, or reopen a closed one (idempotent per workflow session)",
)
async def create_stream(request: Request, caller: Caller, body: CreateStreamRequest) -> Response:
    """A producer's own: ``publish`` scope on the workflow session is enough."""
    hub = hub_of(request)
    Gate.may_create(caller, body.workflow_session_id)
    hub.streams.check_running()
    stream, created = await hub.streams.ensure_stream(
        body.workflow_session_id, body.config, body.metadata
    )
    return json(described(stream.session(), caller), 201 if created else 200)


@router.get("/streams/metrics", response_model=StreamMetrics, summary="Hub metrics")
async def metrics(request: Request, _: Admin) -> Response:
    return json(await hub_of(request).metrics())


@router.get("/streams/{ref}", response_model=StreamSession, responses=ERRORS)
async def get_stream(request: Request, ref: str, caller: Caller) -> Response:
    hub = hub_of(request)
    Gate.may_read(caller, hub, ref)
    return json(described(await hub.stream_session(ref), caller))


@router.delete("/streams/{ref}", status_code=204, responses=ERRORS)
async def delete_stream(
    request: Request,
    ref: str,
    caller: Caller,
    purge: Annotated[
        bool, Query(description="Remove the stream and its history (admin only)")
    ] = False,
) -> Response:
    """Closing is the producer's own (``publish`` scope); purging is the admin's."""
    hub = hub_of(request)
    if purge:
        Gate.must_be_admin(caller, f"DELETE {request.url.path}?purge=true")
    else:
        Gate.may_publish(caller, hub, ref, "close")
    await hub.destroy_stream(ref, purge=purge)
    return Response(status_code=204)


@router.post(
    "/streams/{ref}/events",
    status_code=201,
    response_model=PublishResponse,
    responses=ERRORS,
    summary="Publish one event or a batch",
    dependencies=[Security(BEARER)],
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "oneOf": [
                            {"$ref": "#/components/schemas/EventInput"},
                            {"$ref": "#/components/schemas/PublishBatch"},
                        ]
                    },
                    "examples": {
                        "single": {
                            "value": {
                                "type": "REASONING",
                                "data": {
                                    "thought": "find the login form",
                                    "confidence": 0.8,
                                    "reasoningType": "planning",
                                },
                            }
                        },
                        "batch": {
                            "value": {
                                "events": [
                                    {
                                        "type": "COMMAND_STARTED",
                                        "data": {"commandName": "open", "action": "NAVIGATE"},
                                    },
                                    {
                                        "type": "COMMAND_COMPLETED",
                                        "data": {"commandName": "open", "duration": 412},
                                    },
                                ]
                            }
                        },
                    },
                }
            },
        }
    },
)
async def publish(
    request: Request,
    ref: str,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="Sent again within 5 minutes, the same key stores nothing and "
            "answers with the events the first request stored.",
        ),
    ] = None,
) -> Response:
    """Documents the route; requests reach :func:`publish_response` through
    ``app.HubApp``, which answers them ahead of the middleware stack."""
    return await publish_response(request, ref)


async def publish_response(request: Request, ref: str) -> Response:
    """Publish the request's body into ``ref``: 201 with the stored events."""
    state = request.app.state
    started = time.perf_counter()
    gate: Gate = state.gate
    # Publishes count against the stream's events per second, not the caller's requests.
    principal = await gate.principal(request, count=False)
    await discover(request, ref)
    hub: ExecutorStreamer = state.hub
    workflow = gate.may_publish(principal, hub, ref)
    document = await json_body(request, state.max_body_bytes)
    if gate.rate is not None:
        stream = hub.streams.find(ref)
        burst = (stream.config if stream else hub.config.default_stream_config).buffer_size
        await gate.rate.events(workflow, _event_count(document), burst)
    key = request.headers.get("idempotency-key")
    owner = gate.owner_key(principal) or ""  # a key is its subject's (docs/rest.md)
    records = await state.hub.publisher.publish_wire(ref, document, key, owner)
    state.metrics.publish_latency.observe(time.perf_counter() - started)
    return Response(json_list("events", records), 201, media_type="application/json")


def _event_count(document: object) -> int:
    """How many events a publish body holds (a malformed one is refused later)."""
    if isinstance(document, dict):
        events = document.get("events")
        if isinstance(events, list) and "type" not in document:
            return max(1, len(events))
    return 1


@router.get(
    "/streams/{ref}/history", response_model=HistoryResponse, responses=ERRORS, summary="History"
)
async def history(
    request: Request,
    ref: str,
    caller: Caller,
    types: Annotated[str | None, Query(description="Comma-separated event types")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
    start_time: Annotated[Timestamp | None, Query(alias="startTime")] = None,
    end_time: Annotated[Timestamp | None, Query(alias="endTime")] = None,
    search: Annotated[str | None, Query(min_length=1, max_length=1000)] = None,
    after_seq: Annotated[int | None, Query(alias="afterSeq", ge=0, le=MAX_SEQ)] = None,
    expression: Annotated[str | None, Query(alias="filter", description=FILTER)] = None,
) -> Response:
    try:
        spec = HistoryFilter(
            event_types=None if types is None else parse_event_types(types),
            limit=limit,
            offset=offset,
            start_time=start_time,
            end_time=end_time,
            search_text=search,
            after_seq=after_seq,
            expression=expression or None,
        )
    except ValueError as exc:
        raise InvalidInput.single("query", str(exc)) from None
    hub = hub_of(request)
    Gate.may_subscribe(caller, hub, ref)
    page = await hub.history.get_events(ref, spec)
    return Response(
        json_list("events", page.records, total=page.total), media_type="application/json"
    )


@router.get("/streams/{ref}/clients", response_model=list[StreamClientInfo], responses=ERRORS)
async def clients(request: Request, ref: str, _: Admin) -> Response:
    hub = hub_of(request)
    return json([client.to_wire() for client in await hub.stream_clients(ref)])


@router.delete("/streams/{ref}/clients/{client_id}", status_code=204, responses=ERRORS)
async def disconnect_client(request: Request, ref: str, client_id: str, _: Admin) -> Response:
    hub = hub_of(request)
    stream = hub.streams.resolve(ref)
    if client_id not in stream.clients:
        raise ClientNotFound(client_id)
    hub.disconnect(client_id, CloseReason.DISCONNECTED)
    return Response(status_code=204)


@router.post(
    "/streams/{ref}/replay/{client_id}",
    # The credential first: a caller without one learns nothing, not even about bodies.
    dependencies=[Security(admin), Depends(json_content)],
    status_code=202,
    response_model=ReplayAccepted,
    responses=ERRORS,
    summary="Replay history to a live client",
)
async def replay(
    request: Request,
    ref: str,
    client_id: str,
    _: Admin,
    spec: Annotated[HistoryFilter | None, Body()] = None,
) -> Response:
    count = await hub_of(request).replay_to_client(ref, client_id, spec)
    return json({"clientId": client_id, "count": count}, 202)


@router.get(
    "/streams/{ref}/screenshots/{screenshot_id}",
    responses={200: {"content": {"image/png": {}}}, 304: {}, **ERRORS},
    summary="Screenshot bytes",
)
async def screenshot(request: Request, ref: str, screenshot_id: str, caller: Caller) -> Response:
    hub = hub_of(request)
    Gate.may_subscribe(caller, hub, ref)
    image = await hub.history.get_screenshot(ref, screenshot_id)
    etag = f'"{image.sha256}"'
    # With credentials required, a shared cache must never answer another caller with it.
    shared = "private" if gate_of(request).required else "public"
    headers = {
        "etag": etag,
        "cache-control": f"{shared}, max-age=31536000, immutable",
        # Bytes a producer sent: never sniffed into another type, never run if opened.
        "x-content-type-options": "nosniff",
        "content-security-policy": "default-src 'none'; sandbox",
    }
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(image.data, media_type=image.mime_type, headers=headers)


@router.get("/streams/{ref}/stats", response_model=StreamStats, responses=ERRORS)
async def stats(request: Request, ref: str, caller: Caller) -> Response:
    hub = hub_of(request)
    Gate.may_subscribe(caller, hub, ref)
    return json(await hub.stream_stats(ref))


@router.get("/analytics/events", response_model=dict[StreamEventType, int])
async def event_distribution(
    request: Request,
    _: Admin,
    start: Annotated[Timestamp, Query()],
    end: Annotated[Timestamp, Query()],
) -> Response:
    return json(hub_of(request).analytics.get_event_distribution(start, end))


@router.get("/analytics/clients", response_model=list[ClientActivityReport])
async def client_activity(
    request: Request,
    _: Admin,
    start: Annotated[Timestamp, Query()],
    end: Annotated[Timestamp, Query()],
) -> Response:
    reports = hub_of(request).analytics.get_client_activity(start, end)
    return json([r.to_wire() for r in reports])


@router.post(
    "/auth/tickets",
    status_code=201,
    response_model=TicketResponse,
    responses=ERRORS,
    summary="A single-use ticket for a browser's EventSource or WebSocket URL",
)
async def issue_ticket(request: Request, caller: Caller) -> Response:
    gate: Gate = request.app.state.gate
    ticket = await gate.tickets.issue(caller)
    return json({"ticket": ticket, "expiresIn": int(gate.tickets.ttl)}, 201)
