"""Two server nodes on one broker, clients spread over both, no sticky sessions."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.client import Client
from tests.conftest import REDIS_URL, ServerProcess, require_service

CLIENTS_PER_NODE = 3
EVENTS = 12


def _broker_settings(kind: str, prefix: str) -> dict[str, str]:
    if kind == "redis":
        return {"broker_url": require_service(REDIS_URL, 6379), "redis_prefix": prefix}
    if importlib.util.find_spec("realtime.brokers.rabbitmq") is None:
        message = "realtime/brokers/rabbitmq.py is not there yet"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    from tests.conftest import AMQP_URL

    return {
        "broker_url": require_service(AMQP_URL, 5672),
        "amqp_exchange": f"rtt-{uuid.uuid4().hex[:10]}",
        # offsets, history and state live in Redis; the events travel over AMQP
        "redis_url": require_service(REDIS_URL, 6379),
        "redis_prefix": prefix,
    }


@pytest.fixture(params=["redis", "rabbitmq"])
def two_nodes(
    request: Any, server_factory: Any, prefix: str
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Two independent server processes on the same broker."""
    settings = _broker_settings(request.param, prefix)
    yield server_factory(**settings), server_factory(**settings)
    if "amqp_exchange" in settings:  # the exchange is durable: do not leave it behind
        with contextlib.suppress(Exception):
            import pika

            conn = pika.BlockingConnection(pika.URLParameters(settings["broker_url"]))
            conn.channel().exchange_delete(exchange=settings["amqp_exchange"])
            conn.close()


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
        for i in range(3, 6):
            b.publish({"channel": "contest:6", "type": "t", "data": {"i": i}})
        async with await Client.open(b.ws_url) as c:
            return await c.subscribe("contest:6", since={"epoch": epoch, "offset": last})

    reply = asyncio.run(scenario())
    assert reply["op"] == "subscribed" and reply["recovered"] is True, reply
    assert [(e["offset"], e["data"]["i"]) for e in reply["missed"]] == [(4, 3), (5, 4), (6, 5)]
