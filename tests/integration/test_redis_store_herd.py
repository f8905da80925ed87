"""A herd of store calls waits in the store's own queue, never in the pool (issue 19).

100,000 private subscribes at once (bench.scale) used to fail a few hundred with "No
connection available": the one-Redis pool's wait for a free connection times out (5 s)
while the worker is busy. The store now bounds its calls in flight below the pool's size,
reads and writes each with a share, so the pool never waits, and a publish does not queue
behind the reads of a herd.
"""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis

from realtime.brokers.redis import STORE_READS_IN_FLIGHT, STORE_WRITES_IN_FLIGHT, RedisStore
from realtime.envelope import Envelope

READS = 3000


def _store(url: str, prefix: str, pool_wait: float) -> RedisStore:
    # the pool the server builds (32 connections), with a pool wait far shorter than the
    # herd takes, so any call that waits in the pool fails
    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=32, timeout=pool_wait)
    return RedisStore(aioredis.Redis(connection_pool=pool), prefix, 100, 600, 3600)


def test_a_herd_of_reads_and_a_publish_all_succeed(redis_url: str, prefix: str) -> None:
    assert STORE_READS_IN_FLIGHT + STORE_WRITES_IN_FLIGHT <= 32

    async def scenario() -> tuple[int, float, float]:
        store = _store(redis_url, prefix, pool_wait=0.05)
        channels = [f"user:{i}" for i in range(READS)]
        for i in range(20):
            await store.publish(Envelope("contest:hot", "t", str(i).encode(), True, None))
        started = time.monotonic()
        reads = [asyncio.ensure_future(store.snapshot(c, 10)) for c in channels]
        reads += [asyncio.ensure_future(store.snapshot("contest:hot", 10)) for _ in range(200)]
        await asyncio.sleep(0)  # the herd is queued: a publish now must not wait for it all
        published, _ = await store.publish(Envelope("contest:hot", "t", b"x", True, None))
        publish_done = time.monotonic() - started
        snaps = await asyncio.gather(*reads)
        herd_done = time.monotonic() - started
        assert all(s.offset == 0 for s in snaps[:READS])
        assert {s.offset for s in snaps[READS:]} <= {20, 21}
        assert published.offset == 21
        await store._client.aclose()
        return len(snaps), publish_done, herd_done

    count, publish_done, herd_done = asyncio.run(scenario())
    assert count == READS + 200
    # the herd outlasts the pool's wait many times over, so waiting in the pool would fail
    assert herd_done > 0.05 * 4, herd_done
    assert publish_done < herd_done / 2, (publish_done, herd_done)
