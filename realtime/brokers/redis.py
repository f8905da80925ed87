"""The ``redis://`` broker: Redis pub/sub for transport, Redis keys for the channel store.

Also ``redis+sentinel://`` (the pub/sub link asks the sentinels for the primary before each
connect) and, through ``store_client``/``RedisStore``, the store of ``redis+cluster://``
(``redis_cluster``) and of the amqp broker. Layout and scripts: ``redis_layout`` (shared
with the Django bridge); the pub/sub link: ``redis_pubsub``. Pub/sub is at-most-once, so
this module reports every (re)connect to the node through ``on_health``, and the node
compares offsets to find and fill gaps from history.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisClusterException, RedisError

from realtime.brokers import redis_layout, redis_urls
from realtime.brokers.base import EventCallback, HealthCallback, Snapshot
from realtime.brokers.link import LinkHealth
from realtime.brokers.redis_pubsub import Address, PubSubLink, fixed, subscriber_name
from realtime.envelope import Envelope, Event, Published
from realtime.errors import BrokerUnavailable

logger = logging.getLogger(__name__)

# store calls in flight at once: reads (subscribes, recoveries) and writes (publishes) each
# have a share, together no more than the connection pools hold (32; a cluster's per node,
# Sentinel's 64), so a call waits in our queue, never in the pool, whose wait times out
STORE_READS_IN_FLIGHT = 24
STORE_WRITES_IN_FLIGHT = 8


def store_client(url: str) -> Any:
    """A Redis client for store reads and publishes, for any of the three URL forms.

    One Redis: its pool blocks (up to 5 s) when all 32 connections are busy, so a burst of
    store reads waits its turn instead of failing with "Too many connections". Sentinel: a
    client of the current primary that re-asks the sentinels after a failover. Cluster: a
    cluster client that routes each script to the shard of its keys' slot and follows
    MOVED/ASK.

    Raises:
        RedisURLError: the URL is not valid.
    """
    target = redis_urls.parse(url)
    if target.kind == "sentinel":
        from realtime.brokers.redis_sentinel import sentinel_client

        return sentinel_client(target)
    if target.kind == "cluster":
        from realtime.brokers.redis_cluster import cluster_client

        return cluster_client(target)
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=32, timeout=5, socket_connect_timeout=3, socket_timeout=5
    )
    return aioredis.Redis(connection_pool=pool)


class RedisStore:
    """Offsets, history and state in Redis; the publish step is one atomic script.

    Shared by the Redis broker and the AMQP broker (with ``publish_to_pubsub=False``).
    """

    def __init__(
        self,
        client: Any,
        prefix: str,
        history_size: int,
        history_ttl: int,
        meta_ttl: int,
        publish_to_pubsub: bool = True,
        sharded: bool = False,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._history_size = history_size
        self._history_ttl = history_ttl
        self._meta_ttl = meta_ttl
        self._publish_to_pubsub = publish_to_pubsub
        script = redis_layout.SHARDED_PUBLISH_SCRIPT if sharded else redis_layout.PUBLISH_SCRIPT
        self._publish_script = client.register_script(script)
        # bound the calls in flight below the pool's size: the cluster's and Sentinel's pools
        # fail at once when full, and the one-Redis pool's wait times out (5 s) when a herd
        # of subscribes queues thousands of reads; waiting here has no such limit, and a
        # publish never queues behind the reads of a herd
        self._reads = asyncio.Semaphore(STORE_READS_IN_FLIGHT)
        self._writes = asyncio.Semaphore(STORE_WRITES_IN_FLIGHT)
        self._snapshot_script = client.register_script(redis_layout.SNAPSHOT_SCRIPT)
        self._renew_script = client.register_script(redis_layout.RENEW_EPOCH_SCRIPT)

    async def publish(self, envelope: Envelope) -> tuple[Published, Event | None]:
        """Run the publish script; return where it landed and the event (None if duplicate)."""
        keys, args = redis_layout.envelope_args(
            self._prefix,
            envelope,
            history_size=self._history_size,
            history_ttl=self._history_ttl,
            meta_ttl=self._meta_ttl,
            now_ms=int(time.time() * 1000),
            do_publish=self._publish_to_pubsub,
        )
        try:
            async with self._writes:
                reply = await self._publish_script(keys=keys, args=args)
            epoch, offset, duplicate, event_json = reply
        except (RedisError, RedisClusterException, OSError) as exc:
            raise BrokerUnavailable(f"redis: {exc}") from exc
        epoch_s = epoch.decode()
        published = Published(envelope.channel, epoch_s, int(offset), duplicate=bool(duplicate))
        if duplicate:
            return published, None
        return published, Event(envelope.channel, epoch_s, int(offset), bytes(event_json))

    async def snapshot(self, channel: str, history: int) -> Snapshot:
        """Read epoch, offset, state and up to ``history`` newest events in one script."""
        keys = list(redis_layout.channel_keys(self._prefix, channel))
        args: list[str | int] = [
            min(history, self._history_size),
            redis_layout.new_epoch(),
            self._meta_ttl,
        ]
        try:
            async with self._reads:
                reply = await self._snapshot_script(keys=keys, args=args)
        except (RedisError, RedisClusterException, OSError) as exc:
            raise BrokerUnavailable(f"redis: {exc}") from exc
        epoch = reply[0].decode()
        offset = int(reply[1])
        state = bytes(reply[2]) if reply[2] else None
        horizon_ms = (time.time() - self._history_ttl) * 1000
        events: list[Event] = []
        for item in reply[3:]:
            stamp, _, data = bytes(item).partition(b" ")
            if float(stamp) < horizon_ms:
                events.clear()  # older than the TTL: only a suffix of history is usable
                continue
            event_offset = redis_layout.event_offset(data)
            if event_offset is None:
                events.clear()  # not an event we can place: what follows stands alone
                continue
            events.append(Event(channel, epoch, event_offset, data))
        return Snapshot(epoch=epoch, offset=offset, state=state, history=events)

    async def renew_epoch(self, channel: str, epoch: str) -> Snapshot:
        """Give the channel a new epoch if it still has ``epoch`` (see RENEW_EPOCH_SCRIPT)."""
        keys = list(redis_layout.channel_keys(self._prefix, channel))
        try:
            async with self._writes:
                reply = await self._renew_script(keys=keys, args=[epoch, redis_layout.new_epoch()])
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"redis: {exc}") from exc
        state = bytes(reply[2]) if reply[2] else None
        return Snapshot(epoch=reply[0].decode(), offset=int(reply[1]), state=state, history=[])


class RedisStoreBroker:
    """What the Redis brokers share: ``RedisStore`` for publish and reads, link health,
    the pub/sub connection name, and handing events to the node.

    Subclasses set ``_prefix``, ``_store`` and ``_health`` and implement the transport
    (subscribe, unsubscribe, start, close).
    """

    _prefix: str
    _store: RedisStore
    _health: LinkHealth
    _on_event: EventCallback | None = None

    @property
    def healthy(self) -> bool:
        """True while the pub/sub transport is up."""
        return self._health.healthy

    @property
    def status(self) -> str:
        """ "connected" or why not."""
        return self._health.status

    @property
    def reconnects(self) -> int:
        """How many times the transport became healthy again after an outage."""
        return self._health.reconnects

    @property
    def connection_name(self) -> str:
        """The CLIENT SETNAME of the pub/sub connections: realtime-sub:<prefix><pid>."""
        return subscriber_name(self._prefix)

    def _deliver(self, event: Event) -> None:
        if self._on_event is not None:
            self._on_event(event)

    async def publish(self, envelope: Envelope) -> Published:
        """Store and publish in one atomic script (on the channel's shard in a cluster)."""
        published, _ = await self._store.publish(envelope)
        return published

    async def snapshot(self, channel: str, history: int) -> Snapshot:
        """Read the channel's store."""
        return await self._store.snapshot(channel, history)

    async def renew_epoch(self, channel: str, epoch: str) -> Snapshot:
        """Give the channel a new epoch if it still has ``epoch``."""
        return await self._store.renew_epoch(channel, epoch)


class RedisBroker(RedisStoreBroker):
    """Redis pub/sub transport plus ``RedisStore``; reconnects with back-off.

    Serves ``redis://`` and ``redis+sentinel://`` (the link asks the sentinels for the
    primary before each connect, so it follows a failover).
    """

    PING_INTERVAL = PubSubLink.PING_INTERVAL

    def __init__(
        self,
        url: str,
        prefix: str,
        history_size: int,
        history_ttl: int,
        meta_ttl: int,
    ) -> None:
        self._url = url
        self._prefix = prefix
        self._target = redis_urls.parse(url)
        self._client = store_client(url)
        self._store = RedisStore(self._client, prefix, history_size, history_ttl, meta_ttl)
        self._health = LinkHealth(
            "redis sentinel" if self._target.kind == "sentinel" else "redis", url, logger
        )
        self._on_event: EventCallback | None = None
        locate: Callable[[], Awaitable[Address]]
        if self._target.kind == "sentinel":
            from realtime.brokers.redis_sentinel import primary_locator

            locate = primary_locator(self._target)
        else:
            locate = fixed(self._target.nodes[0])
        self._link = PubSubLink(
            locate=locate,
            target=self._target,
            name=self.connection_name,
            prefix=prefix,
            sharded=False,
            on_event=self._deliver,
            on_up=self._health.up,
            on_down=self._health.down,
            idle_channel=prefix + "-",
        )

    @property
    def address(self) -> Address | None:
        """The server the pub/sub connection went to last (the primary, with Sentinel)."""
        return self._link.address

    async def start(self, on_event: EventCallback, on_health: HealthCallback) -> None:
        """Start the listener task; it connects (and reconnects) in the background."""
        self._on_event = on_event
        self._health.bind(on_health)
        self._link.start()

    async def subscribe(self, channel: str) -> None:
        """Subscribe and wait until Redis confirms, so no later publish is missed.

        When the link is down the channel is remembered and subscribed on reconnect;
        the node re-checks every channel for gaps when health returns.
        """
        await self._link.subscribe(channel)

    async def unsubscribe(self, channel: str) -> None:
        """Unsubscribe (idempotent)."""
        self._link.unsubscribe(channel)

    async def close(self) -> None:
        """Stop the listener and close connections."""
        await self._link.close()
        self._health.closed()
        await self._client.aclose()
