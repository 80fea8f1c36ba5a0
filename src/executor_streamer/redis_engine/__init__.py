"""The Redis engine: history, registry, tickets, rate limits and cross-hub fan-out on one
Redis server or a Redis Cluster, shared by any number of hubs (docs/multi-node.md).

Needs the ``redis`` extra; ``backends.storage_for`` imports it only when chosen.
"""
