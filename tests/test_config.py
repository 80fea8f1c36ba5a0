"""Configuration (docs/configuration.md): original defaults, files, environment, overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from executor_streamer import ConfigError, ExecutorStreamerConfig


class TestDefaults:
    def test_original_defaults(self) -> None:
        """Defaults are the original specification's, maxEventsPerSecond raised to 1000/s."""
        c = ExecutorStreamerConfig()
        assert (c.server.port, c.server.host, c.server.max_connections) == (3001, "localhost", 1000)
        s = c.default_stream_config
        assert (s.max_history_size, s.buffer_size, s.heartbeat_interval, s.max_clients) == (
            10_000,
            1000,
            30_000,
            100,
        )
        assert s.persistence.retention_period == 86_400_000
        assert c.persistence.storage_backend == "memory"
        assert c.security.rate_limiting.max_requests_per_minute == 1000
        assert c.security.rate_limiting.max_events_per_second == 1000
        assert (c.compression.algorithm, c.compression.threshold) == ("gzip", 1024)
        assert c.server.auto_create_streams is True
        assert c.server.idle_client_timeout == 30_000
        assert c.limits.max_event_bytes == 1 << 20
        assert c.limits.max_batch_size == 1000
        assert c.limits.max_filters == 20
        assert c.limits.max_screenshot_bytes == 10 << 20
        assert c.logging.prefix == "[ExecutorStreamer]"
        assert c.performance.metrics_enabled is True

    def test_constructor_ignores_the_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """ExecutorStreamerConfig() is the defaults only; load() reads the environment."""
        monkeypatch.setenv("EXECUTOR_STREAMER_SERVER__PORT", "9999")
        assert ExecutorStreamerConfig().server.port == 3001
        assert ExecutorStreamerConfig.load().server.port == 9999

    def test_serializes_with_the_seeds_key_names(self) -> None:
        """The camelCase dump uses the original specification's spelling."""
        dumped = ExecutorStreamerConfig().model_dump(by_alias=True)
        assert dumped["defaultStreamConfig"]["maxHistorySize"] == 10_000
        assert dumped["performance"]["metricsEnabled"] is True


class TestLoading:
    def test_toml_file_with_camel_case(self, tmp_path: Path) -> None:
        """A TOML file in the original specification's camelCase loads."""
        path = tmp_path / "hub.toml"
        path.write_text(
            "[server]\nport = 8080\n[defaultStreamConfig]\nmaxHistorySize = 50\n"
            "[defaultStreamConfig.persistence]\nretentionPeriod = 60000\n"
            "[performance]\nmetricsEnabled = false\n"
        )
        c = ExecutorStreamerConfig.load(path, use_environment=False)
        assert c.server.port == 8080
        assert c.default_stream_config.max_history_size == 50
        assert c.default_stream_config.persistence.retention_period == 60_000
        assert c.performance.metrics_enabled is False

    def test_json_file_with_snake_case(self, tmp_path: Path) -> None:
        """A JSON file in snake_case loads too."""
        path = tmp_path / "hub.json"
        path.write_text('{"server": {"max_connections": 500}, "limits": {"max_filters": 3}}')
        c = ExecutorStreamerConfig.load(path, use_environment=False)
        assert (c.server.max_connections, c.limits.max_filters) == (500, 3)

    def test_later_sources_win(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """File < environment < explicit overrides, key by key."""
        path = tmp_path / "hub.toml"
        path.write_text('[server]\nport = 1\nhost = "127.0.0.1"\nmaxConnections = 700\n')
        monkeypatch.setenv("EXECUTOR_STREAMER_SERVER__PORT", "2")
        monkeypatch.setenv("EXECUTOR_STREAMER_SERVER__HOST", "::1")
        c = ExecutorStreamerConfig.load(path, overrides={"server": {"port": 3}})
        assert (c.server.port, c.server.host, c.server.max_connections) == (3, "::1", 700)

    def test_environment_lists_and_nested_sections(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Environment variables reach nested sections and take JSON for lists."""
        monkeypatch.setenv("EXECUTOR_STREAMER_SECURITY__CORS_ORIGINS", '["https://a", "https://b"]')
        monkeypatch.setenv(
            "EXECUTOR_STREAMER_DEFAULT_STREAM_CONFIG__PERSISTENCE__RETENTION_PERIOD", "5000"
        )
        c = ExecutorStreamerConfig.load()
        assert c.security.cors_origins == ["https://a", "https://b"]
        assert c.default_stream_config.persistence.retention_period == 5000

    def test_camel_and_snake_keys_merge_across_sources(self, tmp_path: Path) -> None:
        """A camelCase file key and a snake_case override of the same key do not collide."""
        path = tmp_path / "hub.json"
        path.write_text('{"defaultStreamConfig": {"maxHistorySize": 5, "bufferSize": 9}}')
        c = ExecutorStreamerConfig.load(
            path, overrides={"default_stream_config": {"max_history_size": 6}}
        )
        assert (c.default_stream_config.max_history_size, c.default_stream_config.buffer_size) == (
            6,
            9,
        )


class TestInvalid:
    @pytest.mark.parametrize(
        ("overrides", "key"),
        [
            ({"server": {"port": "x"}}, "server.port"),
            ({"server": {"port": 70000}}, "server.port"),
            ({"server": {"prot": 1}}, "server.prot"),
            (
                {"defaultStreamConfig": {"maxHistorySize": 0}},
                "default_stream_config.max_history_size",
            ),
            ({"persistence": {"storageBackend": "s3"}}, "persistence.storage_backend"),
            ({"logging": {"level": "LOUD"}}, "logging.level"),
        ],
    )
    def test_invalid_value_names_its_key(self, overrides: dict[str, object], key: str) -> None:
        """An invalid or unknown key stops loading with a message naming it."""
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            ExecutorStreamerConfig.load(overrides=overrides, use_environment=False)

    def test_invalid_environment_value_names_its_key(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A bad environment value is reported by its key."""
        monkeypatch.setenv("EXECUTOR_STREAMER_SERVER__PORT", "abc")
        with pytest.raises(ConfigError, match=r"server\.port"):
            ExecutorStreamerConfig.load()

    def test_list_variable_that_is_not_json(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A list setting given in the environment must be JSON; the error says so."""
        monkeypatch.setenv("EXECUTOR_STREAMER_SECURITY__CORS_ORIGINS", "https://a,https://b")
        with pytest.raises(ConfigError, match="invalid environment variable"):
            ExecutorStreamerConfig.load()

    @pytest.mark.parametrize(
        ("name", "content", "message"),
        [
            ("missing.toml", None, "cannot read"),
            ("bad.toml", "port = = 1", "not valid"),
            ("bad.json", "{", "not valid"),
            ("list.json", "[1]", "object at the top level"),
            ("hub.yaml", "a: 1", "must end in .toml or .json"),
        ],
    )
    def test_bad_files(self, tmp_path: Path, name: str, content: str | None, message: str) -> None:
        """Unreadable, malformed or unknown files give a ConfigError saying which."""
        path = tmp_path / name
        if content is not None:
            path.write_text(content)
        with pytest.raises(ConfigError, match=message):
            ExecutorStreamerConfig.load(path, use_environment=False)
