"""The http transport reads ``since`` positions from the server's /api/channels endpoint."""

from __future__ import annotations

from bridge_helpers import RealtimeOverride, RealtimeServer, WsClient, unique_channel

from django_bridge import publish
from django_bridge.client import channel_positions


def test_http_transport_gives_pages_their_since(
    realtime_settings: RealtimeOverride, bridge_server: RealtimeServer
) -> None:
    """Positions read over http let a late subscriber recover what was published after."""
    realtime_settings.update(BROKER_URL=bridge_server.http_url)
    channel, fresh = unique_channel(), unique_channel()
    for n in range(3):
        publish(channel, "contest.tick", {"n": n})
    since = channel_positions([channel, fresh])
    assert since[channel]["offset"] == 3 and since[fresh]["offset"] == 0
    for n in range(3, 5):
        publish(channel, "contest.tick", {"n": n})
    ws = WsClient(bridge_server.ws_url)
    try:
        reply = ws.subscribe(channel, since=since[channel])
    finally:
        ws.close()
    assert reply["recovered"] is True
    assert [e["data"]["n"] for e in reply["missed"]] == [3, 4]


def test_http_positions_degrade_to_none_without_the_key(
    realtime_settings: RealtimeOverride, bridge_server: RealtimeServer
) -> None:
    """A wrong API key costs the page its since ({}), not the page."""
    realtime_settings.update(BROKER_URL=bridge_server.http_url, API_KEY="wrong-key")
    assert channel_positions([unique_channel()]) == {}
