"""The redis:// broker's pub/sub link on a real Redis: subscription races and a flapping link.

Issue 13 defect 6 (subscribe, unsubscribe, subscribe before Redis confirms) and the broker
half of defect 16 (the reconnect back-off resets only after the link stayed up a while).
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

import redis

from realtime.brokers import redis_layout
from realtime.brokers.link import Backoff
from realtime.brokers.redis import RedisBroker
from realtime.envelope import Envelope, Event
from tests.conftest import free_port
from tests.reliability.conftest import PrivateRedis


def make_broker(url: str, prefix: str) -> RedisBroker:
    return RedisBroker(url, prefix, history_size=100, history_ttl=600, meta_ttl=3600)


async def started(broker: RedisBroker, events: list[Event]) -> list[bool]:
    health: list[bool] = []
    await broker.start(events.append, health.append)
    for _ in range(200):
        if broker.healthy:
            return health
        await asyncio.sleep(0.02)
    raise AssertionError(f"broker did not connect: {broker.status}")


def test_subscribe_unsubscribe_subscribe_before_confirmation(redis_url: str, prefix: str) -> None:
    """The second subscribe sends its own SUBSCRIBE: Redis ends subscribed, events arrive."""

    async def scenario() -> tuple[int, list[int]]:
        broker = make_broker(redis_url, prefix)
        events: list[Event] = []
        await started(broker, events)
        check = redis.Redis.from_url(redis_url)
        key = redis_layout.pubsub_channel(prefix, "contest:6")
        try:
            first = asyncio.create_task(broker.subscribe("contest:6"))
            await asyncio.sleep(0)  # SUBSCRIBE written, Redis has not answered yet
            await broker.unsubscribe("contest:6")
            await broker.subscribe("contest:6")
            await first
            await asyncio.sleep(0.2)  # every reply of the three commands is in
            numsub = dict(check.pubsub_numsub(key))[key.encode()]
            for i in range(3):
                await broker.publish(Envelope("contest:6", "t", b"%d" % i))
            for _ in range(100):
                if len(events) >= 3:
                    break
                await asyncio.sleep(0.02)
            return int(numsub), [e.offset for e in events]
        finally:
            check.close()
            await broker.close()

    numsub, offsets = asyncio.run(scenario())
    assert numsub == 1
    assert offsets == [1, 2, 3]


def test_racing_subscribe_churn_ends_in_the_right_state(redis_url: str, prefix: str) -> None:
    """Seeded random subscribe/unsubscribe bursts without waiting: Redis matches the broker."""

    async def scenario(seed: int) -> None:
        rng = random.Random(seed)
        broker = make_broker(redis_url, prefix)
        await started(broker, [])
        check = redis.Redis.from_url(redis_url)
        names = [f"contest:{seed}-{i}" for i in range(4)]
        try:
            tasks = []
            for _ in range(40):
                name = rng.choice(names)
                if rng.random() < 0.5:
                    tasks.append(asyncio.create_task(broker.subscribe(name)))
                else:
                    await broker.unsubscribe(name)
                if rng.random() < 0.3:
                    await asyncio.sleep(0)
            await asyncio.gather(*tasks)
            await asyncio.sleep(0.2)
            keys = [redis_layout.pubsub_channel(prefix, n) for n in names]
            numsub = {k.decode(): int(v) for k, v in check.pubsub_numsub(*keys)}
            wanted = {
                redis_layout.pubsub_channel(prefix, n): int(n in broker._link.channels)
                for n in names
            }
            assert numsub == wanted, f"seed {seed}"
        finally:
            check.close()
            await broker.close()

    for seed in range(8):
        asyncio.run(scenario(seed))


def test_backoff_grows_on_a_link_that_never_stays_up() -> None:
    """Pure logic: the delays keep growing across short-lived connects, and reset after a
    stable period."""
    now = [0.0]
    random.seed(16)
    backoff = Backoff(minimum=0.5, maximum=30.0, stable=10.0, clock=lambda: now[0])
    caps = []
    for _ in range(7):
        backoff.connected()
        now[0] += 0.1  # dropped again at once
        caps.append(backoff.next_delay())
    assert max(caps[-3:]) > 2.0  # the cap doubled: 0.5, 1, 2, 4, 8, 16, 30
    backoff.connected()
    now[0] += 10.0  # this time the link held
    assert backoff.next_delay() <= 0.5


def test_flapping_link_backs_off(tmp_path: Path) -> None:
    """CLIENT KILL of the pub/sub connection each time it comes back: reconnects slow down.

    Before the fix the back-off restarted at 0.25-0.5 s on every connect, so 8 s of killing
    gave 16 or more reconnects; with growing delays it is a handful.
    """
    server = PrivateRedis(free_port(), tmp_path / "redis.log")
    server.start()
    try:
        reconnects = asyncio.run(flap(server, seconds=8.0))
    finally:
        server.stop()
    assert 2 <= reconnects <= 9, reconnects


async def flap(server: PrivateRedis, seconds: float) -> int:
    random.seed(1613)
    broker = make_broker(server.url, "rtt:flap:")
    health: list[bool] = await started(broker, [])
    await broker.subscribe("contest:16")
    killer = redis.Redis(port=server.port)
    name = broker.connection_name
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            await asyncio.to_thread(kill_by_name, killer, name)
            await asyncio.sleep(0.02)
        assert health.count(False) >= 2  # the node was told of every loss
        return broker.reconnects
    finally:
        killer.close()
        await broker.close()


def kill_by_name(client: Any, name: str) -> None:
    for info in client.client_list():
        if info.get("name") == name:
            client.client_kill_filter(_id=info["id"])
