"""publish() against a real server on real Redis: commit, rollback, outages, transports."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import redis
from bridge_helpers import RealtimeOverride, RealtimeServer, WsClient, free_port, unique_channel
from django.db import transaction
from django.test import Client

from django_bridge import publish, realtime_token
from django_bridge.transports import get_transport
from realtime.brokers.redis_layout import channel_keys
from realtime.errors import BrokerUnavailable

pytestmark = pytest.mark.django_db(transaction=True)


def _offset(client: redis.Redis, prefix: str, channel: str) -> int:
    return int(client.hget(channel_keys(prefix, channel)[0], "offset") or 0)


@pytest.fixture
def ws(bridge_server: RealtimeServer) -> Any:
    client = WsClient(bridge_server.ws_url)
    yield client
    client.close()


def test_publish_outside_transaction_is_delivered(
    realtime_settings: RealtimeOverride, ws: WsClient
) -> None:
    """Outside a transaction, publish sends at once and a subscriber receives the event."""
    channel = unique_channel()
    ws.subscribe(channel)
    publish(channel, "contest.note", {"n": 1})
    [event] = ws.events(channel, 1)
    assert (event["offset"], event["type"], event["data"]) == (1, "contest.note", {"n": 1})


def test_publish_waits_for_commit(
    realtime_settings: RealtimeOverride, ws: WsClient, redis_client: redis.Redis
) -> None:
    """Inside atomic() nothing is stored before the commit; the event arrives after it."""
    channel = unique_channel()
    ws.subscribe(channel)
    prefix = realtime_settings["PREFIX"]
    with transaction.atomic():
        publish(channel, "contest.note", {"n": 1})
        assert _offset(redis_client, prefix, channel) == 0
    assert _offset(redis_client, prefix, channel) == 1
    [event] = ws.events(channel, 1)
    assert event["data"] == {"n": 1}


def test_publish_never_sent_on_rollback(
    realtime_settings: RealtimeOverride, ws: WsClient, redis_client: redis.Redis
) -> None:
    """A rolled-back transaction's event is never stored nor delivered."""
    channel = unique_channel()
    ws.subscribe(channel)
    with pytest.raises(RuntimeError), transaction.atomic():
        publish(channel, "contest.note", {"n": "rolled back"})
        raise RuntimeError("abort")
    publish(channel, "contest.note", {"n": "after"})
    [event] = ws.events(channel, 1)
    assert (event["offset"], event["data"]) == (1, {"n": "after"})
    assert _offset(redis_client, realtime_settings["PREFIX"], channel) == 1


def test_broker_down_keeps_request_working(
    realtime_settings: RealtimeOverride, caplog: pytest.LogCaptureFixture
) -> None:
    """With the broker unreachable a view that publishes still answers 200; the loss is logged."""
    realtime_settings["BROKER_URL"] = f"redis://127.0.0.1:{free_port()}/0"
    realtime_settings["TIMEOUT"] = 0.5
    with caplog.at_level(logging.WARNING, logger="django_bridge"):
        response = Client().get(f"/publish/{unique_channel()}/")
    assert response.status_code == 200
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and "realtime publish failed" in errors[0].getMessage()
    retries = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(retries) == realtime_settings.get("RETRIES", 3)


def test_raise_on_error_raises(realtime_settings: RealtimeOverride) -> None:
    """RAISE_ON_ERROR turns the logged failure into BrokerUnavailable."""
    realtime_settings.update(
        BROKER_URL=f"redis://127.0.0.1:{free_port()}/0", RAISE_ON_ERROR=True, RETRIES=1
    )
    with pytest.raises(BrokerUnavailable):
        publish(unique_channel(), "contest.note", {})


def test_http_transport_delivers(
    realtime_settings: RealtimeOverride, ws: WsClient, bridge_server: RealtimeServer
) -> None:
    """The http:// transport publishes through /api/publish to a subscriber."""
    realtime_settings["BROKER_URL"] = bridge_server.http_url
    channel = unique_channel()
    ws.subscribe(channel)
    publish(channel, "contest.http", {"via": "http"})
    publish(channel, "contest.http", {"via": "http", "n": 2})
    events = ws.events(channel, 2)
    assert [e["offset"] for e in events] == [1, 2]
    assert events[1]["data"] == {"via": "http", "n": 2}


def test_http_transport_reuses_connection(
    realtime_settings: RealtimeOverride, bridge_server: RealtimeServer
) -> None:
    """Successive publishes in one thread share one keep-alive HTTP connection."""
    realtime_settings["BROKER_URL"] = bridge_server.http_url
    publish(unique_channel(), "t", 1)
    conn = get_transport().inner._conn  # type: ignore[attr-defined]
    publish(unique_channel(), "t", 2)
    assert conn is not None and get_transport().inner._conn is conn  # type: ignore[attr-defined]


def test_duplicate_envelope_id_delivered_once(
    realtime_settings: RealtimeOverride, ws: WsClient
) -> None:
    """A retried send (same envelope id) is stored and delivered once."""
    channel = unique_channel()
    ws.subscribe(channel)
    publish(channel, "t", {"n": 1}, envelope_id="same-id")
    publish(channel, "t", {"n": 1}, envelope_id="same-id")
    publish(channel, "t", {"n": 2})
    events = ws.events(channel, 2)
    assert [(e["offset"], e["data"]["n"]) for e in events] == [(1, 1), (2, 2)]


def test_token_accepted_by_server(
    realtime_settings: RealtimeOverride, bridge_server: RealtimeServer
) -> None:
    """A realtime_token grants its submission channel and the user's own channel."""
    token = realtime_token(1001, channels=["submission:9001"], ttl=60)
    client = WsClient(bridge_server.ws_url, token=token)
    try:
        assert client.subscribe("submission:9001")["channel"] == "submission:9001"
        assert client.subscribe("user:1001")["channel"] == "user:1001"
        client.send({"op": "subscribe", "channel": "submission:9002"})
        reply = client.next(lambda m: m.get("channel") == "submission:9002")
        assert (reply["op"], reply["code"]) == ("error", "forbidden")
    finally:
        client.close()
