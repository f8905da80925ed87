"""Connection tokens for the realtime server (JWT, HS256, PROTOCOL.md section 2).

Also the *grant* a page carries to renew its token: what the page was rendered with (user,
channels, ttl), signed with Django's ``SECRET_KEY`` (``django.core.signing``), so the token
view re-issues exactly what the rendering view decided, for the same user only.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import jwt
from django.core import signing

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


GRANT_SALT = "django_bridge.tokens.grant"


@dataclass(frozen=True, slots=True)
class Grant:
    """What a page may renew: the token ``sub``, its channels (None: no claim) and ttl."""

    sub: str
    channels: list[str] | None
    ttl: int | None


def token_grant(user: Any, channels: Iterable[str] | None = None, ttl: int | None = None) -> str:
    """Sign a grant that lets ``user``'s page renew a token for ``channels`` (see ``read_grant``).

    The grant is not a credential by itself: the token view also requires the same user's
    session.
    """
    payload: dict[str, Any] = {
        "sub": user_sub(user),
        "ch": list(channels) if channels is not None else None,
    }
    if ttl is not None:
        payload["ttl"] = int(ttl)
    return signing.dumps(payload, salt=GRANT_SALT, compress=True)


def read_grant(grant: str, max_age: int) -> Grant:
    """Verify a grant's signature and age (seconds since it was signed).

    Raises:
        django.core.signing.BadSignature: tampered or malformed (``SignatureExpired``, a
            subclass, when older than ``max_age``).
    """
    payload = signing.loads(grant, salt=GRANT_SALT, max_age=max_age)
    if not isinstance(payload, dict) or not isinstance(payload.get("sub"), str):
        raise signing.BadSignature("not a realtime token grant")
    channels = payload.get("ch")
    ttl = payload.get("ttl")
    return Grant(
        sub=payload["sub"],
        channels=[str(c) for c in channels] if isinstance(channels, list) else None,
        ttl=int(ttl) if isinstance(ttl, int) else None,
    )
