"""What the HTTP and WebSocket handlers share within one server process."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from realtime.config import Settings
from realtime.heartbeat import HeartbeatWheel
from realtime.metrics import Metrics
from realtime.node import Node
from realtime.protocol import TokenBucket

if TYPE_CHECKING:
    from realtime.connection import Connection


MAX_REVOKED = 100_000  # revoked users remembered per process


@dataclass(slots=True)
class ServerContext:
    """Per-process state injected into every handler through ``initialize``."""

    settings: Settings
    node: Node
    metrics: Metrics
    heartbeat: HeartbeatWheel
    connections: set[Connection] = field(default_factory=set)
    # open Server-Sent Events streams (realtime.sse): they count against the same limits
    streams: set[Any] = field(default_factory=set)
    per_ip: Counter[str] = field(default_factory=Counter)
    # new-channel subscribes per client IP (see Session); freed with the IP's last connection
    ip_churn: dict[str, TokenBucket] = field(default_factory=dict)
    # user -> unix time of an operator's revoke or disconnect: their older tokens are refused
    revoked: dict[str, float] = field(default_factory=dict)
    shutting_down: bool = False
    all_closed: asyncio.Event = field(default_factory=asyncio.Event)  # set while draining
    refused_unlogged: int = 0  # refused handshakes since the last summary line
    refused_logged_at: float = float("-inf")
    # refused Origin -> (last logged, refused since): one log line per origin per period
    origin_log: dict[str, tuple[float, int]] = field(default_factory=dict)
    # admits new connections at settings.max_connect_rate (None: unlimited)
    connect_bucket: TokenBucket | None = None
    # connections with frames queued in this loop tick; written together in one callback
    dirty: list[Connection] = field(default_factory=list)
    flush_scheduled: bool = False

    def revoke_user(self, user: str, at: float) -> None:
        """Refuse the user's tokens issued until ``at`` (bounded: the oldest entries go)."""
        self.revoked.pop(user, None)
        self.revoked[user] = at
        while len(self.revoked) > MAX_REVOKED:
            del self.revoked[next(iter(self.revoked))]

    def ip_churn_bucket(self, ip: str) -> TokenBucket:
        """The new-channel bucket shared by every connection of ``ip``."""
        bucket = self.ip_churn.get(ip)
        if bucket is None:
            settings = self.settings
            bucket = self.ip_churn[ip] = TokenBucket(
                settings.ip_channel_churn_rate, settings.ip_channel_churn_burst, time.monotonic
            )
        return bucket
