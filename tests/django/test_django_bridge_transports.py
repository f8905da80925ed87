"""Transport details: AMQP wire format on a real RabbitMQ, fork safety of connections."""

from __future__ import annotations

import multiprocessing
import os
import uuid
from collections.abc import Iterator
from typing import Any

import bridge_sample_settings as sample
import orjson
import pytest
from bridge_helpers import RealtimeOverride, RealtimeServer, WsClient, unique_channel

from django_bridge import publish
from django_bridge.transports import get_transport
from tests.conftest import AMQP_URL, require_service

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def amqp_queue(realtime_settings: RealtimeOverride) -> Iterator[tuple[Any, str, str]]:
    """A unique exchange (deleted afterwards) with an exclusive queue bound to everything."""
    import pika

    url = require_service(AMQP_URL, 5672)
    exchange = f"rt-bridge-test-{uuid.uuid4().hex[:8]}"
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.exchange_declare(exchange=exchange, exchange_type="topic", durable=True)
    queue = channel.queue_declare(queue="", exclusive=True).method.queue
    channel.queue_bind(queue=queue, exchange=exchange, routing_key="#")
    realtime_settings.update(BROKER_URL=url, EXCHANGE=exchange)
    try:
        yield channel, queue, exchange
    finally:
        channel.exchange_delete(exchange=exchange)
        connection.close()


def _get(channel: Any, queue: str) -> tuple[Any, Any, bytes]:
    for _ in range(100):
        method, props, body = channel.basic_get(queue=queue, auto_ack=True)
        if method is not None:
            return method, props, body
        channel.connection.sleep(0.05)
    raise TimeoutError("no AMQP message")


def test_amqp_transport_publishes_envelope(amqp_queue: tuple[Any, str, str]) -> None:
    """amqp:// publishes a persistent JSON envelope routed by the channel name."""
    channel, queue, _ = amqp_queue
    name = unique_channel()
    publish(name, "contest.amqp", {"n": 1}, state=True)
    method, props, body = _get(channel, queue)
    assert method.routing_key == name
    assert (props.content_type, props.delivery_mode) == ("application/json", 2)
    decoded = orjson.loads(body)
    assert decoded["v"] == 1 and decoded["channel"] == name and decoded["state"] is True
    assert decoded["data"] == {"n": 1} and decoded["id"] == props.message_id


def test_amqp_with_redis_store_assigns_offsets(
    amqp_queue: tuple[Any, str, str], realtime_settings: RealtimeOverride
) -> None:
    """amqp:// + REDIS_URL stores in Redis first and publishes the event with its offset."""
    channel, queue, _ = amqp_queue
    realtime_settings.update(REDIS_URL=sample.REDIS_URL)
    name = unique_channel()
    publish(name, "t", {"n": 1})
    publish(name, "t", {"n": 2})
    bodies = [orjson.loads(_get(channel, queue)[2]) for _ in range(2)]
    assert [b["offset"] for b in bodies] == [1, 2]
    assert bodies[0]["epoch"] == bodies[1]["epoch"]
    assert bodies[1]["event"] == {
        "op": "event",
        "channel": name,
        "offset": 2,
        "type": "t",
        "data": {"n": 2},
    }


def _child_publish(channel: str, parent_transport_id: int, out: Any) -> None:
    transport = get_transport()
    publish(channel, "t", {"from": "child"})
    out.put((id(transport) != parent_transport_id, os.getpid()))


def test_forked_child_uses_its_own_connection(
    realtime_settings: RealtimeOverride, bridge_server: RealtimeServer
) -> None:
    """A forked worker builds its own transport; parent and child both deliver."""
    realtime_settings["BROKER_URL"] = bridge_server.http_url
    name = unique_channel()
    ws = WsClient(bridge_server.ws_url)
    try:
        ws.subscribe(name)
        publish(name, "t", {"from": "parent"})
        ctx = multiprocessing.get_context("fork")
        out = ctx.Queue()
        child = ctx.Process(target=_child_publish, args=(name, id(get_transport()), out))
        child.start()
        new_transport, child_pid = out.get(timeout=10)
        child.join(timeout=10)
        publish(name, "t", {"from": "parent again"})
        events = ws.events(name, 3)
    finally:
        ws.close()
    assert new_transport and child_pid != os.getpid()
    assert [e["data"]["from"] for e in events] == ["parent", "child", "parent again"]
