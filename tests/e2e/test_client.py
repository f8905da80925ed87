"""The browser client (static/realtime.js) in headless Chromium against real servers."""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt
import orjson
import pytest

from realtime.brokers.redis_layout import PUBLISH_SCRIPT, publish_args
from realtime.config import Settings
from tests.conftest import TEST_SECRET
from tests.e2e.conftest import BOTH_BROWSERS, open_test_page, wait_for

pytestmark = [pytest.mark.browser, BOTH_BROWSERS]


def _events(page: Any) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = page.evaluate("window.log.events")
    return events


def _publish_range(server: Any, channel: str, first: int, last: int) -> None:
    envelopes = [
        {"channel": channel, "type": "test.seq", "data": {"seq": i}} for i in range(first, last + 1)
    ]
    server.publish(*envelopes)


def _assert_exactly_once_in_order(events: list[dict[str, Any]], count: int) -> None:
    assert [e["data"]["seq"] for e in events] == list(range(1, count + 1))
    assert [e["offset"] for e in events] == list(range(1, count + 1))


def test_page_receives_published_events_in_order(page: Any, memory_server: Any) -> None:
    """A page subscribed through the client gets every HTTP-published event, in order."""
    channel = f"contest:e2e-{uuid.uuid4().hex[:8]}"
    open_test_page(page, memory_server.url)
    page.evaluate("c => window.start(c)", channel)
    wait_for(page, "window.log.connected === 1 && window.log.states.length === 1")
    assert page.evaluate("window.log.states") == [None]  # a channel with no state yet

    _publish_range(memory_server, channel, 1, 25)  # one request with a list
    for i in range(26, 41):  # and one request per event
        _publish_range(memory_server, channel, i, i)
    wait_for(page, "window.log.events.length >= 40")

    events = _events(page)
    _assert_exactly_once_in_order(events, 40)
    assert {e["type"] for e in events} == {"test.seq"}
    assert {e["channel"] for e in events} == {channel}
    assert page.evaluate("window.log.errors") == []
    assert page.problems.errors == []


def test_late_subscriber_gets_state_then_events(page: Any, memory_server: Any) -> None:
    """onState receives the channel's state event; later events go to onEvent."""
    channel = f"leaderboard:e2e-{uuid.uuid4().hex[:8]}"
    memory_server.publish({"channel": channel, "type": "board", "data": {"v": 1}, "state": True})
    open_test_page(page, memory_server.url)
    page.evaluate("c => window.start(c)", channel)
    wait_for(page, "window.log.states.length === 1")
    state = page.evaluate("window.log.states[0]")
    assert state["type"] == "board" and state["data"] == {"v": 1} and state["offset"] == 1

    memory_server.publish({"channel": channel, "type": "board", "data": {"v": 2}, "state": True})
    wait_for(page, "window.log.events.length === 1")
    assert _events(page)[0]["data"] == {"v": 2}
    assert page.evaluate("window.sub.position.offset") == 2


@pytest.mark.broker
def test_reconnects_after_server_restart_without_loss(
    page: Any, server_factory: Any, redis_url: str, prefix: str
) -> None:
    """The server restarts under an open page: every event arrives exactly once, in order."""
    server = server_factory(broker_url=redis_url, redis_prefix=prefix)
    channel = f"contest:e2e-{uuid.uuid4().hex[:8]}"
    open_test_page(page, server.url)
    page.evaluate("c => window.start(c)", channel)
    wait_for(page, "window.log.connected === 1 && window.log.states.length === 1")

    _publish_range(server, channel, 1, 5)
    wait_for(page, "window.log.events.length === 5")

    assert server.stop() == 0
    wait_for(page, "window.log.disconnected.length === 1")
    assert page.evaluate("window.log.disconnected[0].code") == 1012
    assert page.evaluate("window.rt.state") != "connected"

    # while no server runs, publish the way the Django bridge's redis transport does
    import redis

    settings = Settings()
    client = redis.Redis.from_url(redis_url)
    try:
        script = client.register_script(PUBLISH_SCRIPT)
        for seq in range(6, 11):
            keys, args = publish_args(
                prefix,
                channel=channel,
                type_="test.seq",
                data_json=orjson.dumps({"seq": seq}),
                state=False,
                envelope_id=None,
                history_size=settings.history_size,
                history_ttl=settings.history_ttl,
                meta_ttl=settings.meta_ttl,
                now_ms=int(time.time() * 1000),
            )
            script(keys=keys, args=args)
    finally:
        client.close()

    server.start()
    wait_for(page, "window.log.connected === 2", timeout=45)
    wait_for(page, "window.log.events.length >= 10")
    _publish_range(server, channel, 11, 15)
    wait_for(page, "window.log.events.length >= 15")

    _assert_exactly_once_in_order(_events(page), 15)
    # history covered the gap: no resync was needed
    assert page.evaluate("window.log.states.length") == 1
    assert page.evaluate("window.log.errors") == []


def _token(sub: str, ttl: float) -> str:
    claims = {"sub": sub, "exp": int(time.time() + ttl)}
    return jwt.encode(claims, TEST_SECRET, algorithm="HS256")


def test_expired_token_calls_get_token_again(page: Any, memory_server: Any) -> None:
    """When the connection's token expires, the client gets a new one and stays subscribed."""
    page.expose_function("mintToken", lambda n: _token("1001", 2 if n == 1 else 3600))
    open_test_page(page, memory_server.url)
    page.evaluate("c => window.start(c, {useGetToken: true})", "user:1001")
    wait_for(page, "window.log.connected === 1 && window.log.states.length === 1")
    assert page.evaluate("window.log.tokenCalls") == 1

    # the server pushes token_expired at exp; the client calls getToken and re-authenticates
    wait_for(page, "window.log.tokenCalls === 2", timeout=15)
    memory_server.publish({"channel": "user:1001", "type": "note", "data": {"n": 1}})
    wait_for(page, "window.log.events.length === 1")

    assert page.evaluate("window.log.connected") == 1  # same connection throughout
    assert page.evaluate("window.log.unsubscribed") == []
    assert page.evaluate("window.log.errors") == []
    assert page.evaluate("window.rt.user") == "1001"


def test_expired_token_at_auth_fetches_a_fresh_one(page: Any, memory_server: Any) -> None:
    """An auth reply of token_expired makes the client call getToken once more."""
    page.expose_function("mintToken", lambda n: _token("1001", -60 if n == 1 else 3600))
    open_test_page(page, memory_server.url)
    page.evaluate("c => window.start(c, {useGetToken: true})", "user:1001")
    wait_for(page, "window.log.connected === 1 && window.log.states.length === 1")
    assert page.evaluate("window.log.tokenCalls") == 2
    memory_server.publish({"channel": "user:1001", "type": "note", "data": {"n": 1}})
    wait_for(page, "window.log.events.length === 1")
    assert page.evaluate("window.log.errors") == []


def test_refused_token_stops_and_reports(page: Any, memory_server: Any) -> None:
    """A token the server refuses (bad signature) stops the client with an error event."""
    other_secret = "another-secret-0123456789abcdef-0123456789"
    bad = jwt.encode({"sub": "1001"}, other_secret, algorithm="HS256")
    open_test_page(page, memory_server.url)
    page.evaluate("t => window.start('contest:e2e-refused', {client: {token: t}})", bad)
    wait_for(page, "window.log.errors.length === 1 && window.rt.state === 'closed'")
    assert page.evaluate("window.log.errors[0].code") == "unauthorized"
    assert page.evaluate("window.rt._reconnectTimer") is None
    assert page.evaluate("window.log.connected") == 0


def test_policy_close_stops_reconnecting(page: Any, memory_server: Any) -> None:
    """A 1008 close (here: flooding) stops the client and reports it; no reconnect is planned."""
    open_test_page(page, memory_server.url)
    page.evaluate("c => window.start(c)", "contest:e2e-flood")
    wait_for(page, "window.log.connected === 1")
    page.evaluate(
        """() => { for (let i = 0; i < 2000; i++) window.rt._ws.send('{"op":"ping"}'); }"""
    )
    wait_for(page, "window.rt.state === 'closed'")
    error = page.evaluate("window.log.errors[window.log.errors.length - 1]")
    assert error["code"] == "policy_violation" and error["closeCode"] == 1008
    assert page.evaluate("window.rt._reconnectTimer") is None
    assert page.evaluate("window.log.disconnected[0].reconnect") is False
