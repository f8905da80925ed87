"""Watcher counts: how many connections watch a channel, summed over every node.

No join/leave fan-out. Every ``interval`` seconds each node writes its local subscriber
counts (channels of namespaces with ``presence``) to a shared store with a TTL; one node at
a time holds a lease in the store, sums every live node's counts and publishes each total
that changed as the state of ``presence:<channel>`` (type ``presence.count``, data
``{"channel": C, "count": N}``). A page shows "1,234 watching" from that channel; a count
lags by up to two intervals, and a node that dies drops out when its TTL ends.

Event loop only; no Tornado and no broker client here (the Redis store is in
``brokers/redis_presence.py``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Mapping
from typing import Protocol

import orjson

from realtime.config import Settings
from realtime.envelope import Envelope
from realtime.node import Node

logger = logging.getLogger(__name__)

NAMESPACE = "presence"
EVENT_TYPE = "presence.count"


class PresenceStore(Protocol):
    """Where nodes meet: their counts, a lease for the one that publishes, the totals."""

    async def report(self, node: str, counts: Mapping[str, int], ttl: float) -> None:
        """Replace this node's counts; they expire after ``ttl`` seconds."""

    async def lease(self, node: str, ttl: float) -> bool:
        """Take or renew the publishing lease for ``ttl`` seconds; True when held."""

    async def totals(self) -> dict[str, int]:
        """Return the counts of every live node, summed per channel."""

    async def close(self) -> None:
        """Release connections."""


class LocalPresenceStore:
    """The store of a single process (``memory://``): its own counts are the totals."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    async def report(self, node: str, counts: Mapping[str, int], ttl: float) -> None:
        self._counts = dict(counts)

    async def lease(self, node: str, ttl: float) -> bool:
        return True

    async def totals(self) -> dict[str, int]:
        return dict(self._counts)

    async def close(self) -> None:
        return None


def presence_channel(channel: str) -> str:
    """Return the channel that carries ``channel``'s watcher count."""
    return f"{NAMESPACE}:{channel}"


class Presence:
    """Report this node's counts and, while holding the lease, publish the totals."""

    def __init__(self, node: Node, store: PresenceStore, interval: float) -> None:
        self._node = node
        self._store = store
        self._interval = interval
        self._id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._published: dict[str, int] = {}
        self._counted = {name for name, ns in node.settings.namespaces.items() if ns.presence}

    def local_counts(self) -> dict[str, int]:
        """Return this node's subscriber count of each counted channel."""
        return self._node.hub.counts(lambda ch: ch.split(":", 1)[0] in self._counted)

    async def tick(self) -> None:
        """Report once; publish the totals that changed if this node holds the lease."""
        ttl = 3 * self._interval
        await self._store.report(self._id, self.local_counts(), ttl)
        if not await self._store.lease(self._id, 2 * self._interval):
            self._published = {}  # another node publishes; start afresh if we take over
            return
        totals = await self._store.totals()
        for channel in sorted(set(totals) | set(self._published)):
            count = totals.get(channel, 0)
            if self._published.get(channel) == count:
                continue
            data = orjson.dumps({"channel": channel, "count": count})
            # straight to the broker: realtime_published_total counts what publishers send
            await self._node.broker.publish(
                Envelope(presence_channel(channel), EVENT_TYPE, data, state=True)
            )
            if count:
                self._published[channel] = count
            else:
                self._published.pop(channel, None)  # zero published once, then forgotten

    async def run(self) -> None:
        """Tick every interval until cancelled; log and back off on store errors."""
        delay = self._interval
        while True:
            try:
                await self.tick()
                delay = self._interval
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a store or broker outage: counts wait, pages still work
                logger.warning("presence: %s", exc)
                delay = min(max(delay * 2, 0.5), 30.0)
            await asyncio.sleep(delay)

    async def close(self) -> None:
        """Release the store."""
        await self._store.close()


def create_presence(settings: Settings, node: Node) -> Presence | None:
    """Return the presence loop for these settings, or None when it cannot count.

    Counts are shared through Redis (the ``redis://`` broker, or ``redis_url`` with AMQP);
    a ``memory://`` server counts alone. AMQP without Redis has no shared store: no counts.
    """
    if settings.presence_interval <= 0 or not any(
        ns.presence for ns in settings.namespaces.values()
    ):
        return None
    if NAMESPACE not in settings.namespaces:
        logger.info("presence: no [namespaces.%s]: watcher counts are off", NAMESPACE)
        return None
    from realtime.brokers.redis_urls import is_redis_url  # parsing only, no client

    url = settings.redis_url
    if is_redis_url(settings.broker_url):  # one Redis, a cluster or sentinels
        url = settings.broker_url
    if url:
        from realtime.brokers.redis_presence import RedisPresenceStore

        store: PresenceStore = RedisPresenceStore(url, settings.redis_prefix)
    elif settings.broker_url.startswith("memory"):
        store = LocalPresenceStore()
    else:
        logger.info("presence: an amqp:// broker without redis_url cannot count watchers")
        return None
    return Presence(node, store, settings.presence_interval)
