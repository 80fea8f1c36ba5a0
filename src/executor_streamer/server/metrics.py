"""Prometheus metrics.

Counters the hot path touches are plain ints (the hub's and ``delivered`` here); a
collector turns them into metric families when ``/metrics`` is scraped, so publishing
and fan-out never pay for prometheus-client's locks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from operator import attrgetter

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..core.hub import ExecutorStreamer
from ..history.records import EventRecord
from ..types.enums import StreamEventType

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_type_of = attrgetter("type")


class ServerMetrics:
    def __init__(self, hub: ExecutorStreamer) -> None:
        self.hub = hub
        own = CollectorRegistry(auto_describe=True)
        self.delivered: Counter[StreamEventType] = Counter(dict.fromkeys(StreamEventType, 0))
        self.publish_latency = Histogram(
            "executor_streamer_publish_latency_seconds",
            "Time from receiving a publish request to acknowledging it (stored and fanned out).",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=own,
        )
        own.register(_HubCollector(self))
        shared = hub.streams.shared
        if shared is None:
            self.registry = own
        else:  # one of several hubs: every sample says which (docs/multi-node.md)
            self.registry = CollectorRegistry(auto_describe=True)
            self.registry.register(_NodeLabelled(own, shared.node))

    def record_delivered(self, records: Sequence[EventRecord]) -> None:
        # Counter.update counts in C: this runs for every client on every flush.
        self.delivered.update(map(_type_of, records))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _NodeLabelled(Collector):
    """Another registry's metrics, each sample with a ``node`` label added."""

    def __init__(self, inner: CollectorRegistry, node: str) -> None:
        self._inner = inner
        self._node = node

    def collect(self) -> Iterator[Metric]:
        for metric in self._inner.collect():
            metric.samples = [
                sample._replace(labels={**sample.labels, "node": self._node})
                for sample in metric.samples
            ]
            yield metric


class _HubCollector(Collector):
    def __init__(self, metrics: ServerMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        hub = self._metrics.hub
        streams = GaugeMetricFamily(
            "executor_streamer_streams", "Streams held, by state.", labels=["state"]
        )
        active = len(hub.list_active_streams())
        streams.add_metric(["open"], active)
        streams.add_metric(["closed"], len(hub.streams) - active)
        yield streams
        clients = GaugeMetricFamily(
            "executor_streamer_clients", "Connected clients, by transport.", labels=["type"]
        )
        for client_type, count in hub.clients.counts_by_type().items():
            clients.add_metric([client_type.value], count)
        yield clients
        published = CounterMetricFamily(
            "executor_streamer_events_published", "Events stored, by type.", labels=["type"]
        )
        for event_type, count in hub.counters.published_by_type.items():
            published.add_metric([event_type.value], count)
        yield published
        delivered = CounterMetricFamily(
            "executor_streamer_events_delivered",
            "Events written to clients, by type (one per client).",
            labels=["type"],
        )
        for event_type, count in self._metrics.delivered.items():
            delivered.add_metric([event_type.value], count)
        yield delivered
        yield CounterMetricFamily(
            "executor_streamer_publishes_rejected",
            "Publish requests refused (invalid, too large, closed stream...).",
            value=hub.counters.publish_failures,
        )
        budget = hub.memory
        memory = GaugeMetricFamily(
            "executor_streamer_memory_bytes",
            "The memory budget (limits.maxMemoryBytes) and what is counted against it.",
            labels=["part"],
        )
        memory.add_metric(["limit"], budget.limit)
        memory.add_metric(["history"], budget.history_bytes)
        memory.add_metric(["queues"], budget.queued_bytes)
        memory.add_metric(["idempotency"], budget.recent.held_bytes)
        yield memory
        yield CounterMetricFamily(
            "executor_streamer_memory_evicted_streams",
            "Closed streams whose history was evicted to keep within the memory budget.",
            value=budget.evicted_streams,
        )
        yield CounterMetricFamily(
            "executor_streamer_memory_forgotten_streams",
            "Closed streams forgotten, their history evicted before, to keep within the "
            "memory budget (memory backend).",
            value=budget.forgotten_streams,
        )
        yield CounterMetricFamily(
            "executor_streamer_memory_refused_publishes",
            "Publishes refused with MEMORY_PRESSURE: the budget spent, nothing to evict.",
            value=budget.refused_publishes,
        )
        yield CounterMetricFamily(
            "executor_streamer_slow_consumers_dropped",
            "Subscribers dropped for falling bufferSize events behind.",
            value=hub.counters.slow_consumers,
        )
