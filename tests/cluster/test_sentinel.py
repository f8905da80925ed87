"""A server and the bridge on ``redis+sentinel://`` (1 primary, 1 replica, 3 sentinels).

The primary is SIGKILLed while events flow: the sentinels promote the replica, /healthz is
503 while there is no primary, the nodes follow the new one, and every client ends with
every event or a resync notice. And a promotion that loses acknowledged writes (the replica
was cut off from the replication stream): the nodes notice the rollback and renew the epoch.
Both are checked with the delivery-guarantee checker (``tests.guarantee.checker``).
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from typing import Any

import pytest

from django_bridge import conf
from django_bridge.transports import RedisTransport
from realtime.envelope import Envelope
from tests.chaos.publisher import PublishLog, publish_burst
from tests.cluster.flow import (
    Recorder,
    Watchers,
    guarantee,
    publish_for,
    settle,
    store_reader,
    stored,
    wait_healthy,
)
from tests.cluster.redis_procs import SentinelSetup, _call
from tests.conftest import ServerProcess
from tests.guarantee.checker import check, format_violations

pytestmark = pytest.mark.broker


@pytest.fixture
def sprefix() -> str:
    return f"rts:{uuid.uuid4().hex[:8]}:"


def test_server_and_bridge_find_the_primary(
    sentinel_setup: SentinelSetup, server_factory: Any, sprefix: str
) -> None:
    """Events from the bridge and the HTTP API reach a client; the store is the primary's."""
    server = server_factory(broker_url=sentinel_setup.url, redis_prefix=sprefix)
    raw = {**conf.DEFAULTS, "BROKER_URL": sentinel_setup.url, "PREFIX": sprefix}
    transport = RedisTransport(conf._parse(raw))

    async def scenario() -> list[int]:
        rec = await Recorder.open(server.ws_url, ["contest:s1"])
        await asyncio.to_thread(
            transport.send, [Envelope("contest:s1", "t", b"%d" % i) for i in range(5)]
        )
        server.publish(*[{"channel": "contest:s1", "type": "t", "data": i} for i in range(5)])
        await settle([rec], quiet=0.5)
        await rec.close()
        return rec.offsets("contest:s1")

    assert asyncio.run(scenario()) == list(range(1, 11))
    assert transport.check().startswith("redis at ")
    transport.close()
    primary = sentinel_setup.primary_proc().client()
    assert stored(primary, sprefix, "contest:s1")[0] == 10
    assert server.get("/healthz")[0] == 200


def _two_nodes(server_factory: Any, setup: SentinelSetup, prefix: str) -> list[ServerProcess]:
    return [
        server_factory(broker_url=setup.url, redis_prefix=prefix, history_size="1000")
        for _ in range(2)
    ]


def test_primary_killed_while_events_flow(
    sentinel_setup: SentinelSetup, server_factory: Any, sprefix: str
) -> None:
    """SIGKILL the primary: 503 while none, then the promoted replica; every client ends with
    every event or a resync notice (the delivery-guarantee checker)."""
    channels = [f"contest:s{i}" for i in range(4)]
    servers = _two_nodes(server_factory, sentinel_setup, sprefix)
    victim = sentinel_setup.primary_proc()
    watchers = Watchers(servers, channels)
    log = PublishLog()
    statuses: list[int] = []

    async def scenario() -> None:
        await watchers.start()
        stop = asyncio.Event()
        publishing = asyncio.ensure_future(publish_for(servers, channels, log, stop))
        await asyncio.sleep(1.0)
        victim.kill()
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline:
            statuses.append((await asyncio.to_thread(servers[0].get, "/healthz"))[0])
            if 503 in statuses and statuses[-1] == 200:
                break
            await asyncio.sleep(0.1)
        await wait_healthy(servers)
        await asyncio.sleep(1.0)  # events keep flowing on the promoted replica
        stop.set()
        await publishing
        read = store_reader(sentinel_setup.primary_proc().client(), sprefix)
        await watchers.settle(read, channels)
        await watchers.stop()

    try:
        asyncio.run(scenario())
        assert log.gave_up == 0 and log.ok > 50, (log.ok, log.failed, log.gave_up)
        assert 503 in statuses, statuses  # no primary for a while
        assert sentinel_setup.primary_port() != victim.port
        read = store_reader(sentinel_setup.primary_proc().client(), sprefix)
        _, violations = guarantee(log, watchers, read, channels)
        assert not violations, format_violations(violations, watchers.histories)
    finally:
        victim.start()  # the sentinels make it a replica of the new primary
        sentinel_setup.wait_replicated(timeout=30)


def test_promotion_that_lost_acknowledged_writes_is_a_resync(
    sentinel_setup: SentinelSetup, server_factory: Any, sprefix: str
) -> None:
    """The sentinels promote a replica that lacks events the primary acknowledged and the
    clients received: the nodes notice the store went back (offset below what they had
    delivered), renew the channel's epoch, and every client gets a resync notice; no
    silent gap, no offset reused with other content."""
    channels = [f"contest:r{i}" for i in range(3)]
    servers = _two_nodes(server_factory, sentinel_setup, sprefix)
    old, replica = sentinel_setup.primary_proc(), sentinel_setup.replica_proc()
    watchers = Watchers(servers, channels, per_server=2)
    log = PublishLog()
    rng = random.Random(17)
    positions: dict[str, tuple[str | None, int, int]] = {}  # epoch, replicated, acknowledged

    def urls() -> list[str]:
        return [s.url for s in servers]

    async def publish(count: int) -> None:
        for channel in channels:
            await publish_burst(urls, channel, count, 20, rng, log)

    async def scenario() -> None:
        await watchers.start()
        await publish(5)
        # the replica has every event so far, then stops receiving the replication stream
        assert _call(old.client(), "WAIT", "1", "5000") == 1
        replicated = {c: store_reader(old.client(), sprefix)(c) for c in channels}
        replica.pause()
        _call(old.client(), "CLIENT", "KILL", "TYPE", "replica")  # nothing left in transit
        await publish(4)  # acknowledged by the primary alone
        read_old = store_reader(old.client(), sprefix)
        await watchers.settle(read_old, channels, limit=10)
        for channel in channels:
            epoch, events = read_old(channel)
            positions[channel] = (epoch, replicated[channel][1][-1]["offset"], events[-1]["offset"])
        assert watchers.caught_up(read_old, channels)  # the clients hold the doomed events
        old.kill()
        replica.resume()
        deadline = time.monotonic() + 40
        while sentinel_setup.primary_port() != replica.port:
            assert time.monotonic() < deadline, "the sentinels did not promote the replica"
            await asyncio.sleep(0.2)
        # every client is told to resync, in a new epoch, before anything more is published
        while not all(
            sub.epoch not in (None, positions[sub.channel][0])
            for c in watchers.clients
            for sub in c.subs.values()
        ):
            assert time.monotonic() < deadline, "no resync notice after the promotion"
            await asyncio.sleep(0.2)
        await publish(3)
        await watchers.settle(store_reader(replica.client(), sprefix), channels)
        await watchers.stop()

    try:
        asyncio.run(scenario())
        read = store_reader(replica.client(), sprefix)
        published, violations = guarantee(log, watchers, read, channels)
        assert not violations, format_violations(violations, watchers.histories)
        for channel in channels:
            epoch, replicated, acknowledged = positions[channel]
            assert acknowledged == replicated + 4
            renewed = [p for p in published if p["channel"] == channel and "renewed_from" in p]
            assert renewed == [
                {
                    "channel": channel,
                    "epoch": read(channel)[0],
                    "renewed_from": epoch,
                    "offset": replicated,
                }
            ], renewed
            for client in watchers.clients:
                notices = [
                    r
                    for r in client.history
                    if r["kind"] == "subscribed" and r["channel"] == channel and not r["asked"]
                ]
                assert [(n["offset"], n["recovered"]) for n in notices[-1:]] == [
                    (replicated, False)
                ], notices
        # without the renewal the log says the offsets were reused with other content:
        # the checker must then find the clients' rolled-back events
        reused = [p for p in published if "renewed_from" not in p]
        for channel in channels:
            epoch = positions[channel][0]
            for p in reused:
                if p["channel"] == channel and p["epoch"] != epoch:
                    p["epoch"] = epoch
        assert check(reused, watchers.histories, settled=True)
    finally:
        replica.resume()
        if not old.alive:
            old.start()  # the sentinels make it a replica of the new primary
        sentinel_setup.wait_replicated(timeout=30)
