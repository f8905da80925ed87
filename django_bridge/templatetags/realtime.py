"""``{% load realtime %}{% realtime_client "submission:9001" "user:5" %}``.

Renders the client script tag and a ``<script type="application/json" id="realtime-config">``
holding ``{"url","token","channels","since"}`` (see ``django_bridge.client.client_config``).
Page code then does::

    const cfg = JSON.parse(document.getElementById("realtime-config").textContent);
    const rt = new RealtimeClient(cfg.url, {token: cfg.token});
    rt.subscribe(ch, {since: cfg.since[ch], onState, onEvent});
"""

from __future__ import annotations

from typing import Any

from django import template
from django.utils.html import format_html, json_script
from django.utils.safestring import SafeString

from django_bridge.client import client_config
from django_bridge.conf import get_settings

register = template.Library()


def _user(context: template.Context) -> Any:
    request = context.get("request")
    if request is not None and hasattr(request, "user"):
        return request.user
    return context.get("user")


@register.simple_tag(takes_context=True)
def realtime_client(
    context: template.Context,
    *channels: str,
    element_id: str = "realtime-config",
    ttl: int | None = None,
) -> SafeString:
    """Render the client script, a fresh token for ``channels`` and their positions.

    The token grants every channel listed: list only what the page's user may see.
    """
    config = client_config(_user(context), list(channels), ttl=ttl)
    return format_html(
        '<script src="{}"></script>\n{}',
        get_settings().client_js_url,
        json_script(config, element_id),
    )


@register.simple_tag(takes_context=True)
def realtime_config(
    context: template.Context, *channels: str, ttl: int | None = None
) -> dict[str, Any]:
    """Return the same config as a dict: ``{% realtime_config "contest:1" as rt %}``."""
    return client_config(_user(context), list(channels), ttl=ttl)
