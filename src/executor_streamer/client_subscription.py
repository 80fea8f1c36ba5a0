"""``HubClient.subscribe``: a stream over WebSocket that survives its connection.

    async with hub.subscribe("wf-1", types=["COMMAND_FAILED"], since=0) as sub:
        async for event in sub:
            ...              # each event once, in seq order; sub.position is the last seq

The subscription reconnects after anything that ends a connection but does not end the
subscription (a dropped network, the hub restarting or shutting down, an operator's
disconnect, a slow-consumer or rate-limit close), with jittered exponential backoff, and
resumes from ``position`` and the stream's ``epoch`` (docs/protocol.md, "Resume"): nothing
is missed while the hub still holds it, and nothing is handed out twice. When the hub no
longer holds everything asked for (``recovered: false``), ``sub.recovered`` says so and
``on_state`` hears of it. What cannot get better by trying again is raised, as the class
the hub raises in-process: ``StreamNotFound`` (4004), ``Unauthorized`` (4001, HTTP 401),
``Forbidden`` (4003, HTTP 403), ``InvalidInput``. The iteration ends when the stream closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Self

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from .errors import StreamerError, error_from_wire
from .types.events import StreamEvent

State = Literal["connecting", "live", "reconnecting", "closed"]
TokenSource = str | Callable[[], str | Awaitable[str]]
"""A credential, or a function (plain or async) that gives the current one."""


async def resolve_token(source: TokenSource) -> str:
    if isinstance(source, str):
        return source
    token = source()
    return await token if inspect.isawaitable(token) else token


BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0
"""Seconds: the first retry waits up to BACKOFF_FIRST, each next one up to twice as long,
never more than BACKOFF_MAX ("full jitter": a random wait below the cap, so clients dropped
together do not come back together)."""

# Close codes after which trying again cannot help (docs/protocol.md).
_FATAL = {4001: "UNAUTHORIZED", 4003: "FORBIDDEN", 4004: "STREAM_NOT_FOUND"}
_STREAM_CLOSED = 4010


@dataclass(frozen=True, slots=True)
class SubscriptionState:
    state: State
    recovered: bool
    """False once the hub said it no longer held everything asked for."""
    position: int | None
    epoch: str | None


class _StreamEnded(Exception):
    """The stream closed: the iteration ends."""


class _Dropped(Exception):
    """The connection ended (with this close code, if any): connect again and resume."""


class RemoteSubscription:
    def __init__(
        self,
        ws_url: str,
        stream: str,
        *,
        since: int | None,
        types: Sequence[str] | None,
        expression: str | None = None,
        token: TokenSource | None = None,
        on_state: Callable[[SubscriptionState], None] | None = None,
    ) -> None:
        self._url = ws_url
        self._stream = stream
        self._filter: dict[str, Any] = {}
        """The one filter asked for: its event types and expression, both to match."""
        if types:
            self._filter["eventTypes"] = list(types)
        if expression:
            self._filter["expression"] = expression
        self._token = token
        self._on_state = on_state
        self.position = since
        """The last seq handed to the application: where a reconnect resumes from."""
        self.epoch: str | None = None
        self.recovered = True
        self.state: State = "connecting"
        self.client_id: str | None = None
        self._ws: ClientConnection | None = None
        self._closed = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Unsubscribe for good: close the connection; iterations end."""
        self._closed = True
        await self._disconnect()

    async def _disconnect(self) -> None:
        ws = self._ws
        if ws is not None:
            await ws.close()
        self._set_state("closed")

    async def __aiter__(self) -> AsyncIterator[StreamEvent]:
        """Each ``async for`` connects; leaving the loop closes the connection, so the hub
        no longer holds a subscription for it. A later loop resumes from ``position``."""
        attempt = 0
        self._set_state("connecting")
        try:
            while not self._closed:
                try:
                    async for event in self._connection():
                        attempt = 0  # a connection that delivered is a good one
                        yield event
                    if self._closed:
                        return
                except _StreamEnded:
                    return
                except (_Dropped, OSError, ConnectionClosed, InvalidHandshake, TimeoutError):
                    if self._closed:
                        return
                self._set_state("reconnecting")
                await asyncio.sleep(random.uniform(0, min(BACKOFF_MAX, BACKOFF_FIRST * 2**attempt)))
                attempt += 1
        finally:
            await self._disconnect()

    async def _connection(self) -> AsyncIterator[StreamEvent]:
        """One connection's events, after its ``subscribed``. Returns or raises what ended
        it: a fatal error as the hub's class, ``_StreamEnded``, or a connection error."""
        headers = {}
        if self._token is not None:  # asked again at every connection: it may be renewed
            headers["authorization"] = f"Bearer {await resolve_token(self._token)}"
        try:
            ws = await connect(
                self._url, additional_headers=headers, max_size=None, open_timeout=10
            )
        except InvalidStatus as exc:
            raise _denied(exc) from None
        self._ws = ws
        try:
            async with ws:
                await self._subscribe(ws)
                async for message in ws:
                    for event in self._events(orjson.loads(message)):
                        yield event
        except ConnectionClosed:
            pass  # how it closed says what comes next
        finally:
            self._ws = None
        self._raise_for_close(ws)

    async def _subscribe(self, ws: ClientConnection) -> None:
        """Wait for ``connection_ack``, subscribe from ``position``, wait for
        ``subscribed``; events that arrive meanwhile cannot (they follow ``subscribed``)."""
        while True:
            frame = orjson.loads(await ws.recv())
            kind = frame.get("type")
            if kind == "connection_ack":
                self.client_id = frame["metadata"]["clientId"]
                request: dict[str, Any] = {
                    "type": "subscribe",
                    "streamId": self._stream,
                    "batch": True,
                }
                if self._filter:
                    request["filters"] = [self._filter]
                if self.position is not None:
                    request["since"] = self.position
                    if self.epoch is not None:
                        request["epoch"] = self.epoch
                await ws.send(orjson.dumps(request).decode())
            elif kind == "subscribed":
                metadata = frame["metadata"]
                if self.epoch is not None and metadata["epoch"] != self.epoch:
                    # Another life of the stream (purged, or a hub that lost its store):
                    # its seqs start over, so the old position guards nothing.
                    self.position = 0
                self.epoch = metadata["epoch"]
                if not metadata["recovered"]:
                    self.recovered = False
                self._set_state("live")
                return
            elif kind == "error":
                raise _error(frame["error"])
            # Anything else (a newer hub's message, say) is not for this subscription.

    def _events(self, frame: dict[str, Any]) -> list[StreamEvent]:
        kind = frame.get("type")
        if kind == "events":
            raw = frame["events"]
        elif kind == "event":
            raw = [frame["event"]]
        elif kind == "error":
            error = frame["error"]
            if error.get("code") == "STREAM_CLOSED":
                raise _StreamEnded
            raise _error(error)
        else:
            return []
        fresh = []
        for item in raw:
            event = StreamEvent.model_validate(item)
            if self.position is None or event.seq > self.position:
                fresh.append(event)
                self.position = event.seq
        return fresh

    def _raise_for_close(self, ws: ClientConnection) -> None:
        code = ws.close_code
        if code == _STREAM_CLOSED:
            raise _StreamEnded
        if code in _FATAL:
            raise error_from_wire(_FATAL[code], ws.close_reason or _FATAL[code], None)
        raise _Dropped(code)

    def _set_state(self, state: State) -> None:
        if state == self.state:
            return
        self.state = state
        if self._on_state is not None:
            with contextlib.suppress(Exception):  # the application's; never ours to fail
                self._on_state(SubscriptionState(state, self.recovered, self.position, self.epoch))


def _error(error: dict[str, Any]) -> StreamerError:
    details = error.get("details")
    return error_from_wire(
        str(error.get("code", "INTERNAL_ERROR")),
        str(error.get("message", "")),
        details if isinstance(details, dict) else None,
    )


def _denied(exc: InvalidStatus) -> Exception:
    """An upgrade refused with an HTTP answer: the hub's error, if it is one that trying
    again cannot fix; else something to retry."""
    response = exc.response
    try:
        error = orjson.loads(response.body or b"{}").get("error")
    except orjson.JSONDecodeError:
        error = None
    if response.status_code in (401, 403) and isinstance(error, dict):
        wire = _error(error)
        wire.status = response.status_code
        return wire
    return exc
