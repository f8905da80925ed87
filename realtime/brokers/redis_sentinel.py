"""``redis+sentinel://``: the primary is whichever Redis the sentinels name right now.

The store client is redis-py's Sentinel-managed client (it re-asks the sentinels when a
connection to the old primary fails); the pub/sub link asks before each (re)connect. While
no primary answers, the link stays down, so the node reports unhealthy (/healthz 503), and
when the new primary is up the node re-checks every channel from the store.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel

from realtime.brokers.redis_urls import RedisTarget

Address = tuple[str, int]


def sentinels(target: RedisTarget) -> Sentinel:
    """A redis-py ``Sentinel`` for the URL's sentinels and passwords."""
    sentinel_kwargs: dict[str, Any] = {"socket_timeout": 2, "socket_connect_timeout": 2}
    if target.sentinel_password:
        sentinel_kwargs["password"] = target.sentinel_password
    if target.sentinel_username:
        sentinel_kwargs["username"] = target.sentinel_username
    return Sentinel(
        list(target.nodes),
        sentinel_kwargs=sentinel_kwargs,
        username=target.username,
        password=target.password,
        db=target.db,
    )


def sentinel_client(target: RedisTarget) -> aioredis.Redis:
    """A store client of the current primary of ``target.service``."""
    assert target.service is not None
    client: aioredis.Redis = sentinels(target).master_for(
        target.service,
        socket_timeout=5,
        socket_connect_timeout=3,
        max_connections=64,
    )
    return client


def primary_locator(target: RedisTarget) -> Callable[[], Awaitable[Address]]:
    """A ``locate`` for ``PubSubLink``: ask the sentinels for the primary's address.

    Raises (from the returned coroutine) ``MasterNotFoundError`` while there is none.
    """
    assert target.service is not None
    service = target.service
    sentinel = sentinels(target)

    async def locate() -> Address:
        host, port = await sentinel.discover_master(service)
        return str(host), int(port)

    return locate
