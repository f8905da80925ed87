"""Publish realtime events from Django and give pages what they need to subscribe.

Public API (PROTOCOL.md section 7)::

    from django_bridge import publish, realtime_token
    from django_bridge import apublish, arealtime_token   # async views, ASGI
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from django_bridge.aio import apublish, arealtime_token
    from django_bridge.publishing import publish
    from django_bridge.tokens import realtime_token

__all__ = ["apublish", "arealtime_token", "publish", "realtime_token"]


def __getattr__(name: str) -> Any:
    # lazy: `import django_bridge` must work before Django's apps are loaded
    if name == "publish":
        from django_bridge.publishing import publish

        return publish
    if name == "realtime_token":
        from django_bridge.tokens import realtime_token

        return realtime_token
    if name in ("apublish", "arealtime_token"):
        from django_bridge import aio

        return getattr(aio, name)
    raise AttributeError(name)
