"""The outbox and its relay: events survive a broker outage and go out in order, once."""

from __future__ import annotations

import threading

import pytest
from bridge_helpers import RealtimeOverride, RealtimeServer, WsClient, free_port, unique_channel
from django.core.management import call_command
from django.db import connection, transaction

from django_bridge import publish
from django_bridge.models import OutboxEvent
from django_bridge.relay import pending_count, relay_batch

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def outbox(realtime_settings: RealtimeOverride) -> RealtimeOverride:
    realtime_settings.update(OUTBOX=True, OUTBOX_BATCH=25)
    return realtime_settings


def test_outbox_row_written_in_transaction(outbox: RealtimeOverride) -> None:
    """publish() with OUTBOX writes a row that a rollback removes again."""
    with pytest.raises(RuntimeError), transaction.atomic():
        publish(unique_channel(), "t", {"n": 1})
        assert OutboxEvent.objects.count() == 1
        raise RuntimeError("abort")
    assert OutboxEvent.objects.count() == 0


def test_relay_delivers_in_order_after_outage(
    outbox: RealtimeOverride, bridge_server: RealtimeServer
) -> None:
    """100 events published while the broker was unreachable all arrive, in order."""
    channel = unique_channel()
    good_url = outbox["BROKER_URL"]
    outbox["BROKER_URL"] = f"redis://127.0.0.1:{free_port()}/0"  # the outage
    for n in range(100):
        with transaction.atomic():
            publish(channel, "contest.tick", {"n": n})
    with pytest.raises(Exception, match="broker unavailable"):
        call_command("realtime_relay", "--once")
    assert pending_count() == 100
    ws = WsClient(bridge_server.ws_url)
    try:
        ws.subscribe(channel)
        outbox["BROKER_URL"] = good_url  # the broker is back
        call_command("realtime_relay", "--once")
        events = ws.events(channel, 100)
    finally:
        ws.close()
    assert [e["data"]["n"] for e in events] == list(range(100))
    assert [e["offset"] for e in events] == list(range(1, 101))
    assert pending_count() == 0


def test_concurrent_relays_send_each_event_once_in_order(
    outbox: RealtimeOverride, bridge_server: RealtimeServer
) -> None:
    """Three relays running at once deliver every event exactly once, in publish order."""
    channel = unique_channel()
    for n in range(60):
        publish(channel, "contest.tick", {"n": n})
    ws = WsClient(bridge_server.ws_url)
    errors: list[BaseException] = []

    def relay() -> None:
        try:
            while pending_count():
                relay_batch(batch=5)
        except BaseException as exc:  # reported to the test thread
            errors.append(exc)
        finally:
            connection.close()

    try:
        ws.subscribe(channel)
        threads = [threading.Thread(target=relay) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        events = ws.events(channel, 60)
        with pytest.raises(TimeoutError):
            ws.next(lambda m: m["op"] == "event", timeout=0.3)
    finally:
        ws.close()
    assert not errors
    assert [e["data"]["n"] for e in events] == list(range(60))
