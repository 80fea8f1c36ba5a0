"""Real ``redis-server`` processes on free loopback ports, for the Redis engine's tests.

The tests start their own servers (never the machine's Redis on 6379), so they may kill,
restart or reconfigure them. A missing ``redis-server`` fails the test: ``.ci/run``
installs it, and a test that needs Redis is never skipped.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .live_server import free_port
from .waiting import eventually_blocking


class RedisServer:
    def __init__(
        self, directory: Path, *, appendonly: bool = False, port: int = 0, cluster: bool = False
    ) -> None:
        self.directory = directory
        self.appendonly = appendonly
        self.port = port or free_port()
        self.cluster_port = free_port() if cluster else 0
        """The Cluster bus's port, for a node of a Cluster."""
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed (apt-get install redis-server)")
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--dir", str(self.directory), "--logfile", "redis.log", "--protected-mode", "no"]
        if self.cluster_port:
            args += ["--cluster-enabled", "yes", "--cluster-port", str(self.cluster_port)]
            args += ["--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000"]
        if self.appendonly:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        if not eventually_blocking(self._answers, 10, every=0.02):
            pytest.fail(f"redis-server on port {self.port} did not answer within 10 s")

    def _answers(self) -> bool:
        """Whether the server answers PING (failing the test if it exited instead)."""
        assert self.process is not None
        if self.process.poll() is not None:
            log = (self.directory / "redis.log").read_text(errors="replace")
            pytest.fail(f"redis-server exited at start: {log[-2000:]}")
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn,
        ):
            conn.sendall(b"PING\r\n")
            return conn.recv(64).startswith(b"+PONG")
        return False

    def kill(self) -> None:
        """SIGKILL: nothing is flushed, as in a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None

    def command(self, *args: str) -> str:
        """One command with redis-cli, for what the tests do to Redis behind the hub."""
        result = subprocess.run(
            ["redis-cli", "-p", str(self.port), *args],
            capture_output=True,
            check=True,
            timeout=10,
            text=True,
        )
        return result.stdout.strip()


class RedisCluster:
    """A Redis Cluster of three primaries, each with ``replicas`` replicas, every node a
    ``redis-server`` on free ports, joined with ``redis-cli --cluster create``."""

    def __init__(self, directory: Path, replicas: int = 0) -> None:
        self.replicas = replicas
        count = 3 * (1 + replicas)
        self.nodes = [RedisServer(directory / f"node{i}", cluster=True) for i in range(count)]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def start(self) -> RedisCluster:
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        replicas = ["--cluster-replicas", str(self.replicas), "--cluster-yes"]
        subprocess.run(
            ["redis-cli", "--cluster", "create", *addresses, *replicas],
            capture_output=True,
            check=True,
            timeout=30,
        )
        self.wait_formed()
        return self

    def wait_formed(self) -> None:
        if not eventually_blocking(self._formed, 20, every=0.05):
            pytest.fail("the Redis Cluster did not come up within 20 s")

    def _formed(self) -> bool:
        """Every node sees the Cluster ok, and every replica is in sync with its primary."""
        if not all("cluster_state:ok" in n.command("CLUSTER", "INFO") for n in self.live):
            return False
        roles = [n.command("INFO", "replication") for n in self.live]
        synced = sum("role:slave" in r and "master_link_status:up" in r for r in roles)
        return synced == 3 * self.replicas

    @property
    def live(self) -> list[RedisServer]:
        return [node for node in self.nodes if node.process is not None]

    def replica_of(self, primary: RedisServer) -> RedisServer:
        primary_id = self.node_id(primary)
        for node in self.live:
            for line in node.command("CLUSTER", "NODES").splitlines():
                fields = line.split()
                if "myself" in fields[2] and "slave" in fields[2] and fields[3] == primary_id:
                    return node
        raise AssertionError(f"no replica of {primary.port}")

    def wait_replicated(self, primary: RedisServer) -> None:
        """Until the primary's replica holds everything the primary does."""
        replica = self.replica_of(primary)

        def caught_up() -> bool:
            sent = _info_field(primary.command("INFO", "replication"), "master_repl_offset")
            got = _info_field(replica.command("INFO", "replication"), "slave_repl_offset")
            return got >= sent

        if not eventually_blocking(caught_up, 10, every=0.02):
            pytest.fail(f"replica {replica.port} stayed behind its primary")

    def kill(self) -> None:
        for node in self.nodes:
            node.kill()

    def flush(self) -> None:
        for node in self.live:
            if "role:master" in node.command("INFO", "replication"):
                node.command("FLUSHALL")

    def node_id(self, node: RedisServer) -> str:
        return node.command("CLUSTER", "MYID")

    def slot_of(self, key: str) -> int:
        return int(self.live[0].command("CLUSTER", "KEYSLOT", key))

    def owner(self, slot: int) -> RedisServer:
        """The primary serving ``slot``, as the nodes agree."""
        for node in self.live:
            if self._serves(node, slot):
                return node
        raise AssertionError(f"no node serves slot {slot}")

    def _serves(self, node: RedisServer, slot: int) -> bool:
        for line in node.command("CLUSTER", "NODES").splitlines():
            fields = line.split()
            if "myself" not in fields[2]:
                continue
            for span in fields[8:]:
                low, _, high = span.partition("-")
                if low.isdigit() and int(low) <= slot <= int(high or low):
                    return True
        return False

    def migrate(self, slot: int, to: RedisServer) -> None:
        """Move a slot and its keys to another primary, as ``redis-cli --cluster
        reshard`` does: IMPORTING and MIGRATING, MIGRATE in batches, then SETSLOT NODE."""
        source = self.owner(slot)
        source_id, target_id = self.node_id(source), self.node_id(to)
        to.command("CLUSTER", "SETSLOT", str(slot), "IMPORTING", source_id)
        source.command("CLUSTER", "SETSLOT", str(slot), "MIGRATING", target_id)
        while keys := source.command("CLUSTER", "GETKEYSINSLOT", str(slot), "100").split():
            source.command("MIGRATE", "127.0.0.1", str(to.port), "", "0", "5000", "KEYS", *keys)
        for node in (to, source, *(n for n in self.live if n not in (to, source))):
            node.command("CLUSTER", "SETSLOT", str(slot), "NODE", target_id)


def _info_field(info: str, name: str) -> int:
    for line in info.splitlines():
        if line.startswith(name + ":"):
            return int(line.split(":", 1)[1])
    raise AssertionError(f"no {name} in INFO")


@contextlib.contextmanager
def running_redis(directory: Path, *, appendonly: bool = False) -> Iterator[RedisServer]:
    server = RedisServer(directory, appendonly=appendonly).start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture(scope="session")
def shared_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the tests that neither kill nor reconfigure it."""
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@contextlib.contextmanager
def running_cluster(directory: Path, *, replicas: int = 0) -> Iterator[RedisCluster]:
    cluster = RedisCluster(directory, replicas)
    try:
        yield cluster.start()
    finally:
        cluster.kill()


@pytest.fixture(scope="session")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """One three-primary Redis Cluster for the tests that neither kill nor reshape it."""
    with running_cluster(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster


@pytest.fixture
def cluster_url(shared_cluster: RedisCluster) -> str:
    """The shared Cluster, emptied for this test."""
    shared_cluster.flush()
    return shared_cluster.url


@pytest.fixture
def redis_url(shared_redis: RedisServer) -> str:
    """The shared server, emptied for this test."""
    shared_redis.command("FLUSHALL")
    return shared_redis.url
