"""Issue 13, defect 19 (client side): tokens are renewed before they expire, drops announced.

The server's grace after ``exp`` is its heartbeat (1 s here), so a page that did not renew
would lose its private subscriptions a second after each expiry.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.conftest import make_token
from tests.e2e.conftest import open_test_page, wait_for

pytestmark = pytest.mark.browser

CHANNEL = "user:1001"


@pytest.fixture
def short_grace_server(server_factory: Any) -> Any:
    """A memory-broker server whose grace after a token's exp is 1 s."""
    return server_factory(heartbeat="1")


def _publish(server: Any, n: int) -> None:
    server.publish({"channel": CHANNEL, "type": "note", "data": {"n": n}})


def test_get_token_renews_before_each_expiry(page: Any, short_grace_server: Any) -> None:
    """With 3-s tokens, the page renews ahead of exp and gets private events past 3 expiries."""
    frames: list[str] = []
    page.on("websocket", lambda ws: ws.on("framereceived", lambda f: frames.append(str(f))))
    page.expose_function("mintToken", lambda n: make_token("1001", ttl=3))
    open_test_page(page, short_grace_server.url)
    page.evaluate("c => window.start(c, {useGetToken: true})", CHANNEL)
    wait_for(page, "window.log.connected === 1 && window.log.states.length === 1")
    deadline = time.monotonic() + 10.5  # three and a half token lifetimes
    n = 0
    while time.monotonic() < deadline:
        n += 1
        _publish(short_grace_server, n)
        wait_for(page, f"window.log.events.length === {n}", timeout=5)
        time.sleep(0.5)
    assert [e["data"]["n"] for e in page.evaluate("window.log.events")] == list(range(1, n + 1))
    assert page.evaluate("window.log.tokenCalls") >= 4  # the first token and >= 3 renewals
    assert page.evaluate("window.log.connected") == 1  # one connection throughout
    assert page.evaluate("window.log.unsubscribed") == []  # never dropped
    assert not [f for f in frames if "token_expired" in f]  # renewed ahead of every exp
    assert page.evaluate("window.log.errors") == []
    assert page.problems.errors == []


def test_drop_on_expiry_is_announced_and_recovered(page: Any, short_grace_server: Any) -> None:
    """A static token that expires: the page gets `unsubscribed` (reason, resubscribe)."""
    open_test_page(page, short_grace_server.url)
    page.evaluate(
        "([c, t]) => window.start(c, {client: {token: t}})",
        [CHANNEL, make_token("1001", ttl=2)],
    )
    wait_for(page, "window.log.connected === 1 && window.log.states.length === 1")
    wait_for(page, "window.log.unsubscribed.length === 1", timeout=10)
    assert page.evaluate("window.log.unsubscribed") == [
        {"channel": CHANNEL, "reason": "token_expired", "resubscribe": True}
    ]
    assert page.evaluate("window.sub.status") == "pending"
    assert "token_expired" in [e["code"] for e in page.evaluate("window.log.errors")]
    # the page hands over a new token: the subscription comes back and recovers
    page.evaluate("t => window.rt.setToken(t)", make_token("1001", ttl=3600))
    wait_for(page, "window.sub.status === 'live'")
    _publish(short_grace_server, 1)
    wait_for(page, "window.log.events.length === 1")
    assert page.evaluate("window.log.connected") == 1


def test_refused_resubscribe_is_announced(page: Any, short_grace_server: Any) -> None:
    """A dropped subscription whose new token no longer grants it ends with onError + event."""
    page.expose_function(
        "mintToken", lambda n: make_token("1001" if n == 1 else "2002", ttl=2 if n == 1 else 60)
    )
    open_test_page(page, short_grace_server.url)
    page.evaluate("c => window.start(c, {useGetToken: true})", CHANNEL)
    wait_for(page, "window.log.connected === 1 && window.log.states.length === 1")
    # the renewal authenticates as another user: the server drops user:1001 (forbidden)
    wait_for(page, "window.log.unsubscribed.length === 1", timeout=10)
    assert page.evaluate("window.log.unsubscribed") == [
        {"channel": CHANNEL, "reason": "forbidden", "resubscribe": False}
    ]
    assert page.evaluate("window.sub.status") == "closed"


def test_failed_renewal_ahead_keeps_the_connection(page: Any, short_grace_server: Any) -> None:
    """A renewal that fails before exp is retried on the same connection, not by reconnecting."""

    def mint(n: int) -> str:
        if n == 2:
            raise RuntimeError("token view down for a moment")
        return make_token("1001", ttl=4)

    page.expose_function("mintToken", mint)
    open_test_page(page, short_grace_server.url)
    page.evaluate("c => window.start(c, {useGetToken: true})", CHANNEL)
    wait_for(page, "window.log.connected === 1 && window.log.states.length === 1")
    wait_for(page, "window.log.tokenCalls >= 3", timeout=10)
    _publish(short_grace_server, 1)
    wait_for(page, "window.log.events.length === 1")
    assert [e["code"] for e in page.evaluate("window.log.errors")] == ["token_unavailable"]
    assert page.evaluate("window.log.connected") == 1
    assert page.evaluate("window.log.disconnected") == []
    assert page.evaluate("window.log.unsubscribed") == []
