"""Nothing configured is ignored: every key of the configuration has an effect or is refused.

The test walks the config model, so a key added later without a probe here fails it.
Each probe observes behaviour (what a hub, its server or its app does) under the default
and under another value, and the two must differ; a refused key must stop loading with
a message naming it; a key that only permits something is shown to permit it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import pytest
import structlog
from pydantic import BaseModel
from pydantic.alias_generators import to_camel

from executor_streamer import (
    ClientType,
    ConfigError,
    ExecutorStreamer,
    ExecutorStreamerConfig,
    StreamerError,
)
from executor_streamer.backends import storage_for
from executor_streamer.logs import configure_logging
from executor_streamer.security import Scope, mint_token
from executor_streamer.server import create_app
from executor_streamer.server.connections import ping_settings
from executor_streamer.server.runner import build_server
from executor_streamer.types.base import ConfigModel, WireModel, deep_merge, utc_now

from .conftest import PNG
from .waiting import clear_of_a_minute_edge

Observe = Callable[[ExecutorStreamerConfig], Awaitable[object]]


@dataclass(frozen=True)
class Effect:
    """Setting the key to ``value`` (over ``base``) changes what ``observe`` sees."""

    value: Any
    observe: Observe
    base: dict[str, Any] = field(default_factory=dict)
    also: dict[str, Any] = field(default_factory=dict)
    """Set with the new value only (what the new value needs to be valid)."""


@dataclass(frozen=True)
class Refused:
    """Setting the key to ``value`` stops loading with a message naming the key."""

    value: Any


@dataclass(frozen=True)
class Permits:
    """``other`` alone stops loading with a message naming the key; with the key set to
    ``value`` it loads."""

    value: Any
    other: dict[str, Any]


def leaf_keys(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, WireModel):
            yield from leaf_keys(annotation, (*prefix, name))
        else:
            yield (*prefix, name)


def nested(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {path[-1]: value}
    for part in reversed(path[:-1]):
        out = {part: out}
    return out


def load(overrides: dict[str, Any]) -> ExecutorStreamerConfig:
    return ExecutorStreamerConfig.load(overrides=overrides, use_environment=False)


@contextlib.asynccontextmanager
async def running(config: ExecutorStreamerConfig) -> AsyncIterator[ExecutorStreamer]:
    hub = ExecutorStreamer(config)
    await hub.start()
    try:
        yield hub
    finally:
        await hub.stop()


async def outcome(action: Awaitable[object]) -> object:
    """What an action gives, or the code of the error it raises."""
    try:
        return await action
    except StreamerError as exc:
        return exc.code


async def http_get(
    config: ExecutorStreamerConfig, path: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    return (await http_gets(config, path, 1, headers))[0]


async def http_gets(
    config: ExecutorStreamerConfig, path: str, times: int, headers: dict[str, str] | None = None
) -> list[httpx.Response]:
    async with running(config) as hub:
        app = create_app(hub)
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            return [await http.get(path, headers=headers) for _ in range(times)]


SECRET = "probe-secret-" + "s" * 32
API_KEY = "probe-api-key"
API_KEY_CONFIG = {
    "name": "probe",
    "keySha256": hashlib.sha256(API_KEY.encode()).hexdigest(),
    "scope": {"admin": True},
}
JWT_AUTH = {"security": {"authenticationRequired": True, "jwt": {"secret": SECRET}}}
KEY_AUTH = {"security": {"authenticationRequired": True, "apiKeys": [API_KEY_CONFIG]}}


def bearer(credential: str) -> dict[str, str]:
    return {"authorization": f"Bearer {credential}"}


def admin_token() -> str:
    return mint_token(SECRET, "probe", Scope(admin=True), 60)


# -- probes ------------------------------------------------------------------------------


async def bound_address(config: ExecutorStreamerConfig) -> object:
    server = build_server(ExecutorStreamer(config))
    return server.config.host, server.config.port


async def connections_accepted(config: ExecutorStreamerConfig) -> object:
    async with running(config) as hub:
        for count in range(5000):
            try:
                hub.connect(ClientType.WEBSOCKET)
            except StreamerError:
                return count
    return None


async def publish_to_unknown(config: ExecutorStreamerConfig) -> object:
    async with running(config) as hub:
        return await outcome(hub.publisher.publish_status("wf-new", "a", "b"))


async def idle_after_ten_seconds(config: ExecutorStreamerConfig) -> object:
    async with running(config) as hub:
        hub.connect(ClientType.WEBSOCKET)
        return len(hub.expire_idle_clients(time.monotonic() + 10))


async def history_held(config: ExecutorStreamerConfig) -> object:
    async with running(config) as hub:
        for i in range(20):
            await hub.publisher.publish_status("wf-1", "n", str(i))
        return (await hub.history.get_events("wf-1")).total


async def subscriber_dropped(config: ExecutorStreamerConfig) -> object:
    async with running(config) as hub:
        await hub.create_stream("wf-1")
        sub = await hub.open_subscription("wf-1")
        for i in range(10):
            await hub.publisher.publish_reasoning("wf-1", "x" * 8000, 0.5, str(i))
        return sub.close_reason


async def replay_allowed(config: ExecutorStreamerConfig) -> object:
    async with running(config) as hub:
        await hub.publisher.publish_status("wf-1", "n", "1")
        client = hub.connect(ClientType.WEBSOCKET)
        await hub.open_subscription("wf-1", client=client)
        return await outcome(hub.replay_to_client("wf-1", client.id))


async def websocket_pings(config: ExecutorStreamerConfig) -> object:
    return ping_settings(ExecutorStreamer(config))


async def subscribers_accepted(config: ExecutorStreamerConfig) -> object:
    async with running(config) as hub:
        await hub.create_stream("wf-1")
        for count in range(200):
            client = hub.connect(ClientType.WEBSOCKET)
            try:
                await hub.open_subscription("wf-1", client=client)
            except StreamerError:
                return count
    return None


async def unfiltered_subscriber_gets(config: ExecutorStreamerConfig) -> object:
    async with running(config) as hub:
        await hub.create_stream("wf-1")
        sub = await hub.open_subscription("wf-1")
        await hub.publisher.publish_status("wf-1", "n", "1")
        await hub.publisher.publish_error("wf-1", {"code": "E", "message": "m"})
        return [r.type for r in sub.drain_records()]


async def retained_after_five_seconds(config: ExecutorStreamerConfig) -> object:
    async with running(config) as hub:
        await hub.publisher.publish_status("wf-1", "n", "1")
        await hub.history.apply_retention(utc_now() + timedelta(seconds=5))
        return (await hub.history.get_events("wf-1")).total


async def cors_answer(config: ExecutorStreamerConfig) -> object:
    response = await http_get(config, "/healthz", {"origin": "http://app.example"})
    return response.headers.get("access-control-allow-origin")


async def origin_from_the_public_url(config: ExecutorStreamerConfig) -> object:
    """An SSE request from a page at https://hub.example: refused (403) unless that is
    the hub's own origin; then it reaches the stream lookup (404, no such stream)."""
    response = await http_get(config, "/api/streams/nowhere/events", {"origin": ORIGIN})
    return response.status_code


ORIGIN = "https://hub.example"


async def storage_url(config: ExecutorStreamerConfig) -> object:
    store = storage_for(config)
    return type(store).__name__, getattr(store, "url", None)


async def openapi_encoding(config: ExecutorStreamerConfig) -> object:
    response = await http_get(config, "/openapi.json", {"accept-encoding": "br, gzip"})
    return response.headers.get("content-encoding")


async def websocket_deflate(config: ExecutorStreamerConfig) -> object:
    return build_server(ExecutorStreamer(config)).config.ws_per_message_deflate


async def log_output(config: ExecutorStreamerConfig) -> object:
    output = io.StringIO()
    configure_logging(config.logging, output)
    try:
        structlog.get_logger("probe").info("probed", session_id="wf-1")
    finally:
        configure_logging(ExecutorStreamerConfig().logging)
    text = output.getvalue()
    return text if "probed" in text else None


async def metrics_status(config: ExecutorStreamerConfig) -> object:
    return (await http_get(config, "/metrics")).status_code


async def streams_status(config: ExecutorStreamerConfig) -> object:
    return (await http_get(config, "/api/streams")).status_code


async def status_with_token(config: ExecutorStreamerConfig) -> object:
    return (await http_get(config, "/api/streams", bearer(admin_token()))).status_code


async def status_with_api_key(config: ExecutorStreamerConfig) -> object:
    return (await http_get(config, "/api/streams", bearer(API_KEY))).status_code


async def five_requests(config: ExecutorStreamerConfig) -> object:
    await clear_of_a_minute_edge()
    return [r.status_code for r in await http_gets(config, "/api/streams", 5)]


async def three_events_published(config: ExecutorStreamerConfig) -> object:
    async with running(config) as hub:
        transport = httpx.ASGITransport(create_app(hub))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            statuses = []
            for i in range(3):
                event = {"type": "STATUS", "data": {"statusType": "a", "status": str(i)}}
                response = await http.post("/api/streams/wf-1/events", json=event)
                statuses.append(response.status_code)
            return statuses


async def connections_held(config: ExecutorStreamerConfig) -> object:
    async with running(config) as hub:
        rate = create_app(hub).state.gate.rate
        for count in range(200):
            try:
                await rate.hold_connection("ip:127.0.0.1")
            except StreamerError:
                return count
    return None


async def forwarded_for(config: ExecutorStreamerConfig) -> object:
    server = build_server(ExecutorStreamer(config))
    return server.config.proxy_headers, server.config.forwarded_allow_ips


async def publish_outcome(config: ExecutorStreamerConfig, event: dict[str, Any]) -> object:
    async with running(config) as hub:
        return await outcome(hub.publisher.publish_event("wf-1", event))


async def big_event(config: ExecutorStreamerConfig) -> object:
    return await publish_outcome(
        config,
        {"type": "STATUS", "data": {"statusType": "a", "status": "b", "message": "x" * 4000}},
    )


async def batch_of_three(config: ExecutorStreamerConfig) -> object:
    async with running(config) as hub:
        status = {"type": "STATUS", "data": {"statusType": "a", "status": "b"}}
        return await outcome(hub.publisher.publish_batch("wf-1", [status] * 3))


async def websocket_message_limit(config: ExecutorStreamerConfig) -> object:
    return build_server(ExecutorStreamer(config)).config.ws_max_size


async def three_filters(config: ExecutorStreamerConfig) -> object:
    async with running(config) as hub:
        await hub.create_stream("wf-1")
        filters = [{"eventTypes": ["STATUS"]}] * 3
        return await outcome(hub.open_subscription("wf-1", filters=filters))


async def long_expression(config: ExecutorStreamerConfig) -> object:
    async with running(config) as hub:
        await hub.create_stream("wf-1")
        expression = " || ".join(f'data.status == "{n}"' for n in range(40))  # ~820 chars
        return await outcome(hub.open_subscription("wf-1", filters=[{"expression": expression}]))


async def dashboard_widgets(config: ExecutorStreamerConfig) -> object:
    async with running(config) as hub:
        await hub.publisher.publish_status("wf-1", "step", "one")
        return await outcome(hub.run_analytics.widget(Scope(admin=True), 0, None, None))


async def screenshot(config: ExecutorStreamerConfig) -> object:
    async with running(config) as hub:
        return await outcome(hub.publisher.publish_screenshot("wf-1", PNG))


async def event_metadata(config: ExecutorStreamerConfig) -> object:
    async with running(config) as hub:
        return await outcome(
            hub.publisher.publish_status("wf-1", "a", "b", metadata={"m": "x" * 2000})
        )


async def create_with(config: ExecutorStreamerConfig, stream: dict[str, Any]) -> object:
    async with running(config) as hub:
        return await outcome(hub.create_stream("wf-1", stream))


async def big_history(config: ExecutorStreamerConfig) -> object:
    return await create_with(config, {"maxHistorySize": 200_000})


async def big_buffer(config: ExecutorStreamerConfig) -> object:
    return await create_with(config, {"bufferSize": 20_000})


async def byte_budget(config: ExecutorStreamerConfig) -> object:
    async with running(config) as hub:
        await hub.create_stream("wf-1")
        sub = await hub.open_subscription("wf-1")
        for _ in range(4):
            await hub.publisher.publish_reasoning("wf-1", "x" * (32 << 10), 0.5, "p")
        return sub.close_reason


async def large_create_body(config: ExecutorStreamerConfig) -> object:
    async with running(config) as hub:
        app = create_app(hub)
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            body = {"workflowSessionId": "wf-1", "metadata": {"note": "n" * (3 << 20)}}
            response = await http.post("/api/streams", json=body)
            return response.status_code


async def three_streams(config: ExecutorStreamerConfig) -> object:
    async with running(config) as hub:
        for name in ("wf-1", "wf-2", "wf-3"):
            code = await outcome(hub.create_stream(name))
            if isinstance(code, str):
                return code
        return "created"


async def memory_at_publish(config: ExecutorStreamerConfig) -> object:
    async with running(config) as hub:
        for _ in range(20):
            code = await outcome(hub.publisher.publish_reasoning("wf-1", "x" * 100_000, 0.5, "p"))
            if isinstance(code, str):
                return code
        return "stored"


# SQLite URLs, not paths: for a path the hub makes the folder, and a probe only builds the
# store (its engine connects lazily), so with URLs nothing is created on disk.
DB_A = "sqlite+aiosqlite:///probe-a.db"
DB_B = "sqlite+aiosqlite:///probe-b.db"

PROBES: dict[tuple[str, ...], Effect | Refused | Permits] = {
    ("module_id",): Refused("another-module"),
    ("version",): Refused("2.0.0"),
    ("enabled",): Refused(False),
    ("server", "port"): Effect(4001, bound_address),
    ("server", "host"): Effect("127.0.0.1", bound_address),
    ("server", "max_connections"): Effect(
        150, connections_accepted, {"defaultStreamConfig": {"maxClients": 100}}
    ),
    ("server", "auto_create_streams"): Effect(False, publish_to_unknown),
    ("server", "idle_client_timeout"): Effect(5000, idle_after_ten_seconds),
    ("default_stream_config", "max_history_size"): Effect(5, history_held),
    ("default_stream_config", "buffer_size"): Effect(5, subscriber_dropped),
    ("default_stream_config", "enable_replay"): Effect(False, replay_allowed),
    ("default_stream_config", "heartbeat_interval"): Effect(1000, websocket_pings),
    ("default_stream_config", "max_clients"): Effect(3, subscribers_accepted),
    ("default_stream_config", "event_filters"): Effect(
        [{"eventTypes": ["ERROR"]}], unfiltered_subscriber_gets
    ),
    ("default_stream_config", "persistence", "retention_period"): Effect(
        1000, retained_after_five_seconds
    ),
    ("server", "trusted_proxies"): Effect(["10.0.0.0/8"], forwarded_for),
    ("server", "public_url"): Effect("https://hub.example", origin_from_the_public_url),
    ("security", "cors_origins"): Effect(["http://app.example"], cors_answer),
    ("security", "authentication_required"): Effect(
        True, streams_status, also={"security": {"jwt": {"secret": SECRET}}}
    ),
    ("security", "allow_insecure"): Permits(True, {"server": {"host": "0.0.0.0"}}),
    ("security", "metrics_public"): Effect(True, metrics_status, JWT_AUTH),
    ("security", "jwt"): Effect({"secret": SECRET}, status_with_token, KEY_AUTH),
    ("security", "api_keys"): Effect([API_KEY_CONFIG], status_with_api_key, JWT_AUTH),
    ("security", "rate_limiting", "enabled"): Effect(
        False, five_requests, {"security": {"rateLimiting": {"maxRequestsPerMinute": 3}}}
    ),
    ("security", "rate_limiting", "max_requests_per_minute"): Effect(2, five_requests),
    ("security", "rate_limiting", "max_events_per_second"): Effect(
        2, three_events_published, {"defaultStreamConfig": {"bufferSize": 1}}
    ),
    ("security", "rate_limiting", "max_connections_per_subject"): Effect(3, connections_held),
    ("persistence", "storage_backend"): Effect(
        "file", storage_url, also={"persistence": {"connectionString": DB_A}}
    ),
    ("persistence", "connection_string"): Effect(
        DB_B, storage_url, {"persistence": {"storageBackend": "file", "connectionString": DB_A}}
    ),
    ("compression", "enabled"): Effect(False, openapi_encoding),
    ("compression", "threshold"): Effect(1 << 30, openapi_encoding),
    ("compression", "algorithm"): Effect("brotli", openapi_encoding),
    ("compression", "websocket"): Effect(True, websocket_deflate),
    ("logging", "level"): Effect("WARN", log_output),
    ("logging", "prefix"): Effect("[hub-7]", log_output),
    ("logging", "include_timestamp"): Effect(False, log_output),
    ("logging", "include_session_id"): Effect(False, log_output),
    ("logging", "include_module_id"): Effect(False, log_output),
    ("logging", "structured"): Effect(True, log_output),
    ("performance", "metrics_enabled"): Effect(False, metrics_status),
    ("limits", "max_event_bytes"): Effect(1000, big_event),
    ("limits", "max_batch_size"): Effect(2, batch_of_three),
    ("limits", "max_message_bytes"): Effect(4096, websocket_message_limit),
    ("limits", "max_filters"): Effect(2, three_filters),
    ("limits", "max_expression_length"): Effect(500, long_expression),
    ("viewer", "dashboard", "widgets"): Effect(
        [{"title": "Statuses", "kind": "counter", "filter": 'type == "STATUS"'}],
        dashboard_widgets,
    ),
    ("limits", "max_screenshot_bytes"): Effect(16, screenshot),
    ("limits", "max_metadata_bytes"): Effect(100, event_metadata),
    ("limits", "max_history_size"): Effect(300_000, big_history),
    ("limits", "max_buffer_size"): Effect(30_000, big_buffer),
    ("limits", "max_queued_bytes"): Effect(64 << 10, byte_budget),
    ("limits", "max_body_bytes"): Effect(
        2 << 20, large_create_body, also={"limits": {"maxScreenshotBytes": 1 << 20}}
    ),
    ("limits", "max_streams"): Effect(2, three_streams),
    ("limits", "max_memory_bytes"): Effect(1 << 20, memory_at_publish),
}

KEYS = sorted(leaf_keys(ExecutorStreamerConfig))


def test_every_key_has_a_probe() -> None:
    """A key without a probe is a key nobody has shown to do anything."""
    missing = [".".join(k) for k in KEYS if k not in PROBES]
    assert missing == []
    assert set(PROBES) == set(KEYS)


@pytest.mark.parametrize("key", [k for k in KEYS if k in PROBES], ids=".".join)
async def test_each_key_changes_behaviour_or_is_refused(key: tuple[str, ...]) -> None:
    probe = PROBES[key]
    if isinstance(probe, Refused):
        with pytest.raises(ConfigError, match=key[-1]):
            load(nested(key, probe.value))
        return
    if isinstance(probe, Permits):
        with pytest.raises(ConfigError, match=to_camel(key[-1])):
            load(probe.other)
        load(deep_merge(probe.other, nested(key, probe.value)))
        return
    default = await probe.observe(load(probe.base))
    changed_config = deep_merge(deep_merge(probe.base, probe.also), nested(key, probe.value))
    changed = await probe.observe(load(changed_config))
    assert default != changed, (default, changed)


def _unsupported(
    model: type[BaseModel] = ExecutorStreamerConfig, section: str = ""
) -> Iterator[tuple[str, str]]:
    """(dotted wire path of the section, key) for every key any section refuses."""
    if issubclass(model, ConfigModel):
        for key in model.unsupported:
            yield section, key
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, WireModel):
            alias = info.alias or name
            yield from _unsupported(annotation, f"{section}.{alias}" if section else alias)


@pytest.mark.parametrize(("section", "key"), list(_unsupported()))
def test_original_keys_without_an_effect_here_are_refused(section: str, key: str) -> None:
    """Original keys this hub does not implement stop loading with their reason."""
    path = tuple(part for part in section.split(".") if part)
    overrides = nested((*path, key), {} if key == "timeouts" else True) if path else {key: {}}
    with pytest.raises(ConfigError, match=f"{key} is not supported"):
        load(overrides)


def test_a_connection_string_needs_a_backend_that_uses_it() -> None:
    with pytest.raises(ConfigError, match="connectionString has no effect"):
        load({"persistence": {"connectionString": "/tmp/x.db"}})
