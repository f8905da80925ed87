"""Connection tokens (JWT HS256) and the channel access policy (PROTOCOL.md section 2)."""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Mapping
from dataclasses import dataclass

import jwt

from realtime.config import Namespace
from realtime.envelope import CHANNEL_RE
from realtime.errors import ErrorCode, ProtocolError

ALGORITHMS = ["HS256"]


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a connection is: ``user`` None means anonymous."""

    user: str | None = None
    channels: tuple[str, ...] = ()
    expires: float | None = None  # unix seconds
    issued: float | None = None  # the token's `iat` (unix seconds), if it has one

    def grants(self, channel: str) -> bool:
        """True when the token's ``channels`` claim names or matches the channel."""
        return any(
            pattern == channel or fnmatch.fnmatchcase(channel, pattern) for pattern in self.channels
        )


ANONYMOUS = Identity()


def verify_token(token: object, secret: str, require_exp: bool = False) -> Identity:
    """Verify an HS256 connection token and return the identity it carries.

    Raises:
        ProtocolError: ``token_expired`` for an expired token, ``unauthorized`` for any
            other problem (bad signature, ``alg: none``, another algorithm, bad claims).
    """
    if not isinstance(token, str) or not token:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "'token' must be a non-empty string")
    required = ["sub", "exp"] if require_exp else ["sub"]
    try:
        claims = jwt.decode(token, secret, algorithms=ALGORITHMS, options={"require": required})
    except jwt.ExpiredSignatureError:
        raise ProtocolError(ErrorCode.TOKEN_EXPIRED, "token has expired") from None
    except jwt.InvalidTokenError as exc:
        raise ProtocolError(ErrorCode.UNAUTHORIZED, f"invalid token: {exc}") from None
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise ProtocolError(ErrorCode.UNAUTHORIZED, "invalid token: 'sub' must be a string")
    channels = claims.get("channels", [])
    if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
        raise ProtocolError(ErrorCode.UNAUTHORIZED, "invalid token: 'channels' must be a list")
    exp, iat = claims.get("exp"), claims.get("iat")
    return Identity(
        user=sub,
        channels=tuple(channels),
        expires=float(exp) if exp else None,
        issued=float(iat) if isinstance(iat, int | float) else None,
    )


def is_expired(identity: Identity, now: float | None = None) -> bool:
    """True when the identity's token has passed its ``exp``."""
    if identity.expires is None:
        return False
    return (time.time() if now is None else now) >= identity.expires


def check_channel(namespaces: Mapping[str, Namespace], identity: Identity, channel: object) -> str:
    """Check that ``identity`` may subscribe to ``channel``; return the channel name.

    Raises:
        ProtocolError: ``bad_request`` (malformed name), ``unknown_channel``,
            ``unauthorized`` (no token for a private channel), ``forbidden``.
    """
    if not isinstance(channel, str) or not CHANNEL_RE.fullmatch(channel):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "invalid channel name", _str_or_none(channel))
    namespace_name, rest = channel.split(":", 1)
    namespace = namespaces.get(namespace_name)
    if namespace is None:
        raise ProtocolError(ErrorCode.UNKNOWN_CHANNEL, f"no namespace {namespace_name!r}", channel)
    if namespace.access == "public":
        return channel
    if identity.user is None:
        raise ProtocolError(ErrorCode.UNAUTHORIZED, "this channel needs a token", channel)
    allowed = rest == identity.user if namespace.access == "user" else identity.grants(channel)
    if not allowed:
        raise ProtocolError(ErrorCode.FORBIDDEN, "the token does not allow this channel", channel)
    return channel


def _str_or_none(value: object) -> str | None:
    return value[:200] if isinstance(value, str) else None
