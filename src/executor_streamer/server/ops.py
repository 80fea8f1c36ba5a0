"""Operational endpoints: health, readiness, Prometheus."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request, Security
from fastapi.security import HTTPAuthorizationCredentials
from starlette.responses import PlainTextResponse, Response

from .auth import BEARER, Gate, gate_of
from .errors import error_body
from .metrics import CONTENT_TYPE
from .rest import hub_of, json
from .schemas import ErrorBody

router = APIRouter()


@router.get("/healthz", summary="Liveness")
async def healthz() -> Response:
    return json({"status": "ok"})


@router.get("/readyz", summary="Readiness: the hub runs and its storage answers")
async def readyz(request: Request) -> Response:
    hub = hub_of(request)
    health = await hub.ready()
    if request.app.state.connections.closing:
        health = health.model_copy(update={"is_healthy": False, "errors": ["shutting down"]})
    return json(health, 200 if health.is_healthy else 503)


@router.get(
    "/metrics",
    summary="Prometheus text exposition",
    response_class=PlainTextResponse,
    responses={
        401: {"model": ErrorBody},
        403: {"model": ErrorBody},
        404: {"model": ErrorBody, "description": "performance.metricsEnabled is off"},
        429: {"model": ErrorBody},
    },
)
async def prometheus(
    request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)]
) -> Response:
    gate = gate_of(request)
    if gate.metrics_public:
        await gate.count_anonymous(request)
    else:
        Gate.must_be_admin(await gate.principal(request), "reading /metrics")
    if not hub_of(request).config.performance.metrics_enabled:
        return Response(
            error_body("NOT_FOUND", "metrics are off (performance.metricsEnabled)"),
            status_code=404,
            media_type="application/json",
        )
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE)
