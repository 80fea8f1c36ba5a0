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

A Redis Cluster client refuses EVALSHA in a pipeline, so there the queued calls are sent
one by one, each slot's in the order they came (a stream's publishes stay in order), the
slots side by side.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from .connect import Client

MAX_PIPELINE = 256


@dataclass(eq=False, slots=True)
class _Call:
    keys: list[str]
    args: list[Any]
    reply: asyncio.Future[Any] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class ScriptBatcher:
    def __init__(self, client: Client, script: AsyncScript) -> None:
        self._client = client
        self._script = script
        self._cluster = client if isinstance(client, RedisCluster) else None
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
                    if self._cluster is not None:
                        await self._by_slot(self._cluster, batch)
                    elif len(batch) == 1:
                        await self._one(batch[0])
                    else:
                        await self._pipeline(batch)
                except Exception as exc:  # the connection's failure: every call in it
                    for call in batch:
                        _settle(call, exc)
        finally:
            self._task = None

    async def _one(self, call: _Call) -> None:
        _settle(call, await self._script(keys=call.keys, args=call.args))

    async def _by_slot(self, cluster: RedisCluster, batch: list[_Call]) -> None:
        slots: dict[int, list[_Call]] = {}
        for call in batch:
            slots.setdefault(cluster.keyslot(call.keys[0]), []).append(call)

        async def in_order(calls: list[_Call]) -> None:
            for call in calls:
                try:
                    await self._one(call)
                except Exception as exc:
                    _settle(call, exc)

        await asyncio.gather(*(in_order(calls) for calls in slots.values()))

    async def _pipeline(self, batch: list[_Call]) -> None:
        while batch:
            async with self._client.pipeline(transaction=False) as pipe:
                for call in batch:
                    pipe.evalsha(self._script.sha, len(call.keys), *call.keys, *call.args)
                replies = await pipe.execute(raise_on_error=False)
            again = []
            for call, reply in zip(batch, replies, strict=True):
                if isinstance(reply, NoScriptError):
                    again.append(call)
                else:
                    _settle(call, reply)
            if again:
                await self._client.script_load(self._script.script)
            batch = again


def _settle(call: _Call, outcome: Any) -> None:
    if call.reply.done():
        return
    if isinstance(outcome, Exception):
        call.reply.set_exception(outcome)
        call.reply.exception()  # retrieved, even if its caller is gone
    else:
        call.reply.set_result(outcome)
