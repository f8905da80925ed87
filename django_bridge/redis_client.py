"""The bridge's Redis clients, for each URL form: one Redis, Sentinel, Redis Cluster.

``connect(url, timeout)`` returns a synchronous redis-py client (also for the standings and
the followed contests: ``standings_url`` picks their URL); ``script(client, text)``
a callable with the ``Script`` signature (``keys=, args=, client=pipe``) that also works in
a cluster pipeline; ``publish_script(url)`` the publish script text for the URL (SPUBLISH
for a cluster). ``TRANSIENT`` lists the errors a retry may fix (failover, resharding).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import (
    ClusterDownError,
    ReadOnlyError,
    RedisClusterException,
    TryAgainError,
)
from redis.sentinel import Sentinel

from realtime.brokers import redis_layout, redis_urls

# a retry may fix these: the link broke, no primary yet, a slot is moving, a demoted primary
TRANSIENT: tuple[type[BaseException], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    OSError,
    ClusterDownError,
    TryAgainError,
    ReadOnlyError,
    RedisClusterException,
)

# anything a Redis (or cluster) call may raise
ANY_ERROR: tuple[type[BaseException], ...] = (redis.RedisError, RedisClusterException, OSError)

ScriptCall = Callable[..., Any]


def is_redis_scheme(scheme: str) -> bool:
    """True for redis, rediss, redis+cluster, rediss+cluster and redis+sentinel."""
    return scheme in redis_urls.REDIS_SCHEMES


def connect(url: str, timeout: float) -> Any:
    """A client for ``url`` (any of the three Redis forms).

    Raises:
        RedisURLError: the URL is not valid (one line).
    """
    target = redis_urls.parse(url)
    if target.kind == "cluster":
        return RedisCluster(
            startup_nodes=[ClusterNode(h, p) for h, p in target.nodes],  # type: ignore[no-untyped-call]
            username=target.username,
            password=target.password,
            ssl=target.tls,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )
    if target.kind == "sentinel":
        assert target.service is not None
        sentinel_kwargs: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
        }
        if target.sentinel_password:
            sentinel_kwargs["password"] = target.sentinel_password
        if target.sentinel_username:
            sentinel_kwargs["username"] = target.sentinel_username
        sentinel = Sentinel(
            list(target.nodes),
            sentinel_kwargs=sentinel_kwargs,
            username=target.username,
            password=target.password,
            db=target.db,
        )
        return sentinel.master_for(
            target.service, socket_timeout=timeout, socket_connect_timeout=timeout
        )
    return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)


# the standings store's calls (a verdict's record script, a page of rows): a failover or a
# slot move may hold one for a few seconds, a dead link must not hang a request forever
STANDINGS_TIMEOUT = 5.0


def standings_url(raw: Mapping[str, Any]) -> str | None:
    """The standings' Redis URL from ``REALTIME``: ``LEADERBOARD_REDIS_URL``, else
    ``REDIS_URL``, else ``BROKER_URL`` when it is a Redis URL of any form; None: none set."""
    url = raw.get("LEADERBOARD_REDIS_URL") or raw.get("REDIS_URL")
    broker = str(raw.get("BROKER_URL") or "")
    if not url and redis_urls.is_redis_url(broker):
        url = broker
    return str(url) if url else None


def where(url: str) -> str:
    """The URL without credentials and options, for messages and logs."""
    return redis_urls.safe(url).split("://", 1)[-1]


def publish_script(url: str) -> str:
    """The publish script for ``url``: it ends with SPUBLISH on a cluster."""
    if redis_urls.parse(url).sharded:
        return redis_layout.SHARDED_PUBLISH_SCRIPT
    return redis_layout.PUBLISH_SCRIPT


def script(client: Any, text: str) -> ScriptCall:
    """Register ``text`` on ``client``; the result is called like redis-py's ``Script``.

    A cluster pipeline cannot load scripts (NOSCRIPT would be left to us, on whichever
    shard a failover just promoted), so there the full text is sent with EVAL.
    """
    registered = client.register_script(text)
    if not isinstance(client, RedisCluster):
        return registered  # type: ignore[no-any-return]

    def call(keys: Sequence[Any] = (), args: Sequence[Any] = (), client: Any = None) -> Any:
        if client is None:
            return registered(keys=keys, args=args)
        return client.execute_command("EVAL", text, len(keys), *keys, *args)

    return call
