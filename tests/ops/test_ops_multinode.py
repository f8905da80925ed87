"""Two server nodes on one broker, clients spread over both, no sticky sessions."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.client import Client
from tests.conftest import ServerProcess

CLIENTS_PER_NODE = 3
EVENTS = 12


@pytest.fixture(params=["redis", "rabbitmq"])
def two_nodes(request: Any, redis_url: str, prefix: str) -> tuple[ServerProcess, ServerProcess]:
    """Two independent server processes on the same broker."""
    settings = {"broker_url": redis_url, "redis_prefix": prefix}
    if request.param == "rabbitmq":
        # offsets, history and state live in Redis; the events travel over AMQP
        settings.update(
            broker_url=request.getfixturevalue("amqp_url"),
            amqp_exchange=request.getfixturevalue("exchange"),  # set up first, torn down last
            redis_url=redis_url,
        )
    server_factory = request.getfixturevalue("server_factory")
    return server_factory(**settings), server_factory(**settings)


def test_clients_on_both_nodes_get_the_same_events_and_offsets(
    two_nodes: tuple[ServerProcess, ServerProcess],
) -> None:
    """Events published through either node reach every client of both, same offsets, in order."""
    a, b = two_nodes

    async def scenario() -> list[list[tuple[int, Any]]]:
        clients = [
            await Client.open(node.ws_url) for node in (a, b) for _ in range(CLIENTS_PER_NODE)
        ]
        try:
            for c in clients:
                reply = await c.subscribe("contest:5")
                assert reply["op"] == "subscribed" and reply["offset"] == 0, reply
            for i in range(EVENTS):
                node = a if i % 2 == 0 else b  # the load balancer spreads publishers too
                await asyncio.to_thread(
                    node.publish, {"channel": "contest:5", "type": "t", "data": {"i": i}}
                )
            streams = await asyncio.gather(*(c.events(EVENTS) for c in clients))
            return [[(e["offset"], e["data"]["i"]) for e in s] for s in streams]
        finally:
            for c in clients:
                await c.ws.close()

    streams = asyncio.run(scenario())
    expected = [(i + 1, i) for i in range(EVENTS)]
    assert all(s == expected for s in streams), streams


def test_client_moving_to_the_other_node_recovers_what_it_missed(
    two_nodes: tuple[ServerProcess, ServerProcess],
) -> None:
    """A client that reconnects to the other node resumes with ``since`` and misses nothing."""
    a, b = two_nodes

    async def scenario() -> dict[str, Any]:
        async with await Client.open(a.ws_url) as c:
            epoch = (await c.subscribe("contest:6"))["epoch"]
            for i in range(3):
                a.publish({"channel": "contest:6", "type": "t", "data": {"i": i}})
            last = (await c.events(3))[-1]["offset"]
            epoch = c.epoch_notices.get("contest:6", epoch)  # subscribed before any event
        for i in range(3, 6):
            b.publish({"channel": "contest:6", "type": "t", "data": {"i": i}})
        async with await Client.open(b.ws_url) as c:
            return await c.subscribe("contest:6", since={"epoch": epoch, "offset": last})

    reply = asyncio.run(scenario())
    assert reply["op"] == "subscribed" and reply["recovered"] is True, reply
    assert [(e["offset"], e["data"]["i"]) for e in reply["missed"]] == [(4, 3), (5, 4), (6, 5)]
