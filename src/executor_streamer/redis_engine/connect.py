"""Which Redis the connection string names, and the clients that talk to it
(docs/multi-node.md, "Redis Cluster").

``redis://`` and ``rediss://`` name one server; ``redis+cluster://`` and
``rediss+cluster://`` name a Redis Cluster by one or more of its nodes
(``redis+cluster://user:pass@host:port,host:port``), the convention of ``limits``. The
kind is read from the string rather than asked of the server: the rate limiter's storage
is built before the hub starts.

On a Cluster the engine's commands go through ``RedisCluster``, which follows each key
to its slot's node. Pub/sub does not: each node gets its own plain connection
(:meth:`RedisTarget.node_client`), so the follower decides itself when one is lost and
what to catch up (``follower.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster

from ..errors import ConfigError

Client: TypeAlias = Redis | RedisCluster
"""A client of one server, or of a Cluster: the engine uses only what both offer."""

_SCHEMES = {"redis": False, "rediss": False, "redis+cluster": True, "rediss+cluster": True}


@dataclass(frozen=True, slots=True)
class RedisTarget:
    url: str
    cluster: bool
    nodes: tuple[tuple[str, int], ...]
    """For a Cluster, the nodes named in the string (where discovery starts)."""
    userinfo: str
    tls: bool
    query: str

    @classmethod
    def parse(cls, url: str) -> RedisTarget:
        scheme, sep, _ = url.partition("://")
        if not sep or scheme not in _SCHEMES:
            raise ConfigError(
                "persistence.connectionString: the 'redis' backend takes redis://, "
                f"rediss://, redis+cluster:// or rediss+cluster://, not {url.split('://')[0]!r}"
            )
        if not _SCHEMES[scheme]:
            return cls(url, False, (), "", scheme == "rediss", "")
        parts = urlsplit("redis://" + url[len(scheme) + 3 :])
        userinfo, _, hosts = parts.netloc.rpartition("@")
        nodes = []
        for host in hosts.split(","):
            name, _, port = host.rpartition(":")
            if not name or not port.isdigit():
                raise ConfigError(
                    f"persistence.connectionString: {host!r} is not host:port "
                    "(redis+cluster://host:port,host:port)"
                )
            nodes.append((name, int(port)))
        if parts.path not in ("", "/", "/0"):
            raise ConfigError("persistence.connectionString: a Redis Cluster has only db 0")
        return cls(url, True, tuple(nodes), userinfo, scheme == "rediss+cluster", parts.query)

    def client(self, **options: Any) -> Client:
        if not self.cluster:
            return Redis.from_url(self.url, **options)
        host, port = self.nodes[0]
        others = [ClusterNode(h, p) for h, p in self.nodes[1:]]
        return RedisCluster.from_url(self.node_url(host, port), startup_nodes=others, **options)

    def node_client(self, host: str, port: int, **options: Any) -> Redis:
        """A plain client of one node of a Cluster, with the string's credentials."""
        return Redis.from_url(self.node_url(host, port), **options)

    def node_url(self, host: str, port: int) -> str:
        scheme = "rediss" if self.tls else "redis"
        auth = f"{self.userinfo}@" if self.userinfo else ""
        query = f"?{self.query}" if self.query else ""
        return f"{scheme}://{auth}{host}:{port}/0{query}"

    def limits_uri(self) -> str:
        """The same server or Cluster, as ``limits`` names its asyncio storages."""
        if not self.cluster:
            return "async+" + self.url
        auth = f"{self.userinfo}@" if self.userinfo else ""
        return "async+redis+cluster://" + auth + ",".join(f"{h}:{p}" for h, p in self.nodes)
