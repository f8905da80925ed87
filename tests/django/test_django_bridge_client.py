"""The template tag and the management commands, against a real server."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest
from bridge_helpers import RealtimeOverride, RealtimeServer, WsClient, free_port, unique_channel
from django.core.management import CommandError, call_command
from django.template import Context, Template
from django.test import RequestFactory

from django_bridge import publish

pytestmark = pytest.mark.django_db(transaction=True)


def _render(*channels: str) -> tuple[str, dict[str, Any]]:
    request = RequestFactory().get("/")
    request.user = type("U", (), {"is_authenticated": True, "pk": 5})()
    args = " ".join(f'"{c}"' for c in channels)
    html = Template("{% load realtime %}{% realtime_client " + args + " %}").render(
        Context({"request": request})
    )
    match = re.search(r'<script id="realtime-config" type="application/json">(.*?)</script>', html)
    assert match, html
    return html, orjson.loads(match.group(1))


def test_tag_renders_script_token_and_positions(
    realtime_settings: RealtimeOverride, bridge_server: RealtimeServer
) -> None:
    """The tag renders the server's realtime.js, the ws URL, a token and each offset."""
    channel = unique_channel()
    publish(channel, "t", 1)
    publish(channel, "t", 2)
    html, config = _render(channel)
    assert f'<script src="{bridge_server.http_url}/static/realtime.js">' in html
    assert config["url"] == bridge_server.ws_url
    assert config["since"][channel]["offset"] == 2
    assert config["token"].count(".") == 2


def test_since_from_render_recovers_events_published_before_connect(
    realtime_settings: RealtimeOverride, bridge_server: RealtimeServer
) -> None:
    """Events published between render and subscribe arrive as missed, even on a new channel."""
    channel = unique_channel()
    _, config = _render(channel)
    publish(channel, "t", {"n": 1})
    publish(channel, "t", {"n": 2})
    ws = WsClient(bridge_server.ws_url, token=config["token"])
    try:
        reply = ws.subscribe(channel, since=config["since"][channel])
    finally:
        ws.close()
    assert reply["recovered"] is True
    assert [e["data"]["n"] for e in reply["missed"]] == [1, 2]


def test_realtime_publish_command_delivers(
    realtime_settings: RealtimeOverride, bridge_server: RealtimeServer
) -> None:
    """manage.py realtime_publish sends one event to subscribers."""
    channel = unique_channel()
    ws = WsClient(bridge_server.ws_url)
    try:
        ws.subscribe(channel)
        call_command("realtime_publish", channel, "contest.announcement", '{"title": "hi"}')
        [event] = ws.events(channel, 1)
    finally:
        ws.close()
    assert event["data"] == {"title": "hi"}


def test_realtime_check_passes(realtime_settings: RealtimeOverride, capsys: Any) -> None:
    """manage.py realtime_check succeeds against a reachable broker and server."""
    origin = realtime_settings["URL"].replace("ws://", "http://").removesuffix("/ws")
    call_command("realtime_check", "--origin", origin)  # the server's own origin: same host
    out = capsys.readouterr().out
    assert "ok  broker: published through redis" in out and "realtime_check: ok" in out


def test_realtime_check_fails_on_unreachable_broker(realtime_settings: RealtimeOverride) -> None:
    """manage.py realtime_check exits with an error naming the unreachable broker."""
    realtime_settings.update(BROKER_URL=f"redis://127.0.0.1:{free_port()}/0", TIMEOUT=0.5)
    origin = realtime_settings["URL"].replace("ws://", "http://").removesuffix("/ws")
    with pytest.raises(CommandError, match=r"^broker: cannot publish through redis"):
        call_command("realtime_check", "--origin", origin)


def test_realtime_check_fails_on_unreachable_server(realtime_settings: RealtimeOverride) -> None:
    """manage.py realtime_check exits with an error when the server does not answer."""
    realtime_settings.update(URL=f"ws://127.0.0.1:{free_port()}/ws", TIMEOUT=0.5)
    with pytest.raises(CommandError, match=r"^server: cannot reach"):
        call_command("realtime_check")
