"""The redis:// broker against the real Redis: recovery, ordering, gaps, two nodes."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import redis

from realtime.brokers import redis_layout
from tests.client import Client
from tests.conftest import ServerProcess, free_port


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def publish_direct(
    url: str,
    prefix: str,
    channel: str,
    count: int,
    start: int = 0,
    lost: frozenset[int] = frozenset(),
) -> None:
    """Publish like any publisher without the bridge: one script call per event.

    Events numbered in ``lost`` are stored but not PUBLISHed: a pub/sub message dropped.
    """
    client = redis.Redis.from_url(url)
    script = client.register_script(redis_layout.PUBLISH_SCRIPT)
    pipe = client.pipeline(transaction=False)
    for i in range(start, start + count):
        keys, args = redis_layout.publish_args(
            prefix,
            channel=channel,
            type_="t",
            data_json=json.dumps({"i": i}).encode(),
            state=False,
            envelope_id=None,
            history_size=100,
            history_ttl=600,
            meta_ttl=3600,
            now_ms=int(time.time() * 1000),
            do_publish=i not in lost,
        )
        script(keys=keys, args=args, client=pipe)
    pipe.execute()
    client.close()


def test_ordering_under_1000_rapid_publishes(
    redis_server: ServerProcess, redis_url: str, prefix: str
) -> None:
    """1,000 events published back to back arrive complete, in order, without duplicates."""

    async def scenario() -> list[int]:
        async with await Client.open(redis_server.ws_url) as c:
            await c.subscribe("contest:7")
            await asyncio.to_thread(publish_direct, redis_url, prefix, "contest:7", 1000)
            return [e["offset"] for e in await c.events(1000, timeout=20)]

    assert run(scenario()) == list(range(1, 1001))


def test_recovery_with_since_and_state(
    redis_server: ServerProcess, redis_url: str, prefix: str
) -> None:
    """A client that comes back with since gets exactly what it missed; late joiners get state."""

    async def scenario() -> None:
        async with await Client.open(redis_server.ws_url) as c:
            sub = await c.subscribe("contest:8")
            epoch = sub["epoch"]
            redis_server.publish(
                *[{"channel": "contest:8", "type": "t", "data": i} for i in range(5)]
            )
            assert [e["offset"] for e in await c.events(5)] == [1, 2, 3, 4, 5]
            # subscribed before the first event: the notice named the epoch it started
            assert epoch == "0"
            epoch = c.epoch_notices["contest:8"]
        # away while 3 more are published, one of them state
        redis_server.publish(
            *[
                {"channel": "contest:8", "type": "t", "data": i, "state": i == 6}
                for i in range(5, 8)
            ]
        )
        async with await Client.open(redis_server.ws_url) as c:
            sub = await c.subscribe("contest:8", since={"epoch": epoch, "offset": 5})
            assert sub["recovered"] is True and sub["epoch"] == epoch
            assert [e["data"] for e in sub["missed"]] == [5, 6, 7]
            assert sub["state"]["offset"] == 7 and sub["offset"] == 8
            stale = await c.subscribe("contest:9", since={"epoch": "gone", "offset": 3})
            assert stale["recovered"] is False and stale["missed"] == []

    run(scenario())


def test_history_that_no_longer_covers_the_gap(
    server_factory: Any, redis_url: str, prefix: str
) -> None:
    """When history was trimmed past since, recovered is false (resync from state)."""
    server = server_factory(broker_url=redis_url, redis_prefix=prefix, history_size="10")

    async def scenario() -> None:
        publish_direct(redis_url, prefix, "contest:3", 30)
        async with await Client.open(server.ws_url) as c:
            sub = await c.subscribe("contest:3", since={"epoch": "x", "offset": 0})
            epoch = sub["epoch"]
            await c.request({"op": "unsubscribe", "channel": "contest:3"})
            sub = await c.subscribe("contest:3", since={"epoch": epoch, "offset": 5})
            assert sub["recovered"] is False and sub["offset"] == 30
            sub2 = await c.subscribe("contest:4", since={"epoch": epoch, "offset": 0})
            assert sub2["recovered"] is True

    run(scenario())


def test_two_nodes_same_events_same_offsets(
    server_factory: Any, redis_url: str, prefix: str
) -> None:
    """Two server processes on one Redis: clients on each get the same events and offsets."""
    a = server_factory(broker_url=redis_url, redis_prefix=prefix)
    b = server_factory(broker_url=redis_url, redis_prefix=prefix)

    async def scenario() -> None:
        async with await Client.open(a.ws_url) as ca, await Client.open(b.ws_url) as cb:
            sa, sb = await ca.subscribe("contest:2"), await cb.subscribe("contest:2")
            assert sa["epoch"] == sb["epoch"]
            for i in range(10):
                (a if i % 2 else b).publish({"channel": "contest:2", "type": "t", "data": i})
            ea, eb = await ca.events(10), await cb.events(10)
            assert ea == eb
            assert [e["offset"] for e in ea] == list(range(1, 11))
            assert [e["data"] for e in ea] == list(range(10))

    run(scenario())


def test_killed_redis_connection_gap_is_filled(
    redis_server: ServerProcess, redis_url: str, prefix: str
) -> None:
    """CLIENT KILL of the node's pub/sub link mid-stream: the gap is filled from history."""
    admin = redis.Redis.from_url(redis_url)

    def kill_subscriber() -> int:
        killed = 0
        for entry in admin.client_list():
            if entry.get("name", "").startswith(f"realtime-sub:{prefix}"):
                killed += admin.client_kill_filter(_id=entry["id"])
        return killed

    async def scenario() -> None:
        async with await Client.open(redis_server.ws_url) as c:
            await c.subscribe("contest:5")
            await asyncio.to_thread(publish_direct, redis_url, prefix, "contest:5", 50)
            assert kill_subscriber() == 1
            # published while the node is disconnected: never reaches it over pub/sub
            await asyncio.to_thread(publish_direct, redis_url, prefix, "contest:5", 50, 50)
            events = await c.events(100, timeout=20)
            assert [e["offset"] for e in events] == list(range(1, 101))
            assert [e["data"]["i"] for e in events] == list(range(100))
            # and the live stream continues after the reconnect
            await asyncio.to_thread(publish_direct, redis_url, prefix, "contest:5", 5, 100)
            assert [e["offset"] for e in await c.events(5)] == [101, 102, 103, 104, 105]

    run(scenario())
    _, body = redis_server.get("/metrics")
    assert b"realtime_broker_reconnects_total 1.0" in body
    admin.close()


def test_lost_pubsub_message_is_filled_without_disconnect(
    redis_server: ServerProcess, redis_url: str, prefix: str
) -> None:
    """An offset that skips ahead (a dropped message) is filled from history before delivery."""

    async def scenario() -> None:
        async with await Client.open(redis_server.ws_url) as c:
            await c.subscribe("contest:6")
            # the 3rd and 4th events' pub/sub messages are "lost"
            await asyncio.to_thread(
                publish_direct, redis_url, prefix, "contest:6", 6, 0, frozenset({2, 3})
            )
            events = await c.events(6)
            assert [e["offset"] for e in events] == [1, 2, 3, 4, 5, 6]
            assert [e["data"]["i"] for e in events] == [0, 1, 2, 3, 4, 5]

    run(scenario())


def test_server_starts_with_redis_down(server_factory: Any) -> None:
    """A broker that does not answer: the server starts, /healthz says 503 with the reason."""
    dead = f"redis://127.0.0.1:{free_port()}/0"
    server = server_factory(broker_url=dead, start=False)
    server.start(wait_healthy=False)
    status, body = server.get("/healthz")
    assert status == 503 and b"broker" in body
    assert server.get("/livez")[0] == 200
