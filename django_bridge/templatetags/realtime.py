"""``{% load realtime %}{% realtime_client "submission:9001" "user:5" %}``.

Renders the client script tag and a ``<script type="application/json" id="realtime-config">``
holding ``{"url","token","channels","since","refresh"}`` (see
``django_bridge.client.client_config``). ``refresh`` (``{"url","grant","csrf"}``, or null)
lets the client renew the token through the bridge's token view (``django_bridge.urls``);
it is set for a logged-in user when that view is routed. Page code then does::

    const cfg = JSON.parse(document.getElementById("realtime-config").textContent);
    const rt = RealtimeClient.fromConfig(cfg);   // token + refresh wired
    rt.subscribe(ch, {since: cfg.since[ch], onState, onEvent});
"""

from __future__ import annotations

from typing import Any

from django import template
from django.middleware.csrf import get_token
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html, json_script
from django.utils.safestring import SafeString

from django_bridge.client import client_config
from django_bridge.conf import get_settings
from django_bridge.tokens import token_grant

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

    The token grants every channel listed: list only what the page's user may see. The
    page's ``refresh`` grant renews exactly that (see ``django_bridge.views``).
    """
    config = _config(context, list(channels), ttl)
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
    return _config(context, list(channels), ttl)


def _config(context: template.Context, channels: list[str], ttl: int | None) -> dict[str, Any]:
    user = _user(context)
    config = client_config(user, channels, ttl=ttl)
    config["refresh"] = _refresh(context.get("request"), user, channels, ttl)
    return config


def _refresh(
    request: Any, user: Any, channels: list[str], ttl: int | None
) -> dict[str, str] | None:
    """Return what the client needs to renew its token, or None when it cannot."""
    if request is None or not getattr(user, "is_authenticated", False):
        return None  # anonymous pages use public channels: their tokens need no renewal
    try:
        url = reverse("django_bridge:token")
    except NoReverseMatch:
        return None  # the site did not include django_bridge.urls
    return {"url": url, "grant": token_grant(user, channels, ttl), "csrf": get_token(request)}
