"""Heartbeat pings, spread over the interval instead of sent to everyone at once.

Pinging 10,000 connections in one callback means 10,000 pongs arriving together, and
reading them through Tornado's frame loop stalled the event loop for most of a second
(every delivery in that window waited: docs/PERFORMANCE.md). The wheel splits the
connections into groups and pings one group per tick, so each connection is still pinged
once per ``interval`` but the pongs trickle in.
"""

from __future__ import annotations

from typing import Protocol

# at the default 25 s and 10,000 connections: 80 pings (and pongs) every 0.2 s
TICK = 0.2


class Beating(Protocol):
    """What the wheel pings: a connection."""

    def heartbeat(self) -> None:
        """Ping the peer, or drop it if it did not answer the previous ping."""


class HeartbeatWheel:
    """Pings every member once per ``interval`` seconds, one group per ``tick``."""

    def __init__(self, interval: float, tick: float = TICK) -> None:
        if interval <= 0 or tick <= 0:
            raise ValueError("interval and tick must be positive")
        self.tick_seconds = min(tick, interval)
        count = max(1, round(interval / self.tick_seconds))
        self._groups: list[set[Beating]] = [set() for _ in range(count)]
        self._turn = 0

    def add(self, member: Beating) -> int:
        """Add ``member`` to the smallest group; return the group's index for ``remove``."""
        groups = self._groups
        index = min(range(len(groups)), key=lambda i: len(groups[i]))
        groups[index].add(member)
        return index

    def remove(self, member: Beating, index: int) -> None:
        """Forget ``member`` (no error if it is not there)."""
        self._groups[index].discard(member)

    def tick(self) -> None:
        """Ping the group whose turn it is (called every ``tick_seconds``)."""
        group = self._groups[self._turn]
        self._turn = (self._turn + 1) % len(self._groups)
        for member in list(group):  # heartbeat() may drop a dead peer
            member.heartbeat()

    def __len__(self) -> int:
        return sum(len(group) for group in self._groups)
