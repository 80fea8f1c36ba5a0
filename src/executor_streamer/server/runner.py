"""Running the app under uvicorn (uvloop, httptools, websockets) with a clean shutdown."""

from __future__ import annotations

import gc
import socket

import uvicorn
from fastapi import FastAPI

from ..core.hub import ExecutorStreamer
from ..logs import redact_library_logs
from .app import SHUTDOWN_GRACE_SECONDS, create_app
from .connections import LiveConnections, ping_settings
from .internals import DrainingServer, bounded_http_protocol
from .internals import verify as verify_internals
from .ws_protocol import HubWebSocketProtocol


class HubServer(DrainingServer):
    """uvicorn serving one hub: closes its live clients before shutting down."""

    def __init__(
        self, config: uvicorn.Config, hub: ExecutorStreamer, connections: LiveConnections
    ) -> None:
        super().__init__(config, lambda: connections.drain(hub, SHUTDOWN_GRACE_SECONDS))

    def run(self, sockets: list[socket.socket] | None = None) -> None:
        tune_garbage_collector()
        super().run(sockets)

    @property
    def port(self) -> int:
        """The bound port (useful when asked for port 0)."""
        return int(self.servers[0].sockets[0].getsockname()[1])


def build_server(
    hub: ExecutorStreamer, host: str | None = None, port: int | None = None
) -> HubServer:
    verify_internals()  # loud now, rather than a slow fall back later
    redact_library_logs()
    config = hub.config
    if host is not None:
        config.with_overrides({"server": {"host": host}})  # refuses an open non-loopback bind
    app: FastAPI = create_app(hub, host)  # the Host check follows where it listens
    ping_interval, ping_timeout = ping_settings(hub)
    uvicorn_config = uvicorn.Config(
        app,
        host=host or config.server.host,
        port=config.server.port if port is None else port,
        loop="auto",
        http=bounded_http_protocol(),  # httptools, bounded (docs/security.md)
        ws=HubWebSocketProtocol,  # instead of uvicorn's websockets-sansio: leaner per connection
        lifespan="on",
        # Protocol pings; a peer that does not answer is closed within the idle
        # timeout (docs/architecture.md).
        ws_ping_interval=ping_interval,
        ws_ping_timeout=ping_timeout,
        ws_per_message_deflate=config.compression.enabled and config.compression.websocket,
        ws_max_size=config.limits.max_message_bytes,
        timeout_graceful_shutdown=int(SHUTDOWN_GRACE_SECONDS) + 5,
        access_log=False,
        log_config=None,
        # X-Forwarded-For is believed from the configured proxies only; from anyone else
        # it would let a client pick its own address (and rate-limit key).
        proxy_headers=bool(config.server.trusted_proxies),
        forwarded_allow_ips=[str(network) for network in config.server.trusted_proxies],
    )
    return HubServer(uvicorn_config, hub, app.state.connections)


def tune_garbage_collector() -> None:
    """Collect less often, for a process that serves the hub.

    A publish allocates many container objects (validated models, dicts, the records)
    that live until its commit and flush, so with CPython's default thresholds (700, 10,
    10) they survive young collections and are walked again in older ones. With (10000,
    10, 10) in-process batched publishing into memory runs ~16 % faster (bench/ingest.py's
    loop, side by side: 107k → 124k events/s; retained history is not tracked at all, see
    ``history.ring.StoredEvent``). Safe only because connections break their own reference
    cycles when they end (see ``WebSocketSession._release``): before that, dead sessions
    waiting for a full collection held ~420 MiB under the soak benchmark; now it stays at
    ~95 MiB.

    Process-wide, so it is done where the server runs, never on import.
    """
    gc.set_threshold(10_000, 10, 10)
