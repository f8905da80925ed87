"""Issue 13, defect 19 end to end: a Django page with 3-s tokens stays live past expiries.

Chromium opens a page of the sample project (pytest-django's ``live_server``) rendered with
``{% realtime_client ... ttl=3 %}``; the client renews its token through the bridge's token
view. The realtime server's grace after ``exp`` is 1 s (its heartbeat), so a page that did
not renew would lose its private subscriptions about a second after each expiry.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import bridge_sample_settings as sample
import pytest
from bridge_helpers import RealtimeOverride, RealtimeServer, start_server
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.test import Client

from django_bridge import publish
from tests.e2e.conftest import browser, browser_name, page, wait_for  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module", autouse=True)
def _orm_beside_playwright() -> Iterator[None]:
    """Let the ORM run in this module: Playwright's sync API keeps an event loop set."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        yield


@pytest.fixture
def page_server(live_server: Any, redis_client: Any) -> Iterator[RealtimeServer]:
    """A realtime server that lets the Django site's origin connect; 1-s token grace."""
    server = start_server(
        {
            "REALTIME_BROKER_URL": sample.REDIS_URL,
            "REALTIME_REDIS_PREFIX": sample.REDIS_PREFIX,
            "REALTIME_ALLOWED_ORIGINS": live_server.url,
            "REALTIME_HEARTBEAT": "1",
        }
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("style", ["config", "plain"])
def test_django_page_keeps_receiving_private_events_past_expiries(
    style: str,
    page: Any,  # noqa: F811
    live_server: Any,
    page_server: RealtimeServer,
    realtime_settings: RealtimeOverride,
) -> None:
    """Private events keep arriving for 3+ token lifetimes; the page renews via the view.

    ``plain``: the page builds its client from ``cfg.token`` alone, as pages written before
    the token view do; the tag's renewal info is found all the same.
    """
    realtime_settings.update(URL=page_server.ws_url)
    user = User.objects.create_user("eve", password="pw")
    client = Client()
    client.force_login(user)
    session = client.cookies[django_settings.SESSION_COOKIE_NAME].value
    page.context.add_cookies(
        [{"name": django_settings.SESSION_COOKIE_NAME, "value": session, "url": live_server.url}]
    )
    renewals: list[int] = []
    page.on(
        "response",
        lambda r: renewals.append(r.status) if r.url.endswith("/realtime/token/") else None,
    )
    frames: list[str] = []
    page.on("websocket", lambda ws: ws.on("framereceived", lambda f: frames.append(str(f))))

    page.goto(f"{live_server.url}/rt-page/4242/?ttl=3&style={style}")
    wait_for(page, "window.log.connected === 1")
    wait_for(page, "window.rt.subscription('submission:4242').status === 'live'")
    mine = f"user:{user.pk}"
    deadline = time.monotonic() + 10  # more than three token lifetimes
    n = 0
    while time.monotonic() < deadline:
        n += 1
        publish("submission:4242", "judge.note", {"n": n}, state=True)
        publish(mine, "note", {"n": n})
        wait_for(page, f"window.log.events.length === {2 * n}", timeout=5)
        time.sleep(0.5)
    events = page.evaluate("window.log.events")
    for channel in ("submission:4242", mine):
        assert [e["data"]["n"] for e in events if e["channel"] == channel] == list(range(1, n + 1))
    assert len(renewals) >= 3 and set(renewals) == {200}
    assert page.evaluate("window.log.unsubscribed") == []
    assert page.evaluate("window.log.errors") == []
    assert page.evaluate("window.log.connected") == 1
    assert not [f for f in frames if "token_expired" in f]
    assert page.problems.errors == []
