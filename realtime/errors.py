"""The contract's error codes and close codes, and the one exception tree.

::

    RealtimeError
    ├── ConfigError          bad setting: the CLI prints one line and exits 2
    ├── ProtocolError        a client command that gets an ``error`` reply
    │                        (carries an ErrorCode and, optionally, a channel)
    ├── PublishError         a bad publish envelope (HTTP 400)
    └── BrokerUnavailable    the broker cannot be reached right now (HTTP 503)
"""

from __future__ import annotations

import enum


class ErrorCode(enum.StrEnum):
    """Codes of ``{"op":"error","code":...}`` replies (PROTOCOL.md section 4)."""

    BAD_REQUEST = "bad_request"
    UNAUTHORIZED = "unauthorized"
    TOKEN_EXPIRED = "token_expired"
    FORBIDDEN = "forbidden"
    UNKNOWN_CHANNEL = "unknown_channel"
    TOO_MANY_SUBSCRIPTIONS = "too_many_subscriptions"
    RATE_LIMITED = "rate_limited"


class CloseCode(enum.IntEnum):
    """WebSocket close codes the server sends (RFC 6455 section 7.4.1)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    INVALID_PAYLOAD = 1007  # invalid UTF-8 in a text frame
    POLICY_VIOLATION = 1008  # flooding, missed heartbeats
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012  # SIGTERM: reconnect soon
    TRY_AGAIN_LATER = 1013  # slow consumer cut off, or server overloaded


class RealtimeError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(RealtimeError):
    """A setting is missing or invalid; the message names the setting."""


class ProtocolError(RealtimeError):
    """A client command that is answered with an ``error`` reply."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        channel: str | None = None,
        command_id: str | int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.channel = channel
        self.command_id = command_id


class PublishError(RealtimeError):
    """A publish envelope that is not valid."""


class BrokerUnavailable(RealtimeError):
    """The broker (or the history store) cannot be reached right now."""
