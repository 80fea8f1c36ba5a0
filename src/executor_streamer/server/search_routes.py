"""Search across runs and run analytics (docs/query.md, docs/rest.md): thin handlers over
``core/search.py`` and ``core/run_analytics.py``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from starlette.responses import Response

from ..core.run_analytics import Bucket, Window
from ..core.search import SEARCH_LIMIT, SEARCH_LIMIT_MAX, SearchRequest
from ..errors import InvalidInput
from ..security.scope import parse_pattern
from ..types.base import Timestamp
from .auth import Caller
from .frames import json_list
from .query import FILTER
from .rest import ERRORS, hub_of, json

router = APIRouter(prefix="/api")

STREAMS = "Only runs whose workflow session id matches: `wf-1`, `tenant-a:*` or `*`"
CURSOR = "`nextCursor` of the previous page: the events after it"


@router.get("/search", responses=ERRORS, summary="Events across runs, newest first")
async def search(
    request: Request,
    caller: Caller,
    expression: Annotated[str | None, Query(alias="filter", description=FILTER)] = None,
    start_time: Annotated[Timestamp | None, Query(alias="startTime")] = None,
    end_time: Annotated[Timestamp | None, Query(alias="endTime")] = None,
    streams: Annotated[str | None, Query(description=STREAMS, max_length=129)] = None,
    limit: Annotated[int, Query(ge=1, le=SEARCH_LIMIT_MAX)] = SEARCH_LIMIT,
    cursor: Annotated[
        str | None, Query(description=CURSOR, pattern=r"^[A-Za-z0-9_-]{1,400}$")
    ] = None,
) -> Response:
    if start_time is not None and end_time is not None and start_time > end_time:
        raise InvalidInput.single("query.startTime", "must not be after endTime")
    page = await hub_of(request).runs.search(
        caller.scope,
        SearchRequest(
            expression=expression or None,
            start_time=start_time,
            end_time=end_time,
            streams=None if streams is None else parse_pattern(streams, "query.streams"),
            limit=limit,
            cursor=cursor,
        ),
    )
    body = json_list("events", page.records, nextCursor=page.next_cursor)
    return Response(body, media_type="application/json")


BUCKET = "Runs over time counted by hour or by day (UTC)"
RANGE = "Default: the 24 hours before endTime (before now)"


@router.get("/analytics/runs", responses=ERRORS, summary="Run outcomes, failures and durations")
async def run_analytics(
    request: Request,
    caller: Caller,
    start_time: Annotated[Timestamp | None, Query(alias="startTime", description=RANGE)] = None,
    end_time: Annotated[Timestamp | None, Query(alias="endTime")] = None,
    streams: Annotated[str | None, Query(description=STREAMS, max_length=129)] = None,
    bucket: Annotated[Bucket, Query(description=BUCKET)] = "hour",
) -> Response:
    window = Window.of(start_time, end_time, bucket)
    pattern = None if streams is None else parse_pattern(streams, "query.streams")
    return json(await hub_of(request).run_analytics.runs(caller.scope, window, pattern))


@router.get("/analytics/widgets/{index}", responses=ERRORS, summary="A configured dashboard widget")
async def widget(
    request: Request,
    caller: Caller,
    index: Annotated[int, Path(ge=0, le=1000)],
    start_time: Annotated[Timestamp | None, Query(alias="startTime", description=RANGE)] = None,
    end_time: Annotated[Timestamp | None, Query(alias="endTime")] = None,
) -> Response:
    figure = await hub_of(request).run_analytics.widget(caller.scope, index, start_time, end_time)
    return json(figure)


@router.get("/analytics/widgets", responses=ERRORS, summary="The configured dashboard widgets")
async def widgets(request: Request, _: Caller) -> Response:
    configured = hub_of(request).config.viewer.dashboard.widgets
    return json([w.to_wire() for w in configured])
