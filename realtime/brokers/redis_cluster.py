"""``redis+cluster://``: Redis Cluster with sharded pub/sub (SPUBLISH / SSUBSCRIBE).

Each channel's keys and its pub/sub channel share one hash tag, hence one slot. The publish
script runs on the shard that owns that slot and ends with SPUBLISH, so each shard carries
only its own slots' events and capacity grows with the number of shards.

The node holds one sharded pub/sub link per primary that owns a slot of its channels. The
slot map is read from the cluster (``CLUSTER SLOTS``) at start, every few seconds, and at
once when a link reports a change: a link lost (a primary died), a MOVED reply, or an
unrequested ``sunsubscribe`` (Redis sends it when a slot moves away). Channels whose slot
changed owner are unsubscribed from the old link and subscribed on the new one; the node is
then handed the channel's latest stored event so that its gap detection re-reads whatever
was published while the channel was moving. The broker is healthy while the slot map is
known and every link that carries channels is up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.exceptions import RedisError

from realtime.brokers import redis_layout, redis_urls
from realtime.brokers.base import EventCallback, HealthCallback
from realtime.brokers.link import LinkHealth
from realtime.brokers.redis import RedisStore, RedisStoreBroker, store_client
from realtime.brokers.redis_pubsub import (
    Address,
    PubSubConnection,
    PubSubLink,
    fixed,
)
from realtime.brokers.redis_urls import RedisTarget
from realtime.errors import BrokerUnavailable

logger = logging.getLogger(__name__)

SLOTS = 16384


def cluster_client(target: RedisTarget) -> RedisCluster:
    """A cluster client: scripts go to their keys' shard; MOVED/ASK are followed."""
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
        username=target.username,
        password=target.password,
        ssl=target.tls,
        socket_timeout=5,
        socket_connect_timeout=3,
        max_connections=32,
    )


def channel_slot(prefix: str, channel: str) -> int:
    """The cluster slot of a realtime channel (its keys and its pub/sub channel)."""
    return int(key_slot(redis_layout.pubsub_channel(prefix, channel).encode()))


async def read_slot_map(
    nodes: list[Address], target: RedisTarget, name: str
) -> list[Address | None]:
    """Ask the first node that answers for ``CLUSTER SLOTS``; return owner per slot.

    Raises:
        BrokerUnavailable: no node answered with a slot map.
    """
    errors: list[str] = []
    for node in nodes:
        conn = PubSubConnection(node, target, name)
        try:
            await conn.connect()
            reply = await conn.call("CLUSTER", "SLOTS")
        except (RedisError, OSError, TimeoutError) as exc:
            errors.append(f"{node[0]}:{node[1]}: {exc or type(exc).__name__}")
            continue
        finally:
            await conn.close()
        owners: list[Address | None] = [None] * SLOTS
        for entry in reply:
            start, end, primary = int(entry[0]), int(entry[1]), entry[2]
            host = primary[0].decode() if isinstance(primary[0], bytes) else str(primary[0])
            address = (host or node[0], int(primary[1]))
            owners[start : end + 1] = [address] * (end - start + 1)
        return owners
    raise BrokerUnavailable("redis cluster: no node answered: " + "; ".join(errors[-3:]))


class RedisClusterBroker(RedisStoreBroker):
    """Sharded pub/sub links per primary plus ``RedisStore`` on a cluster client."""

    REFRESH_INTERVAL = 5.0
    REFRESH_WHILE_DOWN = 0.5

    def __init__(
        self,
        url: str,
        prefix: str,
        history_size: int,
        history_ttl: int,
        meta_ttl: int,
    ) -> None:
        self._prefix = prefix
        self._target = redis_urls.parse(url)
        self._client = store_client(url)
        self._store = RedisStore(
            self._client, prefix, history_size, history_ttl, meta_ttl, sharded=True
        )
        self._health = LinkHealth("redis cluster", url, logger)
        self._on_event: EventCallback | None = None
        self._seeds = list(self._target.nodes)
        self._owners: list[Address | None] = []
        self._map_error: str | None = "connecting"
        self._channels: dict[str, Address | None] = {}  # channel -> the link carrying it
        self._links: dict[Address, PubSubLink] = {}
        self._refresh = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.moves = 0

    # -- status ---------------------------------------------------------------------

    def assignment(self) -> dict[str, Address | None]:
        """Which primary's link carries each channel (None: not assigned yet)."""
        return dict(self._channels)

    def _update_health(self) -> None:
        if self._map_error is not None:
            self._health.down(self._map_error)
            return
        # a link still making its first attempt is not down (yet): no flap on a new shard
        down = [a for a, link in self._links.items() if link.channels and link.failing]
        if down:
            host, port = down[0]
            self._health.down(f"redis cluster: shard {host}:{port} unreachable")
        elif not self._health.healthy:
            self._health.up()

    # -- lifecycle ------------------------------------------------------------------

    async def start(self, on_event: EventCallback, on_health: HealthCallback) -> None:
        """Read the slot map and keep it current in the background."""
        self._on_event = on_event
        self._health.bind(on_health)
        self._task = asyncio.get_running_loop().create_task(self._maintain(), name="rc-map")

    async def close(self) -> None:
        """Stop every link and the map task; close the store client."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in list(self._tasks):
            task.cancel()
        for link in list(self._links.values()):
            await link.close()
        self._links.clear()
        self._health.closed()
        await self._client.aclose()

    async def _maintain(self) -> None:
        while True:
            self._refresh.clear()
            try:
                self._owners = await read_slot_map(
                    self._nodes_to_ask(), self._target, self.connection_name + ":map"
                )
                self._map_error = None
                self._reassign()
            except asyncio.CancelledError:
                raise
            except BrokerUnavailable as exc:
                self._map_error = str(exc)
            except Exception:
                logger.exception("redis cluster map refresh failed")
                self._map_error = "redis cluster map error"
            self._update_health()
            wait = self.REFRESH_INTERVAL if self._health.healthy else self.REFRESH_WHILE_DOWN
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._refresh.wait(), wait)

    def _nodes_to_ask(self) -> list[Address]:
        known = {a for a in self._owners if a is not None}
        return sorted(known) + [s for s in self._seeds if s not in known]

    def _owner(self, channel: str) -> Address | None:
        if not self._owners:
            return None
        return self._owners[channel_slot(self._prefix, channel)]

    def _reassign(self) -> None:
        """Move every channel to the link of its slot's current primary."""
        for channel, current in list(self._channels.items()):
            owner = self._owner(channel)
            if owner == current:
                continue
            if current is not None and current in self._links:
                self._links[current].unsubscribe(channel)
            self._channels[channel] = owner
            if owner is not None:
                self.moves += current is not None
                self._spawn(self._follow(channel, owner, moved=current is not None))
        for address, link in list(self._links.items()):
            if not link.channels:
                del self._links[address]
                self._spawn(link.close())

    async def _follow(self, channel: str, owner: Address, moved: bool) -> None:
        await self._link(owner).subscribe(channel)
        if moved and self._channels.get(channel) == owner:
            await self._nudge(channel)

    async def _nudge(self, channel: str) -> None:
        """Hand the node the channel's latest stored event after a move.

        Events published while the channel was moving reached no link; the node drops the
        event if it has it, and otherwise sees the gap and fills it from history.
        """
        try:
            snap = await self._store.snapshot(channel, 1)
        except BrokerUnavailable as exc:
            logger.warning("redis cluster: cannot re-check %s after a move: %s", channel, exc)
            return
        if snap.history and self._on_event is not None and channel in self._channels:
            self._on_event(snap.history[-1])

    def _link(self, address: Address) -> PubSubLink:
        link = self._links.get(address)
        if link is None:
            port = address[1]
            link = self._links[address] = PubSubLink(
                locate=fixed(address),
                target=self._target,
                name=f"{self.connection_name}:{port}",
                prefix=self._prefix,
                sharded=True,
                on_event=self._deliver,
                on_up=self._update_health,
                on_down=self._link_down,
                on_moved=self._moved,
            )
            link.start()
        return link

    def _link_down(self, status: str) -> None:
        self._refresh.set()  # a primary may have died: look for its successor
        self._update_health()

    def _moved(self, why: str) -> None:
        logger.info("redis cluster: %s; re-reading the slot map", why)
        self._refresh.set()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the Broker interface -------------------------------------------------------

    async def subscribe(self, channel: str) -> None:
        """SSUBSCRIBE on the link of the slot's primary; wait until it confirms."""
        if channel in self._channels:
            return
        owner = self._owner(channel)
        self._channels[channel] = owner
        if owner is not None:
            await self._link(owner).subscribe(channel)
        else:
            self._refresh.set()  # assigned as soon as the slot map is known

    async def unsubscribe(self, channel: str) -> None:
        """SUNSUBSCRIBE (idempotent); a link left without channels is closed."""
        if channel not in self._channels:
            return
        owner = self._channels.pop(channel)
        link = self._links.get(owner) if owner is not None else None
        if link is not None:
            link.unsubscribe(channel)
            if not link.channels and owner is not None:
                del self._links[owner]
                await link.close()
