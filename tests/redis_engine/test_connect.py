"""Reading the Redis connection string (docs/configuration.md, docs/multi-node.md)."""

from __future__ import annotations

import pytest

from executor_streamer import ExecutorStreamerConfig
from executor_streamer.backends import storage_for
from executor_streamer.errors import ConfigError
from executor_streamer.redis_engine.connect import RedisTarget


def test_one_server() -> None:
    target = RedisTarget.parse("rediss://u:p@cache:6380/2")
    assert not target.cluster and target.tls
    assert target.limits_uri() == "async+rediss://u:p@cache:6380/2"


def test_a_cluster_by_its_nodes() -> None:
    target = RedisTarget.parse("redis+cluster://u:p%40ss@10.0.0.1:7000,10.0.0.2:7001")
    assert target.cluster and not target.tls
    assert target.nodes == (("10.0.0.1", 7000), ("10.0.0.2", 7001))
    assert target.node_url("10.0.0.3", 7002) == "redis://u:p%40ss@10.0.0.3:7002/0"
    assert target.limits_uri() == "async+redis+cluster://u:p%40ss@10.0.0.1:7000,10.0.0.2:7001"
    tls = RedisTarget.parse("rediss+cluster://h:7000/0?ssl_cert_reqs=none")
    assert tls.tls and tls.node_url("h", 7000) == "rediss://h:7000/0?ssl_cert_reqs=none"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://localhost:6379", "takes redis://"),
        ("localhost:6379", "takes redis://"),
        ("redis+cluster://localhost", "is not host:port"),
        ("redis+cluster://a:1,b", "is not host:port"),
        ("redis+cluster://a:1/3", "only db 0"),
    ],
)
def test_a_bad_string_is_a_clear_config_error(url: str, message: str) -> None:
    config = ExecutorStreamerConfig().with_overrides(
        {"persistence": {"storageBackend": "redis", "connectionString": url}}
    )
    with pytest.raises(ConfigError, match=message):
        storage_for(config)
