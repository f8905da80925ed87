"""Versioned state: the store keeps the highest-versioned state whatever the publish order.

The same seeded shuffles run against the in-process store and against the Redis publish
script (real Redis, unique prefix); an HTTP publish to a real server checks the wire field.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import orjson
import pytest
import redis

from realtime.brokers import redis_layout
from realtime.brokers.memory_store import MemoryStore
from realtime.envelope import Envelope, envelope_from_obj
from realtime.errors import PublishError
from tests.client import Client
from tests.conftest import ServerProcess

SEEDS = range(12)


def _shuffled(seed: int) -> list[Envelope]:
    """Versions 1..30 of a board, with unversioned non-state events mixed in, shuffled."""
    rng = random.Random(seed)
    items = [
        Envelope("leaderboard:9", "board", orjson.dumps({"v": v}), state=True, version=v)
        for v in range(1, 31)
    ]
    items += [Envelope("leaderboard:9", "note", orjson.dumps({"n": n})) for n in range(5)]
    rng.shuffle(items)
    return items


def _expected_delivered(items: list[Envelope]) -> list[int]:
    """Versions that must be stored and delivered: each one above every earlier one."""
    best, kept = 0, []
    for env in items:
        if env.version is not None and env.version > best:
            best = env.version
            kept.append(env.version)
    return kept


@pytest.mark.parametrize("seed", SEEDS)
def test_memory_store_keeps_the_newest_state_in_any_order(seed: int) -> None:
    """Whatever the order, the state is version 30 and older states are never delivered."""
    store = MemoryStore(history_size=100, history_ttl=600)
    items = _shuffled(seed)
    delivered = []
    for env in items:
        published, event = store.publish(env)
        if event is None:
            assert published.duplicate and env.version is not None
        elif env.version is not None:
            delivered.append(orjson.loads(event.json)["data"]["v"])
    assert delivered == _expected_delivered(items)
    state = store.snapshot("leaderboard:9", 0).state
    assert state is not None and orjson.loads(state)["data"] == {"v": 30}


@pytest.mark.parametrize("seed", SEEDS)
def test_redis_script_keeps_the_newest_state_in_any_order(
    seed: int, redis_url: str, prefix: str
) -> None:
    """The publish script compares versions: same outcome as the memory store."""
    client = redis.Redis.from_url(redis_url)
    script = client.register_script(redis_layout.PUBLISH_SCRIPT)
    items = _shuffled(seed)
    delivered = []
    try:
        for i, env in enumerate(items):
            keys, args = redis_layout.envelope_args(
                prefix, env, history_size=100, history_ttl=60, meta_ttl=60, now_ms=i
            )
            _, _, duplicate, event = script(keys=keys, args=args)
            if duplicate:
                assert duplicate == 2 and env.version is not None and event == b""
            elif env.version is not None:
                delivered.append(orjson.loads(event)["data"]["v"])
        assert delivered == _expected_delivered(items)
        _, _, state_key = redis_layout.channel_keys(prefix, "leaderboard:9")
        assert orjson.loads(client.get(state_key))["data"] == {"v": 30}
    finally:
        client.close()


def test_old_callers_without_a_version_still_publish(redis_url: str, prefix: str) -> None:
    """The version argument is optional: an 11-argument call replaces the state as before."""
    client = redis.Redis.from_url(redis_url)
    script = client.register_script(redis_layout.PUBLISH_SCRIPT)
    try:
        for n in (1, 2):
            env = Envelope("contest:1", "t", orjson.dumps({"n": n}), state=True)
            keys, args = redis_layout.envelope_args(
                prefix, env, history_size=10, history_ttl=60, meta_ttl=60, now_ms=0
            )
            assert len(args) == 11
            assert script(keys=keys, args=args)[1] == n
        state = client.get(redis_layout.channel_keys(prefix, "contest:1")[2])
        assert orjson.loads(state)["data"] == {"n": 2}
    finally:
        client.close()


@pytest.mark.parametrize(
    "obj",
    [
        {"version": "3", "state": True},
        {"version": True, "state": True},
        {"version": -1, "state": True},
        {"version": 2**53, "state": True},
        {"version": 3},
    ],
)
def test_bad_versions_are_refused(obj: dict[str, Any]) -> None:
    """A version is an integer below 2**53, only on a state event."""
    with pytest.raises(PublishError):
        envelope_from_obj({"channel": "contest:1", "type": "t", "data": None, **obj})


def test_http_publish_passes_the_version(memory_server: ServerProcess) -> None:
    """Over the HTTP API an older board published last neither replaces the state nor arrives."""

    async def scenario() -> None:
        async with await Client.open(memory_server.ws_url) as c:
            await c.subscribe("contest:3")
            memory_server.publish(
                {"channel": "contest:3", "type": "b", "data": 2, "state": True, "version": 2}
            )
            memory_server.publish(
                {"channel": "contest:3", "type": "b", "data": 1, "state": True, "version": 1}
            )
            memory_server.publish({"channel": "contest:3", "type": "b", "data": 0})
            events = await c.events(2)
            assert [e["data"] for e in events] == [2, 0]
        async with await Client.open(memory_server.ws_url) as late:
            sub = await late.subscribe("contest:3")
            assert sub["state"]["data"] == 2

    asyncio.run(scenario())
