"""Connection tokens for the realtime server (JWT, HS256, PROTOCOL.md section 2)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import jwt

from django_bridge.conf import get_settings
from realtime.errors import ConfigError

ANONYMOUS_SUB = "anonymous"


def user_sub(user: Any) -> str:
    """Return the token ``sub`` of a user, a user id, or None/AnonymousUser."""
    if user is None:
        return ANONYMOUS_SUB
    if isinstance(user, int | str):
        return str(user)
    if not getattr(user, "is_authenticated", True) or getattr(user, "pk", None) is None:
        return ANONYMOUS_SUB
    return str(user.pk)


def realtime_token(user: Any, channels: Iterable[str] | None = None, ttl: int | None = None) -> str:
    """Sign a connection token for ``user`` granting ``channels``, valid ``ttl`` seconds.

    The caller decides what the user may see: every channel listed (or shell pattern such
    as ``submission:*``) is granted as is. ``user`` may be a user object, an id, or
    None/AnonymousUser (``sub`` is then "anonymous").

    Raises:
        ConfigError: ``REALTIME['SECRET']`` is not set.
    """
    settings = get_settings()
    if not settings.secret:
        raise ConfigError("REALTIME['SECRET'] is not set: cannot sign realtime tokens")
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": user_sub(user),
        "iat": now,
        "exp": now + (ttl if ttl is not None else settings.token_ttl),
    }
    if channels is not None:
        claims["channels"] = list(channels)
    return jwt.encode(claims, settings.secret, algorithm="HS256")
