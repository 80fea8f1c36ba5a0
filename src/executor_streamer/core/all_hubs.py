"""Figures over every hub sharing a backend, where the API implies them
(docs/multi-node.md: "cluster-wide"): a stream's clients, stream statistics and hub metrics.

Every hub puts a report of its own clients and counters into the shared store every
:data:`REPORT_SECONDS`; a view is this hub's live figures plus the other hubs' latest
reports (those older than :data:`STALE_SECONDS` are from a hub that is gone, and
ignored). Clients on other hubs are therefore up to a few seconds old; the stream
registry, seqs and event totals are exact, read from the store itself.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from ..history.shared import HubReports, SharedHistory
from ..types.analytics import StreamMetrics, StreamStats
from ..types.enums import ClientType
from ..types.streams import StreamClientInfo, StreamSession
from .analytics import StreamAnalytics
from .clients import ClientRegistry
from .counters import HubCounters, resident_memory_bytes
from .streams import Stream, StreamManager

REPORT_SECONDS = 2.0
STALE_SECONDS = 3 * REPORT_SECONDS + 1


class AllHubsView:
    def __init__(
        self,
        reports: HubReports,
        history: SharedHistory,
        streams: StreamManager,
        clients: ClientRegistry,
        counters: HubCounters,
        analytics: StreamAnalytics,
    ) -> None:
        self._reports = reports
        self._history = history
        self._streams = streams
        self._clients = clients
        self._counters = counters
        self._analytics = analytics

    # -- this hub's report ---------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        counters = self._counters
        streams: dict[str, Any] = {}
        for stream in self._streams:
            if stream.clients or stream.counters.total_events:
                streams[stream.id] = {
                    "clients": [c.info(stream.id).to_wire() for c in stream.clients.values()],
                    "lastHour": stream.counters.last_hour.total(),
                    "largest": stream.counters.largest_event,
                }
        return {
            "at": time.time(),
            "clientsByType": {k.value: v for k, v in self._clients.counts_by_type().items()},
            "eventsPerSecond": counters.events_per_second(),
            "averageEventSize": counters.average_event_size(),
            "published": sum(counters.published_by_type.values()),
            "attempts": counters.publish_attempts,
            "failures": counters.publish_failures,
            "memory": resident_memory_bytes(),
            "streams": streams,
        }

    async def publish_report(self) -> None:
        await self._reports.put_report(orjson.dumps(self.report()), STALE_SECONDS)

    async def _others(self) -> list[dict[str, Any]]:
        now = time.time()
        fresh: list[dict[str, Any]] = []
        stale: list[str] = []
        for node, raw in (await self._reports.reports()).items():
            report = orjson.loads(raw)
            if now - report.get("at", 0) <= STALE_SECONDS:
                fresh.append(report)
            else:
                stale.append(node)
        if stale:
            await self._reports.drop_reports(stale)
        return fresh

    # -- views ---------------------------------------------------------------------------

    async def clients(self, stream: Stream) -> list[StreamClientInfo]:
        return (await self.sessions([stream]))[0].clients

    async def sessions(self, streams: list[Stream]) -> list[StreamSession]:
        """The streams' sessions, each with the clients every hub holds."""
        others = await self._others()
        sessions = []
        for stream in streams:
            remote = [
                StreamClientInfo.model_validate(info)
                for report in others
                for info in report["streams"].get(stream.id, {}).get("clients", [])
            ]
            session = stream.session()
            if remote:
                session = session.model_copy(update={"clients": [*session.clients, *remote]})
            sessions.append(session)
        return sessions

    async def metrics(self) -> StreamMetrics:
        local = self._analytics.get_metrics()
        others = await self._others()
        by_type = dict(local.clients_by_type)
        for report in others:
            for kind, count in report["clientsByType"].items():
                by_type[ClientType(kind)] = by_type.get(ClientType(kind), 0) + count
        published = sum(self._counters.published_by_type.values())
        weighted = local.average_event_size * published + sum(
            r["averageEventSize"] * r["published"] for r in others
        )
        published_all = published + sum(r["published"] for r in others)
        attempts = self._counters.publish_attempts + sum(r["attempts"] for r in others)
        failures = self._counters.publish_failures + sum(r["failures"] for r in others)
        return local.model_copy(
            update={
                "total_clients": sum(by_type.values()),
                "events_per_second": local.events_per_second
                + sum(r["eventsPerSecond"] for r in others),
                "average_event_size": weighted / published_all if published_all else 0.0,
                "memory_usage": local.memory_usage + sum(r["memory"] for r in others),
                "error_rate": failures / attempts if attempts else 0.0,
                "clients_by_type": by_type,
            }
        )

    async def stream_stats(self, stream: Stream) -> StreamStats:
        local = await self._analytics.get_stream_stats(stream.id)
        remote = [
            r["streams"][stream.id] for r in await self._others() if stream.id in r["streams"]
        ]
        counts = await self._history.counts([stream.id])
        total = counts[stream.id][2] if stream.id in counts else local.total_events
        age = max(time.time() - stream.created_at.timestamp(), 1e-3)
        return local.model_copy(
            update={
                "client_count": local.client_count + sum(len(r["clients"]) for r in remote),
                "total_events": total,
                "events_in_last_hour": local.events_in_last_hour
                + sum(r["lastHour"] for r in remote),
                "average_event_frequency": total / age,
                "largest_event_size": max(
                    [local.largest_event_size, *(r["largest"] for r in remote)]
                ),
            }
        )
