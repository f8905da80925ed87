"""amqp:// with a Redis store: /healthz follows the store too, not only the AMQP link."""

from __future__ import annotations

import json
from typing import Any

from tests.reliability.conftest import PrivateRedis, wait_for


def test_healthz_reports_an_unreachable_store(
    amqp_url: str, exchange: str, server_factory: Any, private_redis: PrivateRedis
) -> None:
    """Store down: 503 naming the store, publish 503; store back: 200 and publishing works."""
    server = server_factory(
        broker_url=amqp_url,
        amqp_exchange=exchange,
        redis_url=private_redis.url,
    )
    envelope = {"channel": "contest:1", "type": "t", "data": 1}
    assert server.publish(envelope)["results"][0]["offset"] == 1
    private_redis.stop()
    wait_for(lambda: server.get("/healthz")[0] == 503, timeout=10)
    status, body = server.get("/healthz")
    assert status == 503 and "redis store unreachable" in json.loads(body)["reason"]
    private_redis.start()
    wait_for(lambda: server.get("/healthz")[0] == 200, timeout=10)
    # a fresh store: the channel starts over in a new epoch
    assert server.publish(envelope)["results"][0]["offset"] == 1
