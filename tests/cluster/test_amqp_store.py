"""amqp:// transport with its offsets/history/state store on the Redis Cluster or Sentinel."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from tests.cluster.flow import Recorder, settle
from tests.cluster.redis_procs import RedisCluster3x2, SentinelSetup

pytestmark = pytest.mark.broker


@pytest.mark.parametrize("store", ["cluster", "sentinel"])
def test_two_amqp_nodes_number_events_in_the_store(
    store: str, request: pytest.FixtureRequest, server_factory: Any, exchange: str, amqp_url: str
) -> None:
    """REALTIME_REDIS_URL takes the cluster and sentinel forms: both nodes, same offsets."""
    deployment: RedisCluster3x2 | SentinelSetup = request.getfixturevalue(
        "redis_cluster" if store == "cluster" else "sentinel_setup"
    )
    prefix = f"rta:{uuid.uuid4().hex[:8]}:"
    servers = [
        server_factory(
            broker_url=amqp_url, amqp_exchange=exchange, redis_url=deployment.url,
            redis_prefix=prefix,
        )
        for _ in range(2)
    ]  # fmt: skip
    channels = [f"contest:a{i}" for i in range(6)]

    async def scenario() -> list[Recorder]:
        recorders = [await Recorder.open(s.ws_url, channels) for s in servers]
        for i in range(5):
            servers[i % 2].publish(*[{"channel": c, "type": "t", "data": i} for c in channels])
        await settle(recorders, quiet=1.0)
        for rec in recorders:
            await rec.close()
        return recorders

    recorders = asyncio.run(scenario())
    for name in channels:
        assert [r.offsets(name) for r in recorders] == [[1, 2, 3, 4, 5]] * 2, name
