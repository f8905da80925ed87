"""Issue 13, defect 2: amqp + REDIS_URL, an event stored but not sent is sent by the retry."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import bridge_sample_settings as sample
import pytest
from bridge_helpers import RealtimeOverride, WsClient, start_server, unique_channel

from django_bridge import publish
from django_bridge.transports import AmqpTransport
from tests.conftest import AMQP_URL, require_service

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def amqp_redis_node(realtime_settings: RealtimeOverride, exchange: str) -> Iterator[WsClient]:
    """A server on RabbitMQ + the Redis store, the bridge pointed at both, and a client."""
    url = require_service(AMQP_URL, 5672)
    server = start_server(
        {
            "REALTIME_BROKER_URL": url,
            "REALTIME_AMQP_EXCHANGE": exchange,
            "REALTIME_REDIS_URL": sample.REDIS_URL,
            "REALTIME_REDIS_PREFIX": sample.REDIS_PREFIX,
        }
    )
    realtime_settings.update(BROKER_URL=url, EXCHANGE=exchange, REDIS_URL=sample.REDIS_URL)
    client = WsClient(server.ws_url)
    try:
        yield client
    finally:
        client.close()
        server.stop()


def _fail_first_publish(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make the next ``basic_publish`` fail (after the Redis store step); return a call log."""
    import pika

    real = AmqpTransport._basic_publish
    calls: list[str] = []

    def flaky(self: AmqpTransport, channel: Any, key: str, body: bytes, props: Any) -> None:
        calls.append(key)
        if len(calls) == 1:
            raise pika.exceptions.AMQPConnectionError("injected: connection lost on publish")
        real(self, channel, key, body, props)

    monkeypatch.setattr(AmqpTransport, "_basic_publish", flaky)
    return calls


def test_retry_sends_an_event_stored_by_the_failed_attempt(
    amqp_redis_node: WsClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A channel's last event arrives live although its first basic_publish failed."""
    channel = unique_channel()
    amqp_redis_node.subscribe(channel)
    publish(channel, "judge.note", {"n": 1})
    calls = _fail_first_publish(monkeypatch)
    publish(channel, "judge.verdict", {"n": 2, "verdict": "AC"}, state=True)
    assert calls == [channel, channel]  # the failed attempt, then the retry's resend
    events = amqp_redis_node.events(channel, 2, timeout=10)
    assert [e["data"]["n"] for e in events] == [1, 2]
    assert [e["offset"] for e in events] == [1, 2]


def test_resent_duplicate_is_dropped_by_offset(amqp_redis_node: WsClient) -> None:
    """Resending an event that did go out delivers it once (the node drops the copy)."""
    channel = unique_channel()
    amqp_redis_node.subscribe(channel)
    publish(channel, "t", {"n": 1}, envelope_id=f"{channel}#one")
    publish(channel, "t", {"n": 1}, envelope_id=f"{channel}#one")  # a relay's resend
    publish(channel, "t", {"n": 2})
    events = amqp_redis_node.events(channel, 2, timeout=10)
    assert [(e["offset"], e["data"]["n"]) for e in events] == [(1, 1), (2, 2)]
    with pytest.raises(TimeoutError):
        amqp_redis_node.next(lambda m: m["op"] == "event", timeout=0.5)
