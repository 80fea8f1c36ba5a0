"""The hub's security settings applied to HTTP requests and WebSocket connections
(docs/security.md): who is calling, whether they may, from which origin, how often.

Credentials are checked once per request, connection or subscription, never per
delivered event. Answers never say which check failed: ``Unauthorized`` carries its
``reason`` to the log only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Annotated

import structlog
from fastapi import Request, Security
from fastapi.security import APIKeyQuery, HTTPAuthorizationCredentials, HTTPBearer
from jwt import PyJWKClient
from limits.aio.storage import Storage
from starlette.requests import HTTPConnection

from ..config import ExecutorStreamerConfig, JwtConfig
from ..core.hub import ExecutorStreamer
from ..errors import Forbidden, StreamerError, StreamNotFound, Unauthorized
from ..security import ApiKey, ApiKeys, Authenticator, JwtVerifier, Principal, RateLimits, Tickets
from ..security.rate_limits import ConnectionCaps
from ..security.scope import Scope
from ..security.tickets import OnceStore
from ..types.ids import STREAM_ID_PREFIX

_log = structlog.get_logger("executor_streamer.auth")


class Gate:
    def __init__(
        self,
        config: ExecutorStreamerConfig,
        *,
        tickets: OnceStore | None = None,
        rate_limit_storage: Callable[[], Storage] | None = None,
        connection_caps: ConnectionCaps | None = None,
    ) -> None:
        """With hubs sharing a Redis, tickets, rate-limit counters (made only when rate
        limiting is on) and connection caps live there, so they hold across hubs
        (docs/multi-node.md); without, in this process."""
        security = config.security
        self.required = security.authentication_required
        self.authenticator = Authenticator(
            jwt=None if security.jwt is None else _jwt_verifier(security.jwt),
            api_keys=ApiKeys(
                [
                    ApiKey(k.name, k.key_sha_256, Scope.from_claim(k.scope))
                    for k in security.api_keys
                ]
            )
            if security.api_keys
            else None,
        )
        self.tickets = Tickets(
            tickets, leeway_seconds=0 if security.jwt is None else security.jwt.leeway_seconds
        )
        limits = security.rate_limiting
        self.rate: RateLimits | None = (
            RateLimits(
                requests_per_minute=limits.max_requests_per_minute,
                events_per_second=limits.max_events_per_second,
                connections_per_subject=limits.max_connections_per_subject,
                storage=None if rate_limit_storage is None else rate_limit_storage(),
                caps=connection_caps,
            )
            if limits.enabled
            else None
        )
        self._origins = frozenset(security.cors_origins)
        self._public_origin = config.server.public_url
        # Forwarded headers with no proxy trusted: said once, not on every request.
        self._untrusted_forwards_told = bool(config.server.trusted_proxies)
        self.metrics_public = security.metrics_public or not self.required
        if "*" in self._origins:
            _log.warning("cors_any_origin", detail="security.corsOrigins allows any origin")

    # -- who -----------------------------------------------------------------------------

    async def principal(
        self, conn: HTTPConnection, *, ticket: bool = False, count: bool = True
    ) -> Principal:
        """Who makes this request: from ``Authorization: Bearer``, or (``ticket``) a
        ``?ticket=``. ``count`` it against the caller's requests per minute."""
        if not self.required:
            principal = Authenticator.anonymous(peer_of(conn))
        else:
            principal = await self._authenticate(conn, ticket)
        if not self._untrusted_forwards_told:
            self._tell_of_untrusted_forwards(conn)
        if count and self.rate is not None:
            await self.rate.request(self.subject_key(principal))
        return principal

    def _tell_of_untrusted_forwards(self, conn: HTTPConnection) -> None:
        """A request with ``X-Forwarded-For`` while no proxy is trusted: the hub is most
        likely behind one, counting every client as the proxy's address (one rate limit
        for all, and one lock-out after failed credentials). Logged once."""
        forwarded = conn.headers.get("x-forwarded-for")
        if forwarded is not None:
            self._untrusted_forwards_told = True
            _log.warning(
                "forwarded_headers_ignored",
                peer=peer_of(conn),
                detail="X-Forwarded-For from a peer not in server.trustedProxies: every "
                "client behind it counts as its address for rate limits; list the proxy "
                "in server.trustedProxies",
            )

    async def count_anonymous(self, conn: HTTPConnection) -> None:
        """Count a request that needs no credential against its address."""
        if self.rate is not None:
            await self.rate.request("ip:" + peer_of(conn))

    async def credential(self, conn: HTTPConnection, credential: str) -> Principal:
        """The principal of a credential sent other than in a header (a WebSocket's
        ``auth`` message)."""
        await self._refuse_a_spent_address(conn)
        try:
            return await self.authenticator.verify(credential)
        except Unauthorized as exc:
            await self._refused(conn, exc)
            raise

    async def _authenticate(self, conn: HTTPConnection, ticket: bool) -> Principal:
        await self._refuse_a_spent_address(conn)
        try:
            header = conn.headers.get("authorization")
            if header is not None:
                scheme, _, credential = header.partition(" ")
                if scheme.lower() != "bearer":
                    raise Unauthorized(reason="the Authorization scheme is not Bearer")
                return await self.authenticator.verify(credential.strip())
            presented = conn.query_params.get("ticket") if ticket else None
            if presented:
                return await self.tickets.redeem(presented)
            raise Unauthorized(reason="no credential")
        except Unauthorized as exc:
            await self._refused(conn, exc)
            raise

    async def _refuse_a_spent_address(self, conn: HTTPConnection) -> None:
        """``RateLimited`` before any credential is checked, once failed credentials
        spent the address's requests: a guesser cannot tell a hit from a miss."""
        if self.rate is not None:
            await self.rate.refuse_if_spent("ip:" + peer_of(conn))

    async def _refused(self, conn: HTTPConnection, exc: Unauthorized) -> None:
        _log.info("unauthorized", reason=exc.reason, peer=peer_of(conn))
        # Guessing credentials costs the guesser's address its requests.
        await self.count_anonymous(conn)

    def subject_key(self, principal: Principal) -> str:
        """Whose requests and connections a principal's count toward."""
        return ("sub:" if self.required else "ip:") + principal.subject

    def owner_key(self, principal: Principal) -> str | None:
        """Whom a polling client ``principal`` registers belongs to: only its owner may
        poll with its ``clientId``. With authentication on, the subject; without, every
        caller is one anonymous owner (None), as a ``clientId`` was always enough."""
        return self.subject_key(principal) if self.required else None

    # -- may they ------------------------------------------------------------------------

    @staticmethod
    def may_subscribe(principal: Principal, hub: ExecutorStreamer, ref: str) -> None:
        if not principal.scope.may_subscribe(workflow_of(hub, ref)):
            raise Forbidden(f"this credential's scope does not let it watch {ref!r}")

    @staticmethod
    def may_publish(
        principal: Principal, hub: ExecutorStreamer, ref: str, action: str = "publish into"
    ) -> str:
        """The workflow session ``ref`` names, if ``principal`` may publish into it: the
        same scope lets a producer close its stream (``action`` says which was asked)."""
        workflow = workflow_of(hub, ref)
        if not principal.scope.may_publish(workflow):
            raise Forbidden(f"this credential's scope does not let it {action} {ref!r}")
        return workflow

    @staticmethod
    def may_create(principal: Principal, workflow_session_id: str) -> None:
        """Create or reopen the stream of ``workflow_session_id``: a producer's own, so its
        ``publish`` scope (the id is taken as given, never resolved as a ``str_`` id)."""
        if not principal.scope.may_publish(workflow_session_id):
            what = f"create or reopen {workflow_session_id!r}"
            raise Forbidden(f"this credential's scope does not let it {what}")

    @staticmethod
    def may_read(principal: Principal, hub: ExecutorStreamer, ref: str) -> None:
        """Read a stream's description: subscribers and publishers may."""
        if not principal.scope.may_see(workflow_of(hub, ref)):
            raise Forbidden(f"this credential's scope does not cover {ref!r}")

    @staticmethod
    def must_be_admin(principal: Principal, action: str) -> None:
        """``action`` names what was refused, in the answer: a client learns what it
        lacks, not whether any other check would have passed."""
        if not principal.scope.admin:
            raise Forbidden(f"{action} needs an admin credential (scope admin: true)")

    def check_origin(self, conn: HTTPConnection) -> None:
        """A WebSocket upgrade or SSE request from a page of another origin than the
        hub's own or ``corsOrigins`` is refused. No ``Origin`` (a program, not a
        browser) passes; ``null`` never does."""
        origin = conn.headers.get("origin")
        if origin is None:
            return
        origin = origin.lower()
        if origin == "null":
            raise Forbidden("this origin may not connect")
        if origin in self._origins or "*" in self._origins:
            return
        if origin == self._public_origin or origin in loopback_origins(conn):
            return
        raise Forbidden("this origin may not connect")


def workflow_of(hub: ExecutorStreamer, ref: str) -> str:
    """The workflow session a stream reference names (scopes are in those terms)."""
    if ref.startswith(STREAM_ID_PREFIX):
        stream = hub.streams.find(ref)
        if stream is None:
            raise StreamNotFound(ref)
        return stream.workflow_session_id
    return ref


def peer_of(conn: HTTPConnection) -> str:
    """The client's address: the peer's, or what a trusted proxy forwarded
    (``server.trustedProxies``, applied by uvicorn before the app sees the request)."""
    client = conn.client
    return client.host if client is not None else "unknown"


_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def loopback_origins(conn: HTTPConnection) -> set[str]:
    """The origins of this hub's own pages when reached on loopback: the loopback names
    on the port the connection came in on (the socket's, not the ``Host`` header's)."""
    scheme = {"ws": "http", "wss": "https"}.get(conn.url.scheme, conn.url.scheme)
    server = conn.scope.get("server")
    if not server or server[1] is None:
        return set()
    port = int(server[1])
    origins = {f"{scheme}://{name}:{port}" for name in _LOOPBACK_NAMES}
    if _DEFAULT_PORTS.get(scheme) == port:
        origins |= {f"{scheme}://{name}" for name in _LOOPBACK_NAMES}
    return origins


def _jwt_verifier(config: JwtConfig) -> JwtVerifier:
    key: str | PyJWKClient
    if config.secret is not None:
        key = config.secret.get_secret_value()
    elif config.public_key is not None:
        key = config.public_key
    else:
        assert config.jwks_url is not None
        key = PyJWKClient(config.jwks_url, cache_keys=True, lifespan=300, timeout=5)
    return JwtVerifier(
        config.algorithm,
        key,
        audience=config.audience,
        issuer=config.issuer,
        leeway_seconds=config.leeway_seconds,
    )


def gate_of(conn: HTTPConnection) -> Gate:
    gate: Gate = conn.app.state.gate
    return gate


# -- FastAPI dependencies: they check, and they declare the schemes in OpenAPI ------------

BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="A JWT (security.jwt) or an API key (security.apiKeys).",
)
TICKET = APIKeyQuery(
    name="ticket",
    auto_error=False,
    scheme_name="ticket",
    description="A single-use ticket from POST /api/auth/tickets, for a browser's "
    "EventSource or WebSocket, which cannot send headers.",
)


async def discover(conn: HTTPConnection, ref: str | None) -> None:
    """With hubs sharing a backend, a stream another hub made a moment ago may not be
    known here yet: look it up before the scope check and the handler ask for it. Only
    for a caller already authenticated, so that a request without a valid credential
    never reaches the shared store (nor tells by its timing whether a stream exists)."""
    streams = conn.app.state.hub.streams
    if ref is not None and streams.shared is not None:
        with contextlib.suppress(StreamerError):  # the handler reports it as usual
            await streams.discover(ref)


async def caller(
    request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)]
) -> Principal:
    principal = await gate_of(request).principal(request)
    await discover(request, request.path_params.get("ref"))
    return principal


async def ticket_caller(
    request: Request,
    _: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)],
    __: Annotated[str | None, Security(TICKET)],
) -> Principal:
    principal = await gate_of(request).principal(request, ticket=True)
    await discover(request, request.path_params.get("ref"))
    return principal


async def admin(
    request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)]
) -> Principal:
    principal = await gate_of(request).principal(request)
    Gate.must_be_admin(principal, f"{request.method} {request.url.path}")
    await discover(request, request.path_params.get("ref"))
    return principal


Caller = Annotated[Principal, Security(caller)]
TicketCaller = Annotated[Principal, Security(ticket_caller)]
Admin = Annotated[Principal, Security(admin)]
