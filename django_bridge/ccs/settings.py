"""Where the followed contests live: the bridge's leaderboard Redis, ``CCS_PREFIX``."""

from __future__ import annotations

import redis
from django.core.exceptions import ImproperlyConfigured

from django_bridge.ccs.store import DEFAULT_PREFIX


def ccs_redis_url() -> str:
    """Return ``LEADERBOARD_REDIS_URL`` (else ``REDIS_URL``, else a redis ``BROKER_URL``).

    Raises:
        ImproperlyConfigured: no Redis URL is configured.
    """
    from django_bridge.conf import raw_settings

    raw = raw_settings()
    url = raw.get("LEADERBOARD_REDIS_URL") or raw.get("REDIS_URL")
    broker = str(raw.get("BROKER_URL") or "")
    if not url and broker.startswith(("redis://", "rediss://")):
        url = broker
    if not url:
        raise ImproperlyConfigured("REALTIME['LEADERBOARD_REDIS_URL'] (or REDIS_URL) is required")
    return str(url)


def ccs_redis() -> redis.Redis:
    """Return a client of the followed contests' Redis."""
    return redis.Redis.from_url(ccs_redis_url())


def ccs_prefix() -> str:
    """Return ``REALTIME['CCS_PREFIX']`` (default ``ccs:``)."""
    from django_bridge.conf import raw_settings

    return str(raw_settings().get("CCS_PREFIX") or DEFAULT_PREFIX)
