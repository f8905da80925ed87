"""Two server nodes on a real 3-primary + 3-replica Redis Cluster (issue 17).

Sharded pub/sub: the publish script ends with SPUBLISH on the channel's shard, each node
holds one SSUBSCRIBE link per primary that owns a slot of its channels. Cases: events from
the bridge and the HTTP API on channels of every shard; a primary SIGKILLed while events
flow; a live channel's slot resharded to another primary while events flow.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest

from django_bridge import conf
from django_bridge.transports import RedisTransport
from realtime.brokers.redis_cluster import channel_slot
from realtime.envelope import Envelope
from tests.chaos.publisher import PublishLog
from tests.cluster.flow import (
    Recorder,
    Watchers,
    channels_per_shard,
    cluster_client,
    guarantee,
    publish_for,
    settle,
    store_reader,
    wait_healthy,
)
from tests.cluster.redis_procs import RedisCluster3x2
from tests.conftest import ServerProcess
from tests.guarantee.checker import Violation, format_violations

pytestmark = pytest.mark.broker


@pytest.fixture
def cprefix() -> str:
    return f"rtc:{uuid.uuid4().hex[:8]}:"


def two_nodes(server_factory: Any, cluster: RedisCluster3x2, prefix: str) -> list[ServerProcess]:
    return [
        server_factory(broker_url=cluster.url, redis_prefix=prefix, history_size="1000")
        for _ in range(2)
    ]


def bridge(url: str, prefix: str) -> RedisTransport:
    raw = {**conf.DEFAULTS, "BROKER_URL": url, "PREFIX": prefix, "HISTORY_SIZE": 1000}
    return RedisTransport(conf._parse(raw))


def shard_subscriptions(cluster: RedisCluster3x2, prefix: str) -> dict[int, dict[str, int]]:
    """For each primary: its shard channels of this prefix and their subscriber counts."""
    out: dict[int, dict[str, int]] = {}
    for port in cluster.primaries():
        client = cluster.proc(port).client()
        names = client.execute_command("PUBSUB", "SHARDCHANNELS", f"{prefix}*")
        counts = client.execute_command("PUBSUB", "SHARDNUMSUB", *names) if names else []
        out[port] = {
            name: int(counts[i + 1])
            for i in range(0, len(counts), 2)
            # every node also listens to the operators' control channel (realtime.admin)
            if (name := counts[i].decode()[len(prefix) + 1 : -1]) != "rtadmin:control"
        }
    return out


def test_two_nodes_every_shard_bridge_and_http(
    redis_cluster: RedisCluster3x2, server_factory: Any, cprefix: str
) -> None:
    """Every event once, in order, same offsets on both nodes; each shard carries only its own
    channels (PUBSUB SHARDNUMSUB on each primary)."""
    shards = channels_per_shard(redis_cluster.owner_port, cprefix, per_shard=3)
    channels = [name for names in shards.values() for name in names]
    servers = two_nodes(server_factory, redis_cluster, cprefix)
    transport = bridge(redis_cluster.url, cprefix)

    async def scenario() -> list[Recorder]:
        recorders = [await Recorder.open(s.ws_url, channels) for s in servers for _ in range(2)]
        for i in range(10):
            # the bridge: one pipelined batch over every shard
            await asyncio.to_thread(
                transport.send,
                [Envelope(name, "t", b'{"bridge":%d}' % i) for name in channels],
            )
            # the HTTP API, alternating nodes
            servers[i % 2].publish(
                *[{"channel": n, "type": "t", "data": {"api": i}} for n in channels]
            )
        await settle(recorders)
        for rec in recorders:
            await rec.close()
        return recorders

    recorders = asyncio.run(scenario())
    positions = transport.positions(channels)  # the bridge's read, pipelined over the shards
    transport.close()
    for name in channels:
        # the last epoch the client was told: subscribed before the first event (epoch "0"),
        # then the unasked notice of the epoch that event started
        told = [e for kind, _, e in recorders[0].log[name] if kind in ("subscribed", "resync")]
        assert positions[name] == (told[-1], 20), name
        seen = [[(o, d) for kind, o, d in r.log[name] if kind == "event"] for r in recorders]
        assert [o for o, _ in seen[0]] == list(range(1, 21)), name
        assert all(s == seen[0] for s in seen), name  # same offsets and data on both nodes
    subs = shard_subscriptions(redis_cluster, cprefix)
    for port, names in shards.items():
        assert subs[port] == {n: 2 for n in names}, (port, subs[port])  # two nodes, own only
    # what realtime_check compares: the kind and the prefix of the store
    info = json.loads(servers[0].get("/api/info")[1])
    assert (info["broker"], info["store"], info["redis_prefix"]) == (
        "redis+cluster",
        "redis+cluster",
        cprefix,
    )


def _restart_dead(cluster: RedisCluster3x2) -> None:
    for proc in cluster.procs:
        if not proc.alive:
            proc.start()  # rejoins as a replica of the promoted one (nodes.conf kept)
    cluster.wait_ok(timeout=60)


async def _through_outage(servers: list[ServerProcess], statuses: list[int]) -> None:
    """Poll /healthz until it was 503 (no primary for a shard) and is 200 again."""
    deadline = asyncio.get_running_loop().time() + 45
    while asyncio.get_running_loop().time() < deadline:
        statuses.append((await asyncio.to_thread(servers[0].get, "/healthz"))[0])
        if 503 in statuses and statuses[-1] == 200:
            break
        await asyncio.sleep(0.1)
    await wait_healthy(servers)


def _report(violations: list[Violation], watchers: Watchers) -> str:
    return format_violations(violations, watchers.histories)


def test_primary_killed_while_events_flow(
    redis_cluster: RedisCluster3x2, server_factory: Any, cprefix: str
) -> None:
    """SIGKILL a primary mid-stream: its replica takes over, nodes follow, and every client
    ends with every event or a resync notice (the delivery-guarantee checker)."""
    shards = channels_per_shard(redis_cluster.owner_port, cprefix, per_shard=2)
    channels = [name for names in shards.values() for name in names]
    servers = two_nodes(server_factory, redis_cluster, cprefix)
    victim = redis_cluster.proc(next(iter(shards)))
    watchers = Watchers(servers, channels)
    log = PublishLog()
    statuses: list[int] = []
    subs: dict[int, dict[str, int]] = {}
    client = cluster_client(redis_cluster.url)
    read = store_reader(client, cprefix)

    async def scenario() -> None:
        await watchers.start()
        stop = asyncio.Event()
        publishing = asyncio.ensure_future(publish_for(servers, channels, log, stop))
        await asyncio.sleep(1.0)
        victim.kill()
        await _through_outage(servers, statuses)
        await asyncio.sleep(1.0)  # events keep flowing on the healed cluster
        stop.set()
        await publishing
        await watchers.settle(read, channels)
        # while the clients are still subscribed (closing them releases the channels)
        subs.update(shard_subscriptions(redis_cluster, cprefix))
        await watchers.stop()

    try:
        asyncio.run(scenario())
        assert log.gave_up == 0 and log.ok > 50, (log.ok, log.failed, log.gave_up)
        assert 503 in statuses, statuses  # a shard had no primary for a while
        # the replica took over the victim's slots while events flowed
        assert redis_cluster.owner_port(channel_slot(cprefix, shards[victim.port][0])) != (
            victim.port
        )
        published, violations = guarantee(log, watchers, read, channels)
        assert not violations, _report(violations, watchers)
        assert {p["channel"] for p in published} == set(channels)
    finally:
        client.close()
        _restart_dead(redis_cluster)


def test_live_channel_resharded_while_events_flow(
    redis_cluster: RedisCluster3x2, server_factory: Any, cprefix: str
) -> None:
    """Move a live channel's slot to another primary mid-stream: the nodes re-subscribe on
    the new owner and no event is lost silently (the delivery-guarantee checker)."""
    shards = channels_per_shard(redis_cluster.owner_port, cprefix, per_shard=1)
    channels = [name for names in shards.values() for name in names]
    moving = channels[0]
    slot = channel_slot(cprefix, moving)
    source = redis_cluster.owner_port(slot)
    target = next(p for p in shards if p != source)
    servers = two_nodes(server_factory, redis_cluster, cprefix)
    watchers = Watchers(servers, channels)
    log = PublishLog()
    subs: dict[int, dict[str, int]] = {}
    client = cluster_client(redis_cluster.url)
    read = store_reader(client, cprefix)

    async def scenario() -> None:
        await watchers.start()
        stop = asyncio.Event()
        publishing = asyncio.ensure_future(publish_for(servers, channels, log, stop))
        await asyncio.sleep(1.0)
        await asyncio.to_thread(redis_cluster.migrate_slot, slot, source, target)
        await asyncio.sleep(1.0)
        stop.set()
        await publishing
        await watchers.settle(read, channels)
        # while the clients are still subscribed (closing them releases the channels)
        subs.update(shard_subscriptions(redis_cluster, cprefix))
        await watchers.stop()

    try:
        asyncio.run(scenario())
        assert log.gave_up == 0 and log.ok > 50, (log.ok, log.failed, log.gave_up)
        assert redis_cluster.owner_port(slot) == target
        _, violations = guarantee(log, watchers, read, channels)
        assert not violations, _report(violations, watchers)
        assert subs[target].get(moving) == 2 and moving not in subs[source], subs
    finally:
        client.close()
        # give the slot back so the session's cluster keeps its original layout
        if redis_cluster.owner_port(slot) == target:
            redis_cluster.migrate_slot(slot, target, source)
