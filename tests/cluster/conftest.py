"""Session-scoped private deployments: a Redis Cluster and a Sentinel setup (see redis_procs)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster.redis_procs import RedisCluster3x2, SentinelSetup


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster3x2]:
    """3 primaries + 3 replicas on free loopback ports, stopped by PID at the end."""
    cluster = RedisCluster3x2(tmp_path_factory.mktemp("cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def sentinel_setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSetup]:
    """1 primary + 1 replica + 3 sentinels on free loopback ports, stopped by PID."""
    setup = SentinelSetup(tmp_path_factory.mktemp("sentinel"))
    try:
        setup.start()
        yield setup
    finally:
        setup.stop()
