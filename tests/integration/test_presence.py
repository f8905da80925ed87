"""Watcher counts across nodes: two real servers on one Redis, no join/leave fan-out."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from tests.client import Client


async def _count_reaches(watcher: Client, channel: str, want: int, within: float) -> int:
    """Read presence events until the count is ``want``; return the last count seen."""
    deadline = time.monotonic() + within
    last = -1
    while time.monotonic() < deadline:
        with contextlib.suppress(TimeoutError):
            msg = await watcher.recv(timeout=max(0.05, deadline - time.monotonic()))
            if msg.get("op") == "event" and msg["data"]["channel"] == channel:
                last = msg["data"]["count"]
                if last == want:
                    return last
    return last


def test_watcher_count_sums_nodes_and_follows_leaves(
    server_factory: Any, redis_url: str, prefix: str
) -> None:
    """3 watchers on node A and 2 on node B read 5 on presence:; after 2 leave, 3."""
    settings = {"broker_url": redis_url, "redis_prefix": prefix, "presence_interval": "0.2"}
    a, b = server_factory(**settings), server_factory(**settings)

    async def scenario() -> None:
        on_a = [await Client.open(a.ws_url) for _ in range(3)]
        on_b = [await Client.open(b.ws_url) for _ in range(2)]
        watcher = await Client.open(b.ws_url)
        try:
            for c in on_a + on_b:
                await c.subscribe("leaderboard:7")
            sub = await watcher.subscribe("presence:leaderboard:7")
            state = sub["state"]["data"]["count"] if sub["state"] else -1
            if state != 5:
                assert await _count_reaches(watcher, "leaderboard:7", 5, 5.0) == 5
            for c in on_a[:2]:
                await c.ws.close()
            assert await _count_reaches(watcher, "leaderboard:7", 3, 5.0) == 3
        finally:
            for c in [*on_a, *on_b, watcher]:
                await c.ws.close()

    asyncio.run(scenario())


def test_memory_server_counts_alone(server_factory: Any) -> None:
    """With memory:// one node is the whole count; the late joiner gets it as state."""
    server = server_factory(presence_interval="0.2")

    async def scenario() -> None:
        clients = [await Client.open(server.ws_url) for _ in range(4)]
        try:
            for c in clients:
                await c.subscribe("contest:1")
            await asyncio.sleep(0.8)
            late = await Client.open(server.ws_url)
            clients.append(late)
            sub = await late.subscribe("presence:contest:1")
            assert sub["state"]["data"] == {"channel": "contest:1", "count": 4}
        finally:
            for c in clients:
                await c.ws.close()

    asyncio.run(scenario())
