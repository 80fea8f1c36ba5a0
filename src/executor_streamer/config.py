"""Hub configuration (docs/configuration.md): the seed's ExecutorStreamerConfig and defaults.

``ExecutorStreamerConfig()`` is the seed's defaults and nothing else.
``ExecutorStreamerConfig.load(...)`` layers, later winning:
defaults → a TOML or JSON file → ``EXECUTOR_STREAMER_…`` environment variables
(nested with ``__``) → explicit overrides (the CLI's flags).
camelCase and snake_case keys both load; an unknown key or invalid value raises
:class:`~executor_streamer.errors.ConfigError` naming the key.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self

import orjson
from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict, SettingsError

from .errors import ConfigError
from .types.base import ConfigModel, WireModel, deep_merge, normalize_keys
from .types.streams import MODULE_ID, StreamConfig

ENV_PREFIX = "EXECUTOR_STREAMER_"
ENV_NESTED_DELIMITER = "__"

Port = Annotated[int, Field(ge=0, le=65_535)]
Positive = Annotated[int, Field(ge=1)]
StorageBackend = Literal["memory", "file", "database", "redis"]


class ServerConfig(WireModel):
    port: Port = 3001
    host: str = "localhost"
    max_connections: Positive = 1000
    """Global limit of connected clients."""
    auto_create_streams: bool = True
    """Publishing to an unknown workflow session creates its stream."""
    idle_client_timeout: Annotated[int, Field(ge=1000)] = 30_000
    """Milliseconds without a sign of life after which a client is removed."""


class RateLimitingConfig(WireModel):
    enabled: bool = True
    max_requests_per_minute: Positive = 1000
    max_events_per_second: Positive = 1000
    """Per stream. The seed said 100, below its own 1000 events/s requirement."""


class SecurityConfig(WireModel):
    cors_origins: list[str] = Field(default_factory=lambda: ["http://localhost:3000"])
    authentication_required: bool = False
    rate_limiting: RateLimitingConfig = Field(default_factory=RateLimitingConfig)

    @field_validator("authentication_required")
    @classmethod
    def _no_false_sense_of_security(cls, required: bool) -> bool:
        # Until credentials are checked, a hub that says it requires them would be as
        # open as one that does not: refuse rather than pretend.
        if required:
            raise ValueError("authentication is not implemented in this version of the hub")
        return required


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
    return [
        (key, f"is {value}; this hub allows at most {limit} ({source})")
        for key, value, limit, source in bounds
        if value > limit
    ]


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
    "CompressionConfig",
    "ExecutorStreamerConfig",
    "LimitsConfig",
    "LoggingConfig",
    "PerformanceConfig",
    "PersistenceConfig",
    "RateLimitingConfig",
    "SecurityConfig",
    "ServerConfig",
]
