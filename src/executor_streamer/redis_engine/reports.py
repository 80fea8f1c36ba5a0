"""Each hub's latest figures (its clients, its counters), for the cluster-wide views."""

from __future__ import annotations

from collections.abc import Sequence

from .calls import call
from .connect import Client
from .keys import NODES


class RedisReports:
    """A :class:`~executor_streamer.history.shared.HubReports` in one Redis hash."""

    def __init__(self, client: Client, node: str) -> None:
        self._client = client
        self._node = node

    async def put_report(self, report: bytes, ttl_seconds: float) -> None:
        # One hash holds every hub's report, so Redis cannot expire one of them: the
        # hubs drop a report that stopped changing themselves (``drop_reports``).
        await call(self._client.hset(NODES, self._node, report))

    async def reports(self) -> dict[str, bytes]:
        found: dict[bytes, bytes] = await call(self._client.hgetall(NODES))
        own = self._node.encode()
        return {node.decode(): report for node, report in found.items() if node != own}

    async def drop_reports(self, nodes: Sequence[str]) -> None:
        if nodes:
            await call(self._client.hdel(NODES, *nodes))
