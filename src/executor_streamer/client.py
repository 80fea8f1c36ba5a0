"""A small HTTP client for producers and watchers of a running hub.

    async with HubClient("http://localhost:3001", token=...) as hub:
        await hub.publish_reasoning("wf-1", "look for the login form", 0.8, "planning")
        async with hub.subscribe("wf-1", since=0) as sub:   # WebSocket, resumes exactly
            async for event in sub:
                ...

``token`` is the hub's credential (a JWT or an API key; docs/security.md), sent as
``Authorization: Bearer`` with every request: a string, or a function (plain or async)
asked for it at every request and connection, so that a token can be renewed.
Publishing has the same methods as the in-process ``hub.publisher``. ``watch`` follows a
stream over Server-Sent Events and, like a browser's EventSource, reconnects with
``Last-Event-ID`` after a dropped connection, in the epoch the hub named in ``subscribed``,
so it misses nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Self

import httpx
import orjson

from .client_subscription import (
    RemoteSubscription,
    SubscriptionState,
    TokenSource,
    resolve_token,
)
from .core.publish_api import PublishApi
from .errors import error_from_wire
from .types.base import format_timestamp
from .types.events import StreamEvent
from .types.streams import StreamSession

RECONNECT_DELAY = 1.0


@dataclass(frozen=True)
class ServerSentEvent:
    event: str
    data: str
    id: str | None


class HubClient(PublishApi):
    def __init__(
        self,
        base_url: str = "http://localhost:3001",
        timeout: float = 30.0,
        *,
        token: TokenSource | None = None,
    ) -> None:
        self._token = token
        self._base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self._base_url,
            timeout=timeout,
            auth=None if token is None else _BearerAuth(token),
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def create_stream(
        self, workflow_session_id: str, config: Mapping[str, Any] | None = None
    ) -> StreamSession:
        body = {"workflowSessionId": workflow_session_id, "config": config}
        response = await self._http.post("/api/streams", json=body)
        return StreamSession.model_validate(self._json(response))

    async def close_stream(self, stream: str, purge: bool = False) -> None:
        self._json(await self._http.delete(f"/api/streams/{stream}", params={"purge": purge}))

    async def publish_event(
        self,
        session_id: str,
        event: Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
    ) -> StreamEvent:
        """``idempotency_key``: sent again within 5 minutes, the same publish stores
        nothing and returns what the first one stored (docs/rest.md)."""
        return (await self.publish_batch(session_id, [event], idempotency_key=idempotency_key))[0]

    async def publish_batch(
        self,
        session_id: str,
        events: Sequence[Mapping[str, Any]],
        *,
        idempotency_key: str | None = None,
    ) -> list[StreamEvent]:
        body = events[0] if len(events) == 1 else {"events": list(events)}
        headers = {"content-type": "application/json"}
        if idempotency_key is not None:
            headers["idempotency-key"] = idempotency_key
        response = await self._http.post(
            f"/api/streams/{session_id}/events", content=orjson.dumps(body), headers=headers
        )
        return [StreamEvent.model_validate(e) for e in self._json(response)["events"]]

    async def search(
        self,
        filter: str | None = None,
        *,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        streams: str | None = None,
        page_size: int = 100,
        limit: int | None = None,
    ) -> AsyncIterator[StreamEvent]:
        """Events across runs, newest first (``GET /api/search``, docs/query.md), page
        after page until none is left or ``limit`` events were given. ``filter`` is an
        expression, ``streams`` a run pattern (``team-a:*``)."""
        params: dict[str, str | int] = {"limit": page_size}
        for name, value in (("filter", filter), ("streams", streams)):
            if value is not None:
                params[name] = value
        params.update(_range(start_time, end_time))
        given = 0
        while True:
            page = self._json(await self._http.get("/api/search", params=params))
            for event in page["events"]:
                yield StreamEvent.model_validate(event)
                given += 1
                if limit is not None and given >= limit:
                    return
            if page["nextCursor"] is None:
                return
            params["cursor"] = page["nextCursor"]

    async def run_analytics(
        self,
        *,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        streams: str | None = None,
        bucket: str = "hour",
    ) -> dict[str, Any]:
        """``GET /api/analytics/runs`` (docs/query.md): outcomes, runs over time, failing
        commands, action durations and the slowest runs; default the last 24 hours."""
        params = _range(start_time, end_time)
        params["bucket"] = bucket
        if streams is not None:
            params["streams"] = streams
        return self._json(await self._http.get("/api/analytics/runs", params=params))  # type: ignore[no-any-return]

    async def widget(
        self, index: int, *, start_time: datetime | None = None, end_time: datetime | None = None
    ) -> dict[str, Any]:
        """One configured dashboard widget's figure (``viewer.dashboard.widgets``)."""
        params = _range(start_time, end_time)
        return self._json(await self._http.get(f"/api/analytics/widgets/{index}", params=params))  # type: ignore[no-any-return]

    def subscribe(
        self,
        stream: str,
        *,
        since: int | None = None,
        types: Sequence[str] | None = None,
        filter: str | None = None,
        on_state: Callable[[SubscriptionState], None] | None = None,
    ) -> RemoteSubscription:
        """Events of ``stream`` over WebSocket, from after ``since`` (live only without
        it), reconnecting and resuming exactly (``client_subscription``). ``types`` and
        ``filter`` (a CEL expression, docs/expressions.md) choose which: both must match;
        an expression that does not compile raises ``InvalidFilter``."""
        ws_url = "ws" + self._base_url.removeprefix("http") + "/ws"
        return RemoteSubscription(
            ws_url,
            stream,
            since=since,
            types=types,
            expression=filter,
            token=self._token,
            on_state=on_state,
        )

    async def watch(
        self,
        stream: str,
        *,
        since: int | None = None,
        types: Sequence[str] | None = None,
        filter: str | None = None,
    ) -> AsyncGenerator[StreamEvent, None]:
        """Events of ``stream`` as they arrive, each once in seq order; ends when the
        stream closes. ``types`` and ``filter`` as for :meth:`subscribe`.

        After a dropped connection it resumes after the last seq it yielded (live only at
        first: after the stream's ``lastSeq`` when it subscribed), in the epoch of that
        seq; in another epoch the hub sends everything it holds again, from seq 1.
        Events an operator replays to this client (``replay_event``) are not yielded:
        they repeat seqs already handed out and never move the resume position."""
        last, epoch = since, None
        while True:
            try:
                async for frame in self._sse(stream, last, epoch, types, filter):
                    if frame.event == "stream_event":
                        event = StreamEvent.model_validate_json(frame.data)
                        last = event.seq
                        yield event
                    elif frame.event == "subscribed":
                        opening = orjson.loads(frame.data)
                        if last is None:  # live only: resume from where it began
                            last = opening["lastSeq"]
                        elif epoch is not None and opening["epoch"] != epoch:
                            last = 0  # seqs start over, and the hub sends all it holds
                        epoch = opening["epoch"]
                    elif frame.event == "error":
                        error = orjson.loads(frame.data)
                        if error.get("code") == "STREAM_CLOSED":
                            return
            except httpx.TransportError:
                pass  # dropped: reconnect from the last seq seen
            await asyncio.sleep(RECONNECT_DELAY)

    async def _sse(
        self,
        stream: str,
        last: int | None,
        epoch: str | None,
        types: Sequence[str] | None,
        expression: str | None,
    ) -> AsyncIterator[ServerSentEvent]:
        params = {"types": ",".join(types)} if types else {}
        if expression:
            params["filter"] = expression
        headers = {"accept": "text/event-stream"}
        if last is not None:
            headers["last-event-id"] = str(last)
            if epoch is not None:
                params["epoch"] = epoch
        url = f"/api/streams/{stream}/events"
        async with self._http.stream(
            "GET", url, params=params, headers=headers, timeout=None
        ) as response:
            if response.status_code != 200:
                await response.aread()
                self._json(response)
            async for frame in parse_sse(response.aiter_lines()):
                yield frame

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        """The answer's JSON; an error answer raises the class the hub raises in-process
        for its code (``errors.error_from_wire``)."""
        if response.status_code == 204:
            return None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.is_error:
            error = body.get("error") if isinstance(body, dict) else None
            if not isinstance(error, dict):
                error = {"code": "HTTP_ERROR", "message": response.reason_phrase}
            raise error_from_wire(
                str(error.get("code", "HTTP_ERROR")),
                str(error.get("message", response.reason_phrase)),
                error.get("details") if isinstance(error.get("details"), dict) else None,
                response.status_code,
            )
        return body


def _range(start_time: datetime | None, end_time: datetime | None) -> dict[str, str]:
    """Time bounds as the hub reads them; a datetime without a zone is UTC, as on the hub."""
    names = (("startTime", start_time), ("endTime", end_time))
    return {
        name: format_timestamp(moment if moment.tzinfo else moment.replace(tzinfo=UTC))
        for name, moment in names
        if moment is not None
    }


class _BearerAuth(httpx.Auth):
    def __init__(self, token: TokenSource) -> None:
        self._token = token

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        request.headers["authorization"] = f"Bearer {await resolve_token(self._token)}"
        yield request


async def parse_sse(lines: AsyncIterator[str]) -> AsyncIterator[ServerSentEvent]:
    """Frames of a text/event-stream, parsed as the WHATWG spec says."""
    event, last_id = "message", None
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                yield ServerSentEvent(event, "\n".join(data), last_id)
            event, data = "message", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            last_id = value
