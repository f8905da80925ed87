"""What a page needs to connect: server URL, a fresh token, and where each channel stands."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from django_bridge.conf import get_settings
from django_bridge.tokens import realtime_token
from django_bridge.transports import get_transport
from realtime.envelope import CHANNEL_RE
from realtime.errors import BrokerUnavailable

logger = logging.getLogger(__name__)


def channel_positions(channels: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Return ``{channel: {"epoch": E, "offset": N}}`` read now, or {} if unavailable.

    Available with the redis transport, with amqp + ``REDIS_URL``, and over http from the
    server's ``GET /api/channels/<name>`` (without it, pages subscribe without ``since``
    and still get the channel's state on subscribe). A store that is down costs the page
    its ``since``, never the page itself.
    """
    if not channels:
        return {}
    try:
        positions = get_transport().positions(channels)
    except BrokerUnavailable as exc:
        logger.warning("realtime: cannot read channel positions: %s", exc)
        return {}
    if positions is None:
        return {}
    return {ch: {"epoch": epoch, "offset": offset} for ch, (epoch, offset) in positions.items()}


def client_config(user: Any, channels: Sequence[str], ttl: int | None = None) -> dict[str, Any]:
    """Build the JSON object the ``realtime_client`` tag embeds in the page.

    Keys: ``url`` (WebSocket URL), ``token`` (granting ``channels``), ``channels`` (the list),
    ``since`` (per channel, see ``channel_positions``).
    """
    for channel in channels:
        if not CHANNEL_RE.fullmatch(channel):
            raise ValueError(f"invalid channel name: {channel!r}")
    settings = get_settings()
    return {
        "url": settings.url,
        "token": realtime_token(user, channels=list(channels), ttl=ttl),
        "channels": list(channels),
        "since": channel_positions(channels),
    }
