"""Issue 13, defect 17: a dead broker makes sends fail fast for a cool-down (circuit breaker).

The broker URL points at a closed port (connection refused), so every attempt fails. Time is
bounded by counting what costs time: attempts that reach for the broker (each at most
``TIMEOUT``) and back-off sleeps (recorded through ``publishing._sleep`` instead of slept).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from bridge_helpers import RealtimeOverride, free_port, unique_channel

from django_bridge import breaker, publish, publishing
from django_bridge.relay import pending_count, relay_batch
from realtime.brokers.redis_layout import channel_keys
from realtime.errors import BrokerUnavailable
from tests.reliability.conftest import PrivateRedis

pytestmark = pytest.mark.django_db(transaction=True)

THRESHOLD = 3


def _closed_url(scheme: str, port: int) -> str:
    return {
        "redis": f"redis://127.0.0.1:{port}/0",
        "amqp": f"amqp://guest:guest@127.0.0.1:{port}/%2F",
        "http": f"http://127.0.0.1:{port}",
    }[scheme]


def _point_at(realtime_settings: RealtimeOverride, url: str, **extra: object) -> None:
    realtime_settings.update(
        BROKER_URL=url,
        REDIS_URL=None,
        RETRIES=3,
        RETRY_BACKOFF=0.01,
        TIMEOUT=1.0,
        BREAKER_THRESHOLD=THRESHOLD,
        BREAKER_COOLDOWN=0.3,
        **extra,
    )


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Back-off sleeps of ``publishing.send``, recorded instead of slept."""
    recorded: list[float] = []
    monkeypatch.setattr(publishing, "_sleep", recorded.append)
    return recorded


def _wait(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def _cooled_down() -> bool:
    stats = breaker.stats()
    return stats.state == "open" and stats.retry_in == 0.0


@pytest.mark.parametrize("scheme", ["redis", "amqp", "http"])
def test_publishes_fail_fast_while_the_broker_is_down(
    scheme: str,
    realtime_settings: RealtimeOverride,
    sleeps: list[float],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """20 publishes to a closed port cost THRESHOLD attempts in all; the rest fail at once."""
    _point_at(realtime_settings, _closed_url(scheme, free_port()))
    lost_before = publishing.lost_events()
    channel = unique_channel()
    with caplog.at_level(logging.WARNING, logger="django_bridge"):
        for n in range(20):
            publish(channel, "t", {"n": n})
    stats = breaker.stats()
    assert stats.failures_total == THRESHOLD  # the only attempts that reached for the broker
    assert len(sleeps) == THRESHOLD - 1  # no back-off once the breaker opened
    assert stats.rejected_total == 19
    assert (stats.state, stats.opened_total) == ("open", 1)
    assert publishing.lost_events() - lost_before == 20  # logged and counted
    assert "circuit open" in caplog.text
    assert caplog.text.count("event(s) lost") == 20


def test_trial_after_cool_down_reopens_while_still_down(
    realtime_settings: RealtimeOverride, sleeps: list[float]
) -> None:
    """After the cool-down one publish tries the broker again; its failure reopens at once."""
    _point_at(realtime_settings, _closed_url("redis", free_port()))
    channel = unique_channel()
    publish(channel, "t", {"n": 1})
    assert breaker.stats().failures_total == THRESHOLD
    _wait(_cooled_down)
    publish(channel, "t", {"n": 2})
    publish(channel, "t", {"n": 3})
    stats = breaker.stats()
    assert stats.failures_total == THRESHOLD + 1  # exactly one trial attempt
    assert (stats.state, stats.opened_total, stats.rejected_total) == ("open", 2, 1)


def test_breaker_closes_when_the_broker_is_back(
    realtime_settings: RealtimeOverride, sleeps: list[float], tmp_path: Path
) -> None:
    """The first publish after the cool-down reaches the restored broker and closes it."""
    port = free_port()
    _point_at(realtime_settings, _closed_url("redis", port))
    channel = unique_channel()
    publish(channel, "t", {"n": "lost"})
    publish(channel, "t", {"n": "refused"})
    assert breaker.stats().state == "open"
    private = PrivateRedis(port, tmp_path / "redis.log")
    private.start()
    try:
        _wait(_cooled_down)
        publish(channel, "t", {"n": "back"})
        stats = breaker.stats()
        assert (stats.state, stats.consecutive_failures) == ("closed", 0)
        client = redis.Redis.from_url(private.url)
        meta = channel_keys(realtime_settings["PREFIX"], channel)[0]
        assert client.hget(meta, "offset") == b"1"  # only the event sent after recovery
        client.close()
    finally:
        private.stop()


def test_outbox_rows_wait_while_open_and_go_out_after(
    realtime_settings: RealtimeOverride, tmp_path: Path
) -> None:
    """With the outbox, relay batches fail fast while open; no row is lost or marked sent."""
    port = free_port()
    _point_at(realtime_settings, _closed_url("redis", port), OUTBOX=True)
    channel = unique_channel()
    for n in range(5):
        publish(channel, "t", {"n": n})
    for _ in range(THRESHOLD + 2):
        with pytest.raises(BrokerUnavailable):
            relay_batch()
    stats = breaker.stats()
    assert (stats.failures_total, stats.rejected_total) == (THRESHOLD, 2)
    assert pending_count() == 5
    private = PrivateRedis(port, tmp_path / "redis.log")
    private.start()
    try:
        _wait(_cooled_down)
        assert relay_batch() == 5
        assert pending_count() == 0
        assert breaker.stats().state == "closed"
    finally:
        private.stop()
