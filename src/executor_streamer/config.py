"""Hub configuration (docs/configuration.md): ExecutorStreamerConfig and the defaults of
the original specification.

``ExecutorStreamerConfig()`` is the original specification's defaults and nothing else.
``ExecutorStreamerConfig.load(...)`` layers, later winning:
defaults → a TOML or JSON file → ``EXECUTOR_STREAMER_…`` environment variables
(nested with ``__``) → explicit overrides (the CLI's flags).
camelCase and snake_case keys both load; an unknown key or invalid value raises
:class:`~executor_streamer.errors.ConfigError` naming the key.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self

import orjson
from pydantic import (
    Field,
    IPvAnyNetwork,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict, SettingsError

from .errors import ConfigError, InvalidInput
from .security.scope import Scope
from .types.base import ConfigModel, WireModel, deep_merge, normalize_keys
from .types.streams import MODULE_ID, StreamConfig

ENV_PREFIX = "EXECUTOR_STREAMER_"
ENV_NESTED_DELIMITER = "__"

Port = Annotated[int, Field(ge=0, le=65_535)]
Positive = Annotated[int, Field(ge=1)]
StorageBackend = Literal["memory", "file", "database", "redis"]


LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1", "ip6-localhost")


class ServerConfig(WireModel):
    port: Port = 3001
    host: str = "localhost"
    """Loopback unless ``security.allowInsecure`` or authentication is on
    (docs/configuration.md, "Safe defaults")."""
    max_connections: Positive = 1000
    """Global limit of connected clients."""
    auto_create_streams: bool = True
    """Publishing to an unknown workflow session creates its stream."""
    idle_client_timeout: Annotated[int, Field(ge=1000)] = 30_000
    """Milliseconds without a sign of life after which a client is removed."""
    trusted_proxies: list[IPvAnyNetwork] = Field(default_factory=list)
    """Addresses or networks of proxies whose ``X-Forwarded-For`` names the client (for
    per-IP rate limits); any other peer's forwarded headers are ignored."""
    public_url: str | None = None
    """The origin browsers reach the hub at (``scheme://host[:port]``, e.g. behind a
    proxy); with the loopback names on the port the hub listens on, the hub's own origin.
    Never taken from a request's ``Host`` (DNS rebinding)."""

    @field_validator("public_url")
    @classmethod
    def _an_origin(cls, url: str | None) -> str | None:
        if url is not None and not (
            _ORIGIN.fullmatch(url.rstrip("/")) and url.lower().startswith(("http://", "https://"))
        ):
            raise ValueError(f"{url!r} is not an origin: scheme://host[:port]")
        return None if url is None else url.rstrip("/").lower()


class RateLimitingConfig(WireModel):
    enabled: bool = True
    max_requests_per_minute: Positive = 1000
    """Per credential subject (per client IP without authentication), over every HTTP
    request and WebSocket message except publishes."""
    max_events_per_second: Positive = 1000
    """Per stream, over published events; bursts up to the stream's ``bufferSize``.
    The original specification said 100, below its own 1000 events/s requirement."""
    max_connections_per_subject: Positive = 100
    """Concurrent WebSocket and SSE connections of one subject (client IP without
    authentication)."""


JwtAlgorithm = Literal["HS256", "RS256", "ES256"]
MIN_SECRET_BYTES = 32
"""RFC 7518 §3.2: an HS256 key at least as long as the hash."""


class JwtConfig(WireModel):
    algorithm: JwtAlgorithm = "HS256"
    """The only algorithm accepted; a token's own ``alg`` header is never trusted."""
    secret: SecretStr | None = None
    """The HS256 key (at least 32 bytes)."""
    public_key: str | None = None
    """The PEM public key for RS256 or ES256."""
    jwks_url: str | None = None
    """Where RS256/ES256 keys are published (a JWKS document, fetched and cached)."""
    audience: str | None = None
    issuer: str | None = None
    leeway_seconds: Annotated[int, Field(ge=0, le=300)] = 30

    @model_validator(mode="after")
    def _one_key_that_fits(self) -> Self:
        sources = [self.secret is not None, self.public_key is not None, self.jwks_url is not None]
        if sum(sources) != 1:
            raise ValueError("give exactly one of secret (HS256), publicKey or jwksUrl")
        if self.algorithm == "HS256":
            if self.secret is None:
                raise ValueError("HS256 needs secret (publicKey and jwksUrl are for RS256/ES256)")
            if len(self.secret.get_secret_value().encode()) < MIN_SECRET_BYTES:
                raise ValueError(f"secret must be at least {MIN_SECRET_BYTES} bytes")
        elif self.secret is not None:
            raise ValueError(f"{self.algorithm} needs publicKey or jwksUrl, not a secret")
        if self.jwks_url is not None and not self.jwks_url.startswith(("https://", "http://")):
            raise ValueError("jwksUrl must be an http(s) URL")
        return self


class ApiKeyConfig(WireModel):
    name: Annotated[str, Field(min_length=1, max_length=128)]
    """The subject the key acts as (in logs, rate limits and connection caps)."""
    key_sha_256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    """The hex SHA-256 of the key; the key itself is never in config."""
    scope: dict[str, Any]
    """``{"subscribe": [pattern...], "publish": [pattern...], "admin": bool}``."""

    @field_validator("scope")
    @classmethod
    def _valid_scope(cls, scope: dict[str, Any]) -> dict[str, Any]:
        try:
            Scope.from_claim(scope)
        except InvalidInput as exc:
            raise ValueError(exc.message) from None
        return scope


class SecurityConfig(WireModel):
    cors_origins: list[str] = Field(default_factory=lambda: ["http://localhost:3000"])
    """Origins (``scheme://host[:port]``) whose pages may call the API, open WebSockets
    and SSE streams; the hub's own origin always may. ``*`` only with authentication."""
    authentication_required: bool = False
    allow_insecure: bool = False
    """Without authentication, allow binding ``server.host`` to a non-loopback address."""
    metrics_public: bool = False
    """With authentication, serve ``/metrics`` without an admin credential."""
    jwt: JwtConfig | None = None
    api_keys: list[ApiKeyConfig] = Field(default_factory=list)
    rate_limiting: RateLimitingConfig = Field(default_factory=RateLimitingConfig)

    @field_validator("cors_origins")
    @classmethod
    def _exact_origins(cls, origins: list[str]) -> list[str]:
        for origin in origins:
            if origin != "*" and not _ORIGIN.fullmatch(origin):
                raise ValueError(f"{origin!r} is not an origin (scheme://host[:port]) or '*'")
        return [origin.lower() for origin in origins]

    @model_validator(mode="after")
    def _credentials_have_a_use(self) -> Self:
        has_credentials = self.jwt is not None or bool(self.api_keys)
        if self.authentication_required and not has_credentials:
            raise ValueError(
                "authenticationRequired needs security.jwt (secret, publicKey or jwksUrl) "
                "or security.apiKeys"
            )
        if has_credentials and not self.authentication_required:
            raise ValueError(
                "security.jwt and security.apiKeys are only checked with "
                "authenticationRequired: true; set it, or remove them"
            )
        if "*" in self.cors_origins and not self.authentication_required:
            raise ValueError("corsOrigins '*' is allowed only with authenticationRequired")
        names = [key.name for key in self.api_keys]
        if len(names) != len(set(names)):
            raise ValueError("apiKeys names must be unique")
        return self


_ORIGIN = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/?#\s]+")


class PersistenceConfig(ConfigModel):
    unsupported: ClassVar[dict[str, str]] = {
        "enabled": "history is always kept; storageBackend 'memory' keeps it in the process only",
    }

    storage_backend: StorageBackend = "memory"
    connection_string: str | None = None

    @model_validator(mode="after")
    def _connection_string_has_a_use(self) -> Self:
        if self.storage_backend == "memory" and self.connection_string is not None:
            raise ValueError("connectionString has no effect with storageBackend 'memory'")
        return self


class CompressionConfig(WireModel):
    enabled: bool = True
    threshold: Annotated[int, Field(ge=0)] = 1024
    """Minimum body size in bytes worth compressing."""
    algorithm: Literal["gzip", "brotli"] = "gzip"
    websocket: bool = False
    """Offer permessage-deflate to WebSocket clients (when ``enabled``). Off by default:
    every connection that takes it keeps zlib state (idle connections measured 72 KiB
    each instead of 30, bench/connections.py), and each frame is compressed once per
    client instead of being written as serialized at publish time (docs/architecture.md)."""


class LoggingConfig(WireModel):
    level: Literal["DEBUG", "INFO", "WARN", "ERROR"] = "INFO"
    prefix: str = "[ExecutorStreamer]"
    include_timestamp: bool = True
    include_session_id: bool = True
    include_module_id: bool = True
    structured: bool = False
    """JSON lines instead of human-readable console lines."""


class PerformanceConfig(ConfigModel):
    unsupported: ClassVar[dict[str, str]] = {
        "maxConcurrentOperations": "publishes are grouped by the committer, not throttled",
        "cacheEnabled": "the hub has no cache to turn on or off",
        "cacheTTLMs": "the hub has no cache",
    }

    metrics_enabled: bool = True
    """Serve Prometheus metrics at ``/metrics``; off, that route answers 404."""


class LimitsConfig(WireModel):
    max_event_bytes: Positive = 1 << 20
    """Serialized size of one event, screenshots' image bytes excluded."""
    max_batch_size: Annotated[int, Field(ge=1, le=100_000)] = 1000
    max_message_bytes: Positive = 1 << 20
    max_filters: Annotated[int, Field(ge=1, le=1000)] = 20
    max_expression_length: Annotated[int, Field(ge=16, le=1 << 20)] = 2048
    """Characters of one filter expression (docs/expressions.md); a longer one is
    ``INVALID_FILTER``."""
    max_screenshot_bytes: Positive = 10 << 20
    max_metadata_bytes: Positive = 16 << 10
    max_history_size: Annotated[int, Field(ge=1, le=10_000_000)] = 100_000
    """The most events a stream may keep (its ``maxHistorySize``)."""
    max_buffer_size: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000
    """The largest ``bufferSize`` a stream may give its subscribers."""
    max_queued_bytes: Annotated[int, Field(ge=64 << 10)] = 16 << 20
    """Bytes that may wait for one client: events and replays queued for each of its
    subscriptions, and on a WebSocket also the replies not yet written and what its
    socket has not taken. A client past it is dropped as a slow consumer (4008)."""
    max_body_bytes: Annotated[int, Field(ge=1 << 10)] = 16 << 20
    """Bytes of one HTTP request body, whatever the route (413 past it, unread). It must
    hold a batch (``maxMessageBytes``) and a base64 screenshot (4/3 of
    ``maxScreenshotBytes``); a larger one of those is refused at start."""
    max_streams: Annotated[int, Field(ge=1)] = 10_000
    """ACTIVE streams this hub holds; creating, auto-creating or reopening one more is a
    503 ``TOO_MANY_STREAMS`` (closing or purging one frees a place)."""
    max_memory_bytes: Annotated[int, Field(ge=1 << 20)] = 1 << 30
    """The budget for what the hub keeps in memory: retained history and screenshots (the
    memory backend's) and events queued for clients. Past 90 % the oldest CLOSED streams'
    history is evicted; with nothing left to evict, a publish at the budget is a 503
    ``MEMORY_PRESSURE`` (docs/configuration.md)."""

    @model_validator(mode="after")
    def _a_body_holds_a_batch_and_a_screenshot(self) -> Self:
        needed = max(self.max_message_bytes, self.max_screenshot_bytes * 4 // 3 + 1024)
        if self.max_body_bytes < needed:
            raise ValueError(
                f"maxBodyBytes ({self.max_body_bytes}) must be at least {needed}: a request "
                "body carries a batch (maxMessageBytes) or a base64 screenshot "
                "(4/3 of maxScreenshotBytes)"
            )
        return self


FIELD_PATH = r"^(type|sessionId|streamId|(data|metadata)(\.[A-Za-z_][A-Za-z0-9_]*)+)$"


class WidgetConfig(WireModel):
    """One dashboard widget (docs/query.md, "Dashboards"): the events ``filter`` selects
    in the time asked for, counted (``counter``), counted per bucket (``timeseries``), or
    counted per value of ``groupBy`` (``table``: up to 50 rows; ``top``: the 10 largest)."""

    title: Annotated[str, Field(min_length=1, max_length=200)]
    kind: Literal["counter", "timeseries", "table", "top"]
    filter: Annotated[str, Field(min_length=1)]
    """An expression (docs/expressions.md), compiled when the hub starts."""
    group_by: Annotated[str, Field(pattern=FIELD_PATH)] | None = None
    """A field path such as ``data.commandName`` (``table`` and ``top`` need one)."""
    bucket: Literal["hour", "day"] = "hour"

    @model_validator(mode="after")
    def _grouped_when_it_must_be(self) -> Self:
        if self.kind in ("table", "top") and self.group_by is None:
            raise ValueError(f"a {self.kind} widget needs groupBy (a field path)")
        return self


class DashboardConfig(WireModel):
    widgets: Annotated[list[WidgetConfig], Field(max_length=50)] = Field(default_factory=list)


class ViewerConfig(WireModel):
    dashboard: DashboardConfig = Field(default_factory=DashboardConfig)


class ExecutorStreamerConfig(ConfigModel):
    unsupported: ClassVar[dict[str, str]] = {
        "timeouts": "the hub bounds waits with server.idleClientTimeout, heartbeats and "
        "the poll timeout; workflow, step and retry timeouts belong to the executor",
    }

    module_id: Literal["executor-streamer"] = MODULE_ID
    version: Literal["1.0.0"] = "1.0.0"
    """The version of this configuration's format."""
    enabled: Literal[True] = True
    """A hub is enabled by running it: ``false`` is refused rather than ignored."""
    server: ServerConfig = Field(default_factory=ServerConfig)
    default_stream_config: StreamConfig = Field(default_factory=StreamConfig)
    security: SecurityConfig = Field(default_factory=SecurityConfig)
    persistence: PersistenceConfig = Field(default_factory=PersistenceConfig)
    compression: CompressionConfig = Field(default_factory=CompressionConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    performance: PerformanceConfig = Field(default_factory=PerformanceConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    viewer: ViewerConfig = Field(default_factory=ViewerConfig)

    @model_validator(mode="after")
    def _widget_filters_within_limits(self) -> Self:
        for n, widget in enumerate(self.viewer.dashboard.widgets):
            if len(widget.filter) > self.limits.max_expression_length:
                raise ValueError(
                    f"viewer.dashboard.widgets[{n}].filter is over "
                    f"{self.limits.max_expression_length} characters (limits.maxExpressionLength)"
                )
        return self

    @model_validator(mode="after")
    def _safe_bind(self) -> Self:
        security = self.security
        if (
            not security.authentication_required
            and not security.allow_insecure
            and self.server.host not in LOOPBACK_HOSTS
        ):
            raise ValueError(
                f"server.host {self.server.host!r} is not loopback and authentication is off: "
                "anyone who can reach the port could publish and read every stream. Turn "
                "authentication on (security.authenticationRequired with security.jwt or "
                "security.apiKeys; see the README, 'Securing a hub'), or set "
                "security.allowInsecure to accept an open hub"
            )
        return self

    @model_validator(mode="after")
    def _default_stream_within_limits(self) -> Self:
        problems = stream_config_problems(self, self.default_stream_config)
        if problems:
            key, message = problems[0]
            raise ValueError(f"defaultStreamConfig.{key} {message}")
        return self

    @classmethod
    def load(
        cls,
        config_file: str | Path | None = None,
        *,
        overrides: Mapping[str, Any] | None = None,
        use_environment: bool = True,
    ) -> Self:
        """Defaults, then ``config_file``, then the environment, then ``overrides``."""
        layers: list[Mapping[str, Any]] = []
        if config_file is not None:
            layers.append(read_config_file(Path(config_file)))
        if use_environment:
            layers.append(_environment_layer())
        if overrides:
            layers.append(overrides)
        merged: dict[str, Any] = {}
        for layer in layers:
            merged = deep_merge(merged, normalize_keys(dict(layer)))
        try:
            return cls.model_validate(merged, by_alias=False, by_name=True)
        except ValidationError as exc:
            raise ConfigError(_describe(exc)) from None

    def with_overrides(self, overrides: Mapping[str, Any]) -> Self:
        """A copy with ``overrides`` (nested, camel- or snake-case) laid over this config."""
        merged = deep_merge(self.model_dump(by_alias=False), normalize_keys(dict(overrides)))
        try:
            return self.model_validate(merged, by_alias=False, by_name=True)
        except ValidationError as exc:
            raise ConfigError(_describe(exc)) from None


def stream_config_problems(
    config: ExecutorStreamerConfig, stream: StreamConfig
) -> list[tuple[str, str]]:
    """What in a stream's config exceeds the hub's limits: (camelCase key, why)."""
    bounds = [
        (
            "maxHistorySize",
            stream.max_history_size,
            config.limits.max_history_size,
            "limits.maxHistorySize",
        ),
        ("bufferSize", stream.buffer_size, config.limits.max_buffer_size, "limits.maxBufferSize"),
        ("maxClients", stream.max_clients, config.server.max_connections, "server.maxConnections"),
    ]
    problems = [
        (key, f"is {value}; this hub allows at most {limit} ({source})")
        for key, value, limit, source in bounds
        if value > limit
    ]
    filters, limits = stream.event_filters, config.limits
    if len(filters) > limits.max_filters:
        problems.append(
            ("eventFilters", f"has {len(filters)} filters; at most {limits.max_filters}")
        )
    problems += [
        (f"eventFilters[{n}].expression", f"is over {limits.max_expression_length} characters")
        for n, spec in enumerate(filters)
        if spec.expression is not None and len(spec.expression) > limits.max_expression_length
    ]
    return problems


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse a ``.toml`` or ``.json`` config file into a dict."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        if path.suffix.lower() == ".toml":
            data: Any = tomllib.loads(raw.decode("utf-8"))
        elif path.suffix.lower() == ".json":
            data = orjson.loads(raw)
        else:
            raise ConfigError(f"config file {path} must end in .toml or .json")
    except (tomllib.TOMLDecodeError, orjson.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold an object at the top level")
    return data


class _EnvironmentShape(ExecutorStreamerConfig, BaseSettings):
    """Only tells pydantic-settings which variables to look for; never instantiated."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter=ENV_NESTED_DELIMITER, extra="forbid"
    )


def _environment_layer() -> dict[str, Any]:
    source = EnvSettingsSource(
        _EnvironmentShape,
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
        case_sensitive=False,
    )
    try:
        return source()
    except SettingsError as exc:  # e.g. a list-valued variable that is not JSON
        raise ConfigError(f"invalid environment variable: {exc}") from None


def _describe(exc: ValidationError) -> str:
    problems = []
    for err in exc.errors(include_url=False):
        key = ".".join(str(part) for part in err["loc"]) or "(root)"
        problems.append(f"{key}: {err['msg']}")
    return "invalid configuration: " + "; ".join(problems)


__all__ = [
    "ApiKeyConfig",
    "CompressionConfig",
    "ExecutorStreamerConfig",
    "JwtConfig",
    "LimitsConfig",
    "LoggingConfig",
    "PerformanceConfig",
    "PersistenceConfig",
    "RateLimitingConfig",
    "SecurityConfig",
    "ServerConfig",
]
