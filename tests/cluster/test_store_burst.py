"""A burst of store calls on the cluster or Sentinel client waits its turn instead of failing.

Their connection pools raise at once when full (unlike the one-Redis blocking pool), so the
store bounds the calls in flight.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from realtime.brokers.redis import RedisStore, store_client
from realtime.envelope import Envelope

pytestmark = pytest.mark.broker


@pytest.mark.parametrize("deployment", ["redis_cluster", "sentinel_setup"])
def test_300_concurrent_publishes_all_succeed(
    deployment: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue(deployment).url
    prefix = f"rtq:{uuid.uuid4().hex[:8]}:"

    async def scenario() -> list[int]:
        client = store_client(url)
        store = RedisStore(client, prefix, 100, 600, 3600, sharded=url.startswith("redis+cl"))
        try:
            results = await asyncio.gather(
                *[store.publish(Envelope(f"contest:q{i % 7}", "t", b"1")) for i in range(300)]
            )
        finally:
            await client.aclose()
        return sorted(p.offset for p, _ in results)

    offsets = asyncio.run(scenario())
    assert len(offsets) == 300 and offsets.count(1) == 7
