"""Publish scripts that queue up while one is in flight go to Redis in one pipeline.

The same idea as the single-process hub's group commit: the first publish is sent at
once; those that arrive while it is in flight are sent together, in one write, as soon
as it returns. Each is still its own script call, atomic on its own, answered in order;
a pipeline only saves the round trips and the client's per-command work (at thousands of
single-event publishes a second, the connection's send was the hub's biggest cost).

A reply the pipeline could not get fails every call in it with the connection's error:
the caller retries with its idempotency key (``RedisHistory.publish``), which a script
that did run answers with what it stored. A NOSCRIPT (Redis restarted and forgot the
script) means the script did not run: it is loaded again and those calls sent again.

On a Redis Cluster (``routes`` given) the queued calls are grouped by the primary that
owns each one's slot, as the Cluster client's map says, and each group is one pipeline
on a plain connection to that primary, the groups side by side. (redis-py's own Cluster
pipelines refuse EVALSHA.) A call the primary answers MOVED, ASK or TRYAGAIN did not
run: it is sent again through the Cluster client, which follows the redirection and
learns the new map. A group whose connection fails is sent that way too, one call after
the other (each carries its idempotency key, so one that did run is not stored twice).
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import AskError, NoScriptError, TryAgainError

from ..errors import StorageUnavailable
from .connect import Client
from .routing import ClusterNodes

MAX_PIPELINE = 256
_REDIRECTED = (AskError, TryAgainError)  # MovedError is an AskError


@dataclass(eq=False, slots=True)
class _Call:
    keys: list[str]
    args: list[Any]
    reply: asyncio.Future[Any] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class ScriptBatcher:
    def __init__(
        self, client: Client, script: AsyncScript, routes: ClusterNodes | None = None
    ) -> None:
        self._client = client
        self._script = script
        self._routes = routes
        self._queue: deque[_Call] = deque()
        self._task: asyncio.Task[None] | None = None

    async def call(self, keys: list[str], args: list[Any]) -> Any:
        call = _Call(keys, args)
        self._queue.append(call)
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="executor-streamer-publish")
        # A caller that gives up leaves its call to run: it may be in a pipeline already.
        return await asyncio.shield(call.reply)

    async def _run(self) -> None:
        try:
            while self._queue:
                batch = [self._queue.popleft() for _ in range(min(len(self._queue), MAX_PIPELINE))]
                try:
                    if self._routes is not None:
                        await self._by_node(self._routes, batch)
                    elif len(batch) == 1:
                        await self._one(batch[0])
                    else:
                        assert isinstance(self._client, Redis)
                        await self._pipeline(self._client, batch)
                except Exception as exc:  # the connection's failure: every call in it
                    for call in batch:
                        _settle(call, exc)
        finally:
            self._task = None

    async def _one(self, call: _Call) -> None:
        _settle(call, await self._script(keys=call.keys, args=call.args))

    async def _one_by_one(self, calls: list[_Call]) -> None:
        for call in calls:
            try:
                await self._one(call)
            except Exception as exc:
                _settle(call, exc)

    async def _by_node(self, routes: ClusterNodes, batch: list[_Call]) -> None:
        groups: dict[str | None, list[_Call]] = {}
        for call in batch:
            try:
                node: str | None = routes.node_of(call.keys[0])
            except StorageUnavailable:
                node = None  # no map of that slot yet: the Cluster client finds it
            groups.setdefault(node, []).append(call)

        async def send(node: str | None, calls: list[_Call]) -> None:
            if node is None:
                await self._one_by_one(calls)
                return
            try:
                redirected = await self._pipeline(routes.client(node), calls)
            except Exception:
                redirected = [call for call in calls if not call.reply.done()]
            await self._one_by_one(redirected)

        await asyncio.gather(*(send(node, calls) for node, calls in groups.items()))

    async def _pipeline(self, client: Redis, batch: list[_Call]) -> list[_Call]:
        """Send ``batch`` in one pipeline; returns the calls a Cluster redirected."""
        redirected = []
        while batch:
            async with client.pipeline(transaction=False) as pipe:
                for call in batch:
                    pipe.evalsha(self._script.sha, len(call.keys), *call.keys, *call.args)
                replies = await pipe.execute(raise_on_error=False)
            again = []
            for call, reply in zip(batch, replies, strict=True):
                if isinstance(reply, NoScriptError):
                    again.append(call)
                elif isinstance(reply, _REDIRECTED):
                    redirected.append(call)
                else:
                    _settle(call, reply)
            if again:
                await client.script_load(self._script.script)
            batch = again
        return redirected


def _settle(call: _Call, outcome: Any) -> None:
    if call.reply.done():
        return
    if isinstance(outcome, Exception):
        call.reply.set_exception(outcome)
        call.reply.exception()  # retrieved, even if its caller is gone
    else:
        call.reply.set_result(outcome)
