"""/metrics against a real server process: the series move with real traffic."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.client import Client
from tests.conftest import ServerProcess
from tests.ops.conftest import scrape, wait_for


def test_metrics_track_connections_and_subscriptions(memory_server: ServerProcess) -> None:
    """The gauges follow clients that connect, subscribe and leave."""

    async def scenario() -> None:
        before = scrape(memory_server)
        assert before["realtime_connections"] == 0
        async with (
            await Client.open(memory_server.ws_url) as a,
            await Client.open(memory_server.ws_url) as b,
        ):
            assert (await a.subscribe("contest:1"))["op"] == "subscribed"
            assert (await a.subscribe("contest:2"))["op"] == "subscribed"
            assert (await b.subscribe("contest:1"))["op"] == "subscribed"
            now = scrape(memory_server)
            assert now["realtime_connections"] == 2
            assert now["realtime_subscriptions"] == 3
            assert now["realtime_channels"] == 2
            assert now["realtime_messages_in_total"] >= before["realtime_messages_in_total"] + 3

    asyncio.run(scenario())
    wait_for(
        lambda: scrape(memory_server)["realtime_connections"] == 0, what="connections back to 0"
    )
    assert scrape(memory_server)["realtime_subscriptions"] == 0


def test_metrics_count_published_events_bytes_and_latency(memory_server: ServerProcess) -> None:
    """Publishing to a subscriber moves the published, out, bytes and latency series."""
    before = scrape(memory_server)

    async def scenario() -> None:
        async with await Client.open(memory_server.ws_url) as c:
            await c.subscribe("contest:7")
            for i in range(5):
                memory_server.publish({"channel": "contest:7", "type": "t", "data": {"i": i}})
            events = await c.events(5)
            assert [e["offset"] for e in events] == [1, 2, 3, 4, 5]

    asyncio.run(scenario())
    after = scrape(memory_server)
    assert after["realtime_published_total"] - before["realtime_published_total"] == 5
    assert after["realtime_events_in_total"] - before["realtime_events_in_total"] == 5
    # welcome + subscribed + 5 events, possibly batched into fewer frames
    assert after["realtime_messages_out_total"] - before["realtime_messages_out_total"] >= 3
    assert after["realtime_bytes_out_total"] - before["realtime_bytes_out_total"] > 5 * 20
    count = "realtime_publish_to_send_seconds_count"
    assert after[count] - before[count] == 5
    assert after['realtime_publish_to_send_seconds_bucket{le="+Inf"}'] == after[count]


def test_metrics_count_auth_failures_by_code(memory_server: ServerProcess) -> None:
    """A refused subscribe is counted under its error code."""
    key = 'realtime_auth_failures_total{code="unauthorized"}'

    async def scenario() -> dict[str, Any]:
        async with await Client.open(memory_server.ws_url) as c:
            return await c.subscribe("user:1001")

    assert scrape(memory_server).get(key, 0) == 0
    reply = asyncio.run(scenario())
    assert reply["op"] == "error" and reply["code"] == "unauthorized"
    assert scrape(memory_server)[key] == 1


def test_metrics_show_broker_up_on_redis(redis_server: ServerProcess) -> None:
    """realtime_broker_up is 1 while the Redis broker is connected."""
    wait_for(lambda: scrape(redis_server)["realtime_broker_up"] == 1, what="broker up")


def test_metrics_refused_handshakes_are_counted(server_factory: Any) -> None:
    """A handshake refused at the connection limit moves realtime_refused_connections."""
    server: ServerProcess = server_factory(max_connections="1")

    async def scenario() -> None:
        async with await Client.open(server.ws_url):
            try:
                await Client.open(server.ws_url)
            except Exception as exc:  # the handshake answer is 503
                assert "503" in str(exc)
            else:
                raise AssertionError("second connection was accepted over the limit")

    asyncio.run(scenario())
    assert scrape(server)["realtime_refused_connections_total"] == 1
