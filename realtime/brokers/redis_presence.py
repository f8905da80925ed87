"""Watcher counts in Redis (``realtime.presence``): per-node hashes, a node set, a lease.

Keys under the server's prefix ``P`` (one Cluster slot, hash tag ``{presence}``)::

    P{presence}:node:<id>   hash  channel -> local count, expires after the TTL
    P{presence}:nodes       zset  node id, score = when its counts expire (ms)
    P{presence}:lease       string the id of the node that publishes the totals (PX)
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, cast

# KEYS: 1 lease. ARGV: 1 node id, 2 ttl ms. Returns 1 when this node holds the lease.
LEASE_SCRIPT = """
local holder = redis.call("GET", KEYS[1])
if holder == ARGV[1] or not holder then
  redis.call("SET", KEYS[1], ARGV[1], "PX", ARGV[2])
  return 1
end
return 0
"""

# KEYS: 1 nodes. ARGV: 1 now ms, 2 node key stem. Returns {channel, count, ...} of live nodes.
TOTALS_SCRIPT = """
redis.call("ZREMRANGEBYSCORE", KEYS[1], "-inf", ARGV[1])
local out = {}
for _, node in ipairs(redis.call("ZRANGE", KEYS[1], 0, -1)) do
  local fields = redis.call("HGETALL", ARGV[2] .. node)
  for i = 1, #fields do out[#out + 1] = fields[i] end
end
return out
"""


class RedisPresenceStore:
    """``PresenceStore`` on Redis (one small connection pool of its own)."""

    def __init__(self, url: str, prefix: str) -> None:
        from realtime.brokers.redis import store_client  # one Redis, a cluster or sentinels

        self._client = store_client(url)
        base = f"{prefix}{{presence}}"
        self._stem = f"{base}:node:"
        self._nodes = f"{base}:nodes"
        self._lease_key = f"{base}:lease"
        self._lease = self._client.register_script(LEASE_SCRIPT)
        self._totals = self._client.register_script(TOTALS_SCRIPT)

    async def report(self, node: str, counts: Mapping[str, int], ttl: float) -> None:
        key = self._stem + node
        pipe = self._client.pipeline(transaction=True)
        pipe.delete(key)
        if counts:
            pipe.hset(key, mapping=cast(Any, dict(counts)))
            pipe.pexpire(key, int(ttl * 1000))
        pipe.zadd(self._nodes, {node: int((time.time() + ttl) * 1000)})
        await pipe.execute()

    async def lease(self, node: str, ttl: float) -> bool:
        return bool(await self._lease(keys=[self._lease_key], args=[node, int(ttl * 1000)]))

    async def totals(self) -> dict[str, int]:
        flat = await self._totals(keys=[self._nodes], args=[int(time.time() * 1000), self._stem])
        totals: dict[str, int] = {}
        for i in range(0, len(flat), 2):
            channel = flat[i].decode()
            totals[channel] = totals.get(channel, 0) + int(flat[i + 1])
        return totals

    async def close(self) -> None:
        await self._client.aclose()
