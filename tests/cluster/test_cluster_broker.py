"""The cluster broker itself on the real cluster: one link per primary, moves, unsubscribe."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from realtime.brokers import redis_cluster as rc
from realtime.brokers import redis_layout
from realtime.brokers.redis_cluster import RedisClusterBroker, channel_slot
from realtime.envelope import Envelope, Event
from tests.cluster.flow import channels_per_shard
from tests.cluster.redis_procs import RedisCluster3x2, _call

pytestmark = pytest.mark.broker


async def healthy_broker(url: str, prefix: str, events: list[Event]) -> RedisClusterBroker:
    broker = RedisClusterBroker(url, prefix, 100, 600, 3600)
    await broker.start(events.append, lambda _h: None)
    for _ in range(200):
        if broker.healthy:
            return broker
        await asyncio.sleep(0.05)
    raise AssertionError(broker.status)


def shard_numsub(cluster: RedisCluster3x2, port: int, prefix: str, channel: str) -> int:
    key = redis_layout.pubsub_channel(prefix, channel)
    reply = _call(cluster.proc(port).client(), "PUBSUB", "SHARDNUMSUB", key)
    return int(reply[1])


def test_one_link_per_primary_and_unsubscribe(redis_cluster: RedisCluster3x2) -> None:
    """Channels on 3 shards: 3 links; unsubscribing a shard's last channel closes its link."""
    prefix = f"rtb:{uuid.uuid4().hex[:8]}:"
    shards = channels_per_shard(redis_cluster.owner_port, prefix, per_shard=2)

    async def scenario() -> None:
        broker = await healthy_broker(redis_cluster.url, prefix, [])
        try:
            for names in shards.values():
                for name in names:
                    await broker.subscribe(name)
            assert sorted(p for _, p in broker._links) == sorted(shards)
            for port, names in shards.items():
                for name in names:
                    assert shard_numsub(redis_cluster, port, prefix, name) == 1
            port, names = next(iter(shards.items()))
            for name in names:
                await broker.unsubscribe(name)
            await asyncio.sleep(0.2)
            assert port not in [p for _, p in broker._links]
            assert all(shard_numsub(redis_cluster, port, prefix, n) == 0 for n in names)
        finally:
            await broker.close()

    asyncio.run(scenario())


def test_event_published_while_its_slot_moves_reaches_the_node(
    redis_cluster: RedisCluster3x2, monkeypatch: Any
) -> None:
    """Redis drops the subscription when the slot moves; an event published before the
    broker re-subscribes on the new owner is handed to the node all the same."""
    prefix = f"rtb:{uuid.uuid4().hex[:8]}:"
    shards = channels_per_shard(redis_cluster.owner_port, prefix, per_shard=1)
    name = next(iter(shards.values()))[0]
    slot = channel_slot(prefix, name)
    source = redis_cluster.owner_port(slot)
    target = next(p for p in shards if p != source)
    gate = asyncio.Event()
    read = rc.read_slot_map

    async def held(*args: Any) -> Any:
        await gate.wait()  # the broker cannot learn the new owner until we say so
        return await read(*args)

    async def scenario() -> list[Event]:
        events: list[Event] = []
        broker = await healthy_broker(redis_cluster.url, prefix, events)
        try:
            await broker.subscribe(name)
            monkeypatch.setattr(rc, "read_slot_map", held)
            await asyncio.to_thread(redis_cluster.migrate_slot, slot, source, target)
            for _ in range(100):  # Redis unsubscribed us from the old owner
                if shard_numsub(redis_cluster, source, prefix, name) == 0:
                    break
                await asyncio.sleep(0.02)
            await broker.publish(Envelope(name, "t", b"1"))  # on the new owner: no one there
            await asyncio.sleep(0.3)
            assert events == []  # lost from pub/sub
            gate.set()
            for _ in range(100):
                if events:
                    break
                await asyncio.sleep(0.05)
            assert broker.assignment()[name] == ("127.0.0.1", target)
            assert shard_numsub(redis_cluster, target, prefix, name) == 1
            return events
        finally:
            gate.set()
            await broker.close()

    try:
        events = asyncio.run(scenario())
    finally:
        if redis_cluster.owner_port(slot) == target:
            redis_cluster.migrate_slot(slot, target, source)
    assert [(e.channel, e.offset) for e in events] == [(name, 1)]
