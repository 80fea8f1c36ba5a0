"""Where the Redis engine keeps things (docs/multi-node.md).

Every key and the channel of one stream carry the stream id as their hash tag, so in a
Redis Cluster they share one slot: the publish script may touch them all, and the
channel is a sharded one on the same shard.
"""

from __future__ import annotations

from dataclasses import dataclass

PREFIX = "es:"
SESSIONS = PREFIX + "sessions"
"""Hash: workflow session id → stream id, the cluster's registry of streams."""
NODES = PREFIX + "nodes"
"""Hash: node → its latest report (clients and counters) for the cluster-wide views."""
ONCE = PREFIX + "once:"
"""Prefix of values taken once (tickets), each with its own expiry."""
CONTROL = PREFIX + "control"
"""Channel every hub hears: a stream was created, changed state or was purged."""


@dataclass(frozen=True, slots=True)
class StreamKeys:
    stream_id: str
    meta: str
    """Hash: epoch, top seq, last stamp, status, running commands, and the registry entry."""
    events: str
    """Stream: one entry per event, id ``<seq>-0``, fields ``t`` type, ``p`` payload and
    ``s`` screenshot id."""
    images: str
    """Hash: ``<id>:d`` bytes, ``:m`` mime type, ``:h`` sha256, ``:n`` events using it."""
    channel: str
    """Sharded pub/sub channel: every publish, and changes of state, in seq order."""

    def idempotency(self, key: str) -> str:
        return f"{PREFIX}{{{self.stream_id}}}:i:{key}"


def keys_for(stream_id: str) -> StreamKeys:
    tag = f"{PREFIX}{{{stream_id}}}"
    return StreamKeys(stream_id, tag + ":m", tag + ":e", tag + ":img", tag + ":c")


def stream_of_channel(channel: str) -> str | None:
    """The stream id a channel name belongs to, or None for another channel."""
    if channel.startswith(PREFIX + "{") and channel.endswith("}:c"):
        return channel[len(PREFIX) + 1 : -3]
    return None
