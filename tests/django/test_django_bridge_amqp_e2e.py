"""The amqp:// transport end to end: bridge -> RabbitMQ -> realtime server -> WebSocket."""

from __future__ import annotations

from collections.abc import Iterator

import bridge_sample_settings as sample
import pytest
from bridge_helpers import RealtimeOverride, WsClient, start_server, unique_channel
from django.db import transaction

from django_bridge import publish
from tests.conftest import AMQP_URL, require_service

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(params=["node-store", "redis-store"])
def amqp_realtime(
    request: pytest.FixtureRequest, realtime_settings: RealtimeOverride, exchange: str
) -> Iterator[WsClient]:
    """A server on RabbitMQ (with or without the Redis store) and the bridge pointed at it."""
    url = require_service(AMQP_URL, 5672)
    env = {"REALTIME_BROKER_URL": url, "REALTIME_AMQP_EXCHANGE": exchange}
    settings = {"BROKER_URL": url, "EXCHANGE": exchange, "REDIS_URL": None}
    if request.param == "redis-store":
        env.update(REALTIME_REDIS_URL=sample.REDIS_URL, REALTIME_REDIS_PREFIX=sample.REDIS_PREFIX)
        settings["REDIS_URL"] = sample.REDIS_URL
    server = start_server(env)
    realtime_settings.update(**settings)
    client = WsClient(server.ws_url)
    try:
        yield client
    finally:
        client.close()
        server.stop()


def test_amqp_transport_delivers_in_order_on_commit(amqp_realtime: WsClient) -> None:
    """Events published over AMQP reach a subscriber in order, after the commit only."""
    channel = unique_channel()
    amqp_realtime.subscribe(channel)
    with transaction.atomic():
        publish(channel, "contest.amqp", {"n": 1})
        publish(channel, "contest.amqp", {"n": 2}, state=True)
    with pytest.raises(RuntimeError), transaction.atomic():
        publish(channel, "contest.amqp", {"n": "rolled back"})
        raise RuntimeError("rollback")
    publish(channel, "contest.amqp", {"n": 3})
    events = amqp_realtime.events(channel, 3)
    assert [e["data"]["n"] for e in events] == [1, 2, 3]
    assert [e["offset"] for e in events] == [1, 2, 3]
