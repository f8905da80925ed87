"""The client in Chromium and in Firefox, over WebSocket and over Server-Sent Events.

"sse" pages cannot open a WebSocket: as behind a proxy that refuses the upgrade, every
WebSocket the page creates goes to a closed port and fails before it opens. The client
must fall back to ``/sse`` by itself, and come back to the WebSocket when it works again.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
import pytest

from realtime.brokers.redis_layout import PUBLISH_SCRIPT, publish_args
from realtime.config import Settings
from tests.conftest import ServerProcess, free_port
from tests.e2e.conftest import BOTH_BROWSERS, TEST_PAGE, wait_for

pytestmark = [pytest.mark.browser, BOTH_BROWSERS]

# Wraps the page's WebSocket before realtime.js loads; window.unblockWebSockets() lifts the block.
BLOCKER = """<script>
(function () {
  var Native = window.WebSocket;
  var blocked = true;
  window.blockedWebSockets = 0;
  function Blocked(url, protocols) {
    if (!blocked) return new Native(url, protocols);
    window.blockedWebSockets++;
    return new Native("ws://127.0.0.1:%d/blocked", protocols);
  }
  Blocked.prototype = Native.prototype;
  Blocked.CONNECTING = 0; Blocked.OPEN = 1; Blocked.CLOSING = 2; Blocked.CLOSED = 3;
  window.WebSocket = Blocked;
  window.unblockWebSockets = function () { blocked = false; };
})();
</script>
"""

SCRIPT_TAG = '<script src="/static/realtime.js"></script>'


def _open(page: Any, server: ServerProcess, transport: str) -> None:
    html = TEST_PAGE
    if transport == "sse":
        html = html.replace(SCRIPT_TAG, BLOCKER % free_port() + SCRIPT_TAG)
    page.goto(server.url + "/healthz")  # the server's origin, as in production
    page.set_content(html)
    page.wait_for_function("typeof window.RealtimeClient === 'function'")
    page.problems.errors.clear()


def _seqs(page: Any) -> list[int]:
    return [int(e["data"]["seq"]) for e in page.evaluate("window.log.events")]


def _publish(server: ServerProcess, channel: str, first: int, last: int) -> None:
    server.publish(
        *[{"channel": channel, "type": "seq", "data": {"seq": i}} for i in range(first, last + 1)]
    )


def _publish_to_redis(redis_url: str, prefix: str, channel: str, first: int, last: int) -> None:
    """Publish as the Django bridge's redis transport does (no server needed)."""
    import redis

    settings = Settings()
    client = redis.Redis.from_url(redis_url)
    try:
        script = client.register_script(PUBLISH_SCRIPT)
        for seq in range(first, last + 1):
            keys, args = publish_args(
                prefix,
                channel=channel,
                type_="seq",
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


@pytest.mark.broker
@pytest.mark.parametrize("transport", ["websocket", "sse"])
def test_server_restart_loses_nothing(
    page: Any, server_factory: Any, redis_url: str, prefix: str, transport: str
) -> None:
    """The server restarts under an open page: every event arrives once, in order."""
    server = server_factory(broker_url=redis_url, redis_prefix=prefix)
    channel = f"contest:e2e-{uuid.uuid4().hex[:8]}"
    _open(page, server, transport)
    page.evaluate("c => window.start(c)", channel)
    wait_for(page, "window.log.connected === 1 && window.log.states.length === 1", timeout=30)
    assert page.evaluate("window.rt.transport") == transport

    _publish(server, channel, 1, 5)
    wait_for(page, "window.log.events.length === 5")
    assert server.stop() == 0
    wait_for(page, "window.log.disconnected.length === 1")
    _publish_to_redis(redis_url, prefix, channel, 6, 10)  # while no server runs

    server.start()
    wait_for(page, "window.log.connected === 2", timeout=60)
    wait_for(page, "window.log.events.length >= 10")
    _publish(server, channel, 11, 15)
    wait_for(page, "window.log.events.length >= 15")

    assert _seqs(page) == list(range(1, 16))
    assert [e["offset"] for e in page.evaluate("window.log.events")] == list(range(1, 16))
    assert page.evaluate("window.log.states.length") == 1  # recovered, no resync
    assert page.evaluate("window.log.errors") == []
    assert page.evaluate("window.rt.transport") == transport
    if transport == "sse":
        assert page.evaluate("window.blockedWebSockets") >= 2  # it did try, and gave up


def test_falls_back_to_sse_and_returns_to_websocket(page: Any, memory_server: Any) -> None:
    """WebSockets blocked: SSE by itself; unblocked: back on a WebSocket, nothing lost."""
    channel = f"contest:e2e-{uuid.uuid4().hex[:8]}"
    _open(page, memory_server, "sse")
    page.evaluate(
        """c => {
          window.transports = [];
          window.start(c, { client: { upgradeDelay: 500 } });
          window.rt.on("transport", t => window.transports.push(t));
        }""",
        channel,
    )
    wait_for(page, "window.log.states.length === 1 && window.rt.transport === 'sse'", timeout=30)
    _publish(memory_server, channel, 1, 3)
    wait_for(page, "window.log.events.length === 3")

    page.evaluate("window.unblockWebSockets()")
    wait_for(page, "window.rt.transport === 'websocket' && window.log.connected === 2", timeout=30)
    _publish(memory_server, channel, 4, 6)
    wait_for(page, "window.log.events.length === 6")
    assert _seqs(page) == [1, 2, 3, 4, 5, 6]
    assert page.evaluate("window.transports") == ["sse", "websocket"]
    assert page.evaluate("window.log.states.length") == 1
    assert page.evaluate("window.log.errors") == []
    # the browser logs each blocked WebSocket; nothing else may go wrong
    assert [e for e in page.problems.errors if "/blocked" not in e] == []


def test_sse_subscription_changes_reopen_the_stream(page: Any, memory_server: Any) -> None:
    """On SSE a later subscribe or unsubscribe reopens the stream; positions carry over."""
    first = f"contest:e2e-{uuid.uuid4().hex[:8]}"
    second = f"contest:e2e-{uuid.uuid4().hex[:8]}"
    _open(page, memory_server, "sse")
    page.evaluate("c => window.start(c)", first)
    wait_for(page, "window.log.states.length === 1 && window.rt.transport === 'sse'", timeout=30)
    _publish(memory_server, first, 1, 2)
    wait_for(page, "window.log.events.length === 2")
    page.evaluate(
        """c => {
          window.second = [];
          window.rt.subscribe(c, { onEvent: e => window.second.push(e.data.seq) });
        }""",
        second,
    )
    wait_for(page, "c => window.rt.subscription(c).status === 'live'", arg=second)
    _publish(memory_server, first, 3, 4)
    _publish(memory_server, second, 1, 2)
    wait_for(page, "window.log.events.length === 4 && window.second.length === 2")
    page.evaluate("window.sub.unsubscribe()")
    _publish(memory_server, second, 3, 3)
    wait_for(page, "window.second.length === 3")
    assert _seqs(page) == [1, 2, 3, 4]
    assert page.evaluate("window.second") == [1, 2, 3]
    assert page.evaluate("window.log.states.length") == 1  # the stream reopened without resync


def test_es_module_import(page: Any, memory_server: Any) -> None:
    """realtime.mjs: the same client as an ES module import, from the same source."""
    channel = f"contest:e2e-{uuid.uuid4().hex[:8]}"
    page.goto(memory_server.url + "/healthz")
    page.set_content(
        """<!doctype html><html><head><meta charset="utf-8"><link rel="icon" href="data:,">
        </head><body><script type="module">
        import RealtimeClient, { RealtimeClient as Named, Subscription }
          from "/static/realtime.mjs";
        window.received = [];
        window.module = { same: RealtimeClient === Named,
                          subscription: Subscription === RealtimeClient.Subscription,
                          version: RealtimeClient.version };
        window.startModule = (channel) => {
          const rt = new RealtimeClient("/ws");
          // resolved by the subscribed reply: what is published after it goes to onEvent
          return new Promise((resolve) => rt.subscribe(channel, {
            onState: () => resolve(true),
            onEvent: (e) => window.received.push(e.data.seq),
          }));
        };
        </script></body></html>"""
    )
    module = wait_for(page, "window.module")
    assert module == {"same": True, "subscription": True, "version": "1.0.0"}
    assert page.evaluate("c => window.startModule(c)", channel) is True
    _publish(memory_server, channel, 1, 3)
    wait_for(page, "window.received.length === 3")
    assert page.evaluate("window.received") == [1, 2, 3]


@pytest.mark.broker
def test_plain_event_source_recovers_every_channel(
    page: Any, server_factory: Any, redis_url: str, prefix: str
) -> None:
    """No client library: a plain EventSource reconnects after a restart with Last-Event-ID
    and gets what every one of its channels missed."""
    server = server_factory(broker_url=redis_url, redis_prefix=prefix)
    a, b = (f"contest:e2e-{uuid.uuid4().hex[:8]}" for _ in range(2))
    page.goto(server.url + "/healthz")
    page.set_content("<!doctype html><html><body></body></html>")
    page.evaluate(
        """([a, b]) => {
          window.messages = [];
          const es = new EventSource(`/sse?channel=${a}&channel=${b}`);
          es.onmessage = (e) => window.messages.push(JSON.parse(e.data));
        }""",
        [a, b],
    )
    wait_for(page, "window.messages.filter(m => m.op === 'subscribed').length === 2")
    _publish(server, a, 1, 2)
    wait_for(page, "window.messages.filter(m => m.op === 'event').length === 2")
    assert server.stop() == 0
    _publish_to_redis(redis_url, prefix, a, 3, 4)
    _publish_to_redis(redis_url, prefix, b, 1, 1)
    server.start()
    replies = wait_for(
        page,
        # (the unasked epoch notice at offset 0 is recovered too, but carries nothing)
        "(() => { const r = window.messages.filter(m => m.op === 'subscribed' && m.recovered"
        " && m.offset > 0);"
        " return r.length === 2 && r; })()",
        timeout=30,
    )
    missed = {r["channel"]: [e["data"]["seq"] for e in r["missed"]] for r in replies}
    assert missed == {a: [3, 4], b: [1]}


def _token(sub: str, ttl: float) -> str:
    import jwt

    from tests.conftest import TEST_SECRET

    return jwt.encode({"sub": sub, "exp": int(time.time() + ttl)}, TEST_SECRET, algorithm="HS256")


def test_sse_private_channel_and_token_refresh(page: Any, memory_server: Any) -> None:
    """Over SSE the token rides in the URL: a private channel works, and when the token
    expires the client fetches another and reopens the stream without losing an event."""
    # long enough to outlive the fallback (the client renews a token 5 s before its exp)
    page.expose_function("mintToken", lambda n: _token("1001", 12 if n == 1 else 3600))
    _open(page, memory_server, "sse")
    page.evaluate("c => window.start(c, {useGetToken: true})", "user:1001")
    wait_for(page, "window.log.states.length === 1 && window.rt.transport === 'sse'", timeout=30)
    assert page.evaluate("window.rt.user") == "1001"
    _publish(memory_server, "user:1001", 1, 2)
    wait_for(page, "window.log.events.length === 2")
    assert page.evaluate("window.log.tokenCalls") == 1

    # at exp the stream says token_expired; getToken, then a new stream with the new token
    wait_for(page, "window.log.tokenCalls === 2", timeout=20)
    wait_for(page, "window.log.connected === 2", timeout=20)
    _publish(memory_server, "user:1001", 3, 4)
    wait_for(page, "window.log.events.length === 4")
    assert _seqs(page) == [1, 2, 3, 4]
    assert page.evaluate("window.log.unsubscribed") == []
    assert page.evaluate("window.log.errors") == []
    assert page.evaluate("window.log.states.length") == 1
    assert page.evaluate("window.rt.transport") == "sse"
