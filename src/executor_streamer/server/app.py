"""``create_app(hub)``: the ASGI application over a hub."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from starlette_compress import CompressMiddleware

from ..core.hub import ExecutorStreamer
from ..errors import Forbidden, StreamerError
from ..types.events import EventInput
from ..viewer import router as viewer_router
from .auth import Gate
from .bodies import capped_body
from .connections import LiveConnections, liveness_interval
from .errors import deny_upgrade, error_response, install_error_handlers
from .hosts import names_this_hub, own_host_names
from .internals import never_compress, write_whole_response
from .metrics import ServerMetrics
from .ops import router as ops_router
from .rest import publish_response
from .rest import router as rest_router
from .schemas import PublishBatch
from .search_routes import router as search_router
from .streaming import open_event_stream
from .streaming import router as streaming_router
from .websocket import WebSocketSession

SHUTDOWN_GRACE_SECONDS = 5.0


_EVENTS_PATH = re.compile(r"/api/streams/([^/]+)/events")


class HubApp(FastAPI):
    """FastAPI, but the hot routes skip the middleware stack and the router.

    ``GET /ws`` goes straight to the WebSocket protocol: routed through the stack, every
    frame sent passed through Starlette's exception-handling wrappers (a sixth of the
    server's time at 100 clients and thousands of events a second); CORS and compression
    do not apply to WebSockets. ``POST`` and ``GET /api/streams/{id}/events`` (publish,
    SSE) go straight to their handlers, with the CORS headers and error bodies the stack
    would have added: its ten layers and the dependency solving cost more than a
    publish, and an SSE response behind them could not be written to directly
    (``writers.ChunkWriter``). The FastAPI routes stay for the API documentation.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        names = self.state.own_host_names
        if names is not None and kind != "lifespan" and not names_this_hub(scope, names):
            await self._not_this_hub(scope, receive, send)
            return
        if kind == "websocket" and scope["path"] == "/ws":
            scope["app"] = self
            state = self.state
            websocket = WebSocket(scope, receive, send)
            await WebSocketSession(
                websocket, state.hub, state.metrics, state.connections, state.gate
            ).run()
            return
        if kind == "http" and scope["method"] in ("POST", "GET"):
            target = _EVENTS_PATH.fullmatch(scope["path"])
            if target is not None:
                scope["app"] = self
                await self._events(scope, receive, send, target.group(1))
                return
        if kind == "http":
            limit = self.state.max_body_bytes
            capped = await capped_body(scope, receive, send, limit, self._cors_headers)
            if capped is None:
                return
            receive = capped
        await super().__call__(scope, receive, send)

    async def _events(self, scope: Scope, receive: Receive, send: Send, ref: str) -> None:
        request = Request(scope, receive)
        cors = self._cors_headers(request.headers.get("origin"))
        response: Response
        try:
            if scope["method"] == "POST":
                response = await publish_response(request, ref)
                response.headers.update(cors)
            else:
                params = request.query_params
                response = await open_event_stream(
                    request,
                    ref,
                    params.get("types"),
                    params.get("since"),
                    request.headers.get("last-event-id"),
                    params.get("epoch"),
                    params.get("filter"),
                    [(name.encode(), value.encode()) for name, value in cors.items()],
                )
        except StreamerError as exc:
            response = error_response(exc, cors)
        if not write_whole_response(send, response):
            await response(scope, receive, send)

    async def _not_this_hub(self, scope: Scope, receive: Receive, send: Send) -> None:
        refusal = Forbidden(
            "this hub does not answer to that name (DNS rebinding): reach it at localhost, "
            "an address, or the host of server.publicUrl"
        )
        if scope["type"] == "websocket":
            await deny_upgrade(WebSocket(scope, receive, send), refusal)
        else:
            await error_response(refusal)(scope, receive, send)

    def _cors_headers(self, origin: str | None) -> dict[str, str]:
        """What CORSMiddleware adds to a simple request's response from ``origin``."""
        if origin is None:
            return {}
        allowed: list[str] = self.state.hub.config.security.cors_origins
        if "*" in allowed:
            return {"access-control-allow-origin": "*"}
        if origin.lower() in allowed:
            return {"access-control-allow-origin": origin, "vary": "Origin"}
        return {}


def create_app(hub: ExecutorStreamer, bound_host: str | None = None) -> FastAPI:
    """The REST, SSE, long-polling and WebSocket API over ``hub``.

    The app starts the hub when it starts; at shutdown it closes every live client
    (WebSockets with 1001) and then stops the hub, which lets publishes in progress
    finish and flushes storage.
    """
    connections = LiveConnections(liveness_interval(hub))

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await hub.start()
        try:
            yield
        finally:
            await connections.drain(hub, SHUTDOWN_GRACE_SECONDS)
            await hub.stop()

    app = HubApp(
        title="Executor Streamer",
        version="0.1.0",
        summary="Real-time event hub for AI-agent and automation runs.",
        lifespan=lifespan,
    )
    app.state.hub = hub
    shared = hub.streams.shared
    app.state.gate = (
        Gate(hub.config)
        if shared is None
        else Gate(
            hub.config,
            tickets=shared.tickets,
            rate_limit_storage=shared.rate_limit_storage,
            connection_caps=shared.connection_caps,
        )
    )
    app.state.metrics = ServerMetrics(hub)
    app.state.connections = connections
    app.state.max_body_bytes = hub.config.limits.max_body_bytes
    app.state.own_host_names = own_host_names(hub.config, bound_host)
    install_error_handlers(app)
    compression = hub.config.compression
    if compression.enabled:
        # SSE is never compressed: no frame waits in a compressor, and an open stream holds
        # no compressor state (docs/architecture.md). A process-wide setting of
        # starlette-compress's, so made when an app asks for compression, not at import.
        never_compress("text/event-stream")
        app.add_middleware(
            CompressMiddleware,
            minimum_size=compression.threshold,
            brotli=compression.algorithm == "brotli",
            gzip=True,  # with brotli chosen, gzip still serves clients without br
            zstd=False,
        )
    app.add_middleware(
        CORSMiddleware,
        allow_origins=hub.config.security.cors_origins,
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=["ETag", "Link", "X-Next-Cursor"],
    )
    app.include_router(rest_router)
    app.include_router(search_router)
    app.include_router(streaming_router)
    app.include_router(ops_router)
    app.include_router(viewer_router)
    _document_publish_body(app, hub.config.security.authentication_required)
    return app


def _document_publish_body(app: FastAPI, authentication: bool) -> None:
    """The publish body is parsed by hand (for batch error reporting); give OpenAPI its
    two shapes anyway. The schema describes this hub's security: without authentication
    no operation needs a credential, and with ``metricsPublic`` ``/metrics`` does not."""
    build = app.openapi
    gate: Gate = app.state.gate

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = build()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in (EventInput, PublishBatch):
            extra = model.model_json_schema(
                by_alias=True, ref_template="#/components/schemas/{model}"
            )
            components.update(extra.pop("$defs", {}))
            components[model.__name__] = extra
        if not authentication:
            schema["components"].pop("securitySchemes", None)
        for path, operations in schema["paths"].items():
            if authentication and (path != "/metrics" or not gate.metrics_public):
                continue
            for operation in operations.values():
                operation.pop("security", None)
                for status in ("401", "403"):
                    operation.get("responses", {}).pop(status, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
