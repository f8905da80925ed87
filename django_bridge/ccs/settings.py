"""Where the followed contests live: the bridge's leaderboard Redis, ``CCS_PREFIX``."""

from __future__ import annotations

import redis
from django.core.exceptions import ImproperlyConfigured

from django_bridge import redis_client
from django_bridge.ccs.store import DEFAULT_PREFIX


def ccs_redis_url() -> str:
    """Return ``LEADERBOARD_REDIS_URL`` (else ``REDIS_URL``, else a redis ``BROKER_URL``).

    Raises:
        ImproperlyConfigured: no Redis URL is configured.
    """
    from django_bridge.conf import raw_settings

    url = redis_client.standings_url(raw_settings())
    if not url:
        raise ImproperlyConfigured("REALTIME['LEADERBOARD_REDIS_URL'] (or REDIS_URL) is required")
    return url


def ccs_redis() -> redis.Redis:
    """Return a client of the followed contests' Redis (one Redis, sentinels or a cluster:
    a contest's keys share one hash slot)."""
    client: redis.Redis = redis_client.connect(ccs_redis_url(), redis_client.STANDINGS_TIMEOUT)
    return client


def ccs_prefix() -> str:
    """Return ``REALTIME['CCS_PREFIX']`` (default ``ccs:``)."""
    from django_bridge.conf import raw_settings

    return str(raw_settings().get("CCS_PREFIX") or DEFAULT_PREFIX)
