"""One end-to-end suite, run against every broker: a case that passes on one and not another
is a bug.

Brokers: ``memory://``, ``redis://`` (unique key prefix), ``amqp://`` (unique exchange,
node-local store) and ``amqp://`` + Redis store. Each case starts a real
``python -m realtime serve`` process and talks to it with real WebSocket clients.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.client import Client
from tests.conftest import ServerProcess, make_token

pytestmark = [pytest.mark.broker, pytest.mark.timeout(60)]

BROKERS = ["memory", "redis", "amqp", "amqp+redis"]


@pytest.fixture(params=BROKERS)
def broker_settings(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """REALTIME_* settings for one broker; shared brokers get a unique prefix/exchange."""
    kind: str = request.param
    settings: dict[str, str] = {}
    if "redis" in kind:
        redis_url = request.getfixturevalue("redis_url")
        prefix = request.getfixturevalue("prefix")
        settings["redis_prefix"] = prefix
        settings["redis_url" if kind.startswith("amqp") else "broker_url"] = redis_url
    if kind.startswith("amqp"):
        amqp_url = request.getfixturevalue("amqp_url")
        exchange = request.getfixturevalue("exchange")  # deleted after the servers stop
        settings.update(broker_url=amqp_url, amqp_exchange=exchange)
    yield settings


@pytest.fixture
def server(broker_settings: dict[str, str], server_factory: Any) -> ServerProcess:
    """A started server on the broker under test."""
    started: ServerProcess = server_factory(**broker_settings)
    return started


def channel(namespace: str = "contest") -> str:
    return f"{namespace}:{uuid.uuid4().hex[:12]}"


async def publish(server: ServerProcess, *envelopes: dict[str, Any]) -> dict[str, Any]:
    """POST envelopes without blocking the event loop the clients read on."""
    return await asyncio.to_thread(server.publish, *envelopes)


def envelope(chan: str, n: int, state: bool = False) -> dict[str, Any]:
    return {"channel": chan, "type": "tick", "data": {"n": n}, "state": state}


def test_subscribe_publish_round_trip(server: ServerProcess) -> None:
    """A subscriber receives a published event with offset 1, its type and its data."""

    async def run() -> None:
        chan = channel()
        async with await Client.open(server.ws_url) as client:
            reply = await client.subscribe(chan)
            assert reply["op"] == "subscribed" and reply["offset"] == 0
            result = await publish(server, envelope(chan, 1))
            assert result["results"][0]["offset"] == 1
            [event] = await client.events(1)
            assert event == {
                "op": "event",
                "channel": chan,
                "offset": 1,
                "type": "tick",
                "data": {"n": 1},
            }

    asyncio.run(run())


def test_rapid_publishes_arrive_in_order(server: ServerProcess) -> None:
    """500 publishes in quick succession arrive once each, in offset order."""

    async def run() -> None:
        chan = channel()
        async with await Client.open(server.ws_url) as client:
            await client.subscribe(chan)
            for batch in range(5):
                await publish(server, *(envelope(chan, batch * 100 + i) for i in range(100)))
            events = await client.events(500, timeout=20)
            assert [e["offset"] for e in events] == list(range(1, 501))
            assert [e["data"]["n"] for e in events] == list(range(500))

    asyncio.run(run())


def test_late_joiner_gets_the_latest_state(server: ServerProcess) -> None:
    """A client subscribing after the fact gets the latest state event and the offset."""

    async def run() -> None:
        chan = channel()
        await publish(server, envelope(chan, 1, state=True), envelope(chan, 2, state=True))
        await publish(server, envelope(chan, 3))
        async with await Client.open(server.ws_url) as client:
            reply = await client.subscribe(chan)
        assert reply["offset"] == 3
        assert reply["state"]["offset"] == 2 and reply["state"]["data"] == {"n": 2}

    asyncio.run(run())


def test_recovery_with_since_returns_missed_events(server: ServerProcess) -> None:
    """A client coming back with ``since`` gets exactly the events it missed."""

    async def run() -> None:
        chan = channel()
        async with await Client.open(server.ws_url) as client:
            first = await client.subscribe(chan)
            await publish(server, envelope(chan, 1), envelope(chan, 2))
            seen = await client.events(2)
            # subscribed before the first event: the notice named the epoch it started
            epoch = client.epoch_notices.get(chan, first["epoch"])
        assert first["epoch"] == "0" and epoch != "0"
        await publish(server, envelope(chan, 3), envelope(chan, 4), envelope(chan, 5))
        since = {"epoch": epoch, "offset": seen[-1]["offset"]}
        async with await Client.open(server.ws_url) as client:
            reply = await client.subscribe(chan, since=since)
        assert reply["recovered"] is True
        assert [e["offset"] for e in reply["missed"]] == [3, 4, 5]
        assert [e["data"]["n"] for e in reply["missed"]] == [3, 4, 5]

    asyncio.run(run())


def test_user_channel_is_only_for_its_owner(server: ServerProcess) -> None:
    """``user:<id>`` refuses no token and another user's token, and serves its owner."""

    async def run() -> None:
        chan = "user:" + uuid.uuid4().hex[:8]
        owner = chan.split(":", 1)[1]
        async with await Client.open(server.ws_url) as anonymous:
            reply = await anonymous.subscribe(chan)
            assert (reply["op"], reply["code"]) == ("error", "unauthorized")
        async with await Client.open(server.ws_url) as other:
            await other.auth(make_token("someone-else"))
            reply = await other.subscribe(chan)
            assert (reply["op"], reply["code"]) == ("error", "forbidden")
        async with await Client.open(server.ws_url) as client:
            await client.auth(make_token(owner))
            assert (await client.subscribe(chan))["op"] == "subscribed"
            await publish(server, {"channel": chan, "type": "note", "data": "hi"})
            [event] = await client.events(1)
            assert event["data"] == "hi"

    asyncio.run(run())


def test_two_clients_see_the_same_offsets(server: ServerProcess) -> None:
    """Two subscribers of one channel receive identical (offset, data) sequences."""

    async def run() -> None:
        chan = channel()
        async with (
            await Client.open(server.ws_url) as one,
            await Client.open(server.ws_url) as two,
        ):
            await one.subscribe(chan)
            await two.subscribe(chan)
            await publish(server, *(envelope(chan, i) for i in range(20)))
            seen_one, seen_two = await asyncio.gather(one.events(20), two.events(20))
        assert [(e["offset"], e["data"]) for e in seen_one] == [
            (e["offset"], e["data"]) for e in seen_two
        ]
        assert [e["offset"] for e in seen_one] == list(range(1, 21))

    asyncio.run(run())
