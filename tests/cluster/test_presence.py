"""Watcher counts (``realtime.presence``) across two nodes on a Redis Cluster and behind
Sentinel: the counts, the lease and the totals script live under one hash tag."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from tests.client import Client
from tests.cluster.redis_procs import RedisCluster3x2, SentinelSetup
from tests.integration.test_presence import _count_reaches

pytestmark = pytest.mark.broker


@pytest.mark.parametrize("kind", ["cluster", "sentinel"])
def test_watcher_count_sums_nodes(
    kind: str, request: pytest.FixtureRequest, server_factory: Any
) -> None:
    """3 watchers on node A and 2 on node B read 5 on presence:; after 2 leave, 3."""
    setup: RedisCluster3x2 | SentinelSetup = request.getfixturevalue(
        "redis_cluster" if kind == "cluster" else "sentinel_setup"
    )
    settings = {
        "broker_url": setup.url,
        "redis_prefix": f"rtp:{uuid.uuid4().hex[:8]}:",
        "presence_interval": "0.2",
    }
    a, b = server_factory(**settings), server_factory(**settings)

    async def scenario() -> None:
        on_a = [await Client.open(a.ws_url) for _ in range(3)]
        on_b = [await Client.open(b.ws_url) for _ in range(2)]
        watcher = await Client.open(b.ws_url)
        try:
            for c in on_a + on_b:
                await c.subscribe("leaderboard:7")
            sub = await watcher.subscribe("presence:leaderboard:7")
            state = sub["state"]["data"]["count"] if sub["state"] else -1
            if state != 5:
                assert await _count_reaches(watcher, "leaderboard:7", 5, 5.0) == 5
            for c in on_a[:2]:
                await c.ws.close()
            assert await _count_reaches(watcher, "leaderboard:7", 3, 5.0) == 3
        finally:
            for c in [*on_a, *on_b, watcher]:
                await c.ws.close()

    asyncio.run(scenario())
