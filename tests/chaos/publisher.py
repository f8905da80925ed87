"""Publishers on the HTTP API: each accepted publish is recorded from its reply.

Every attempt carries a unique ``data.n``, so that an event the store accepted but whose reply
was lost (the node was killed, the connection cut) can be recognised in the store at the end
and added to the log with its attempt's type and state flag (``reconcile``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from tests.conftest import TEST_API_KEY

_numbers = itertools.count(1)


@dataclass
class PublishLog:
    """What was published: accepted records and every attempt by its ``n``."""

    published: list[dict[str, Any]] = field(default_factory=list)
    attempts: dict[int, dict[str, Any]] = field(default_factory=dict)
    ok: int = 0
    failed: int = 0
    duplicates: int = 0


async def publish_loop(
    stop: asyncio.Event,
    urls: Callable[[], list[str]],
    channels: list[str],
    rate: float,
    rng: random.Random,
    log: PublishLog,
) -> None:
    """Publish about ``rate`` events a second on random ``channels`` until ``stop`` is set."""
    client = AsyncHTTPClient(force_instance=True, max_clients=4)
    try:
        while not stop.is_set():
            channel = rng.choice(channels)
            n = next(_numbers)
            state = rng.random() < 0.3
            envelope = {
                "channel": channel,
                "type": rng.choice(("tick", "score", "verdict")),
                "data": {"n": n, "pad": "x" * rng.randrange(0, 400)},
                "state": state,
            }
            log.attempts[n] = envelope
            await _publish_one(client, rng.choice(urls()), envelope, log)
            await asyncio.sleep(rng.expovariate(rate))
    finally:
        client.close()


async def publish_burst(
    urls: Callable[[], list[str]],
    channel: str,
    count: int,
    size: int,
    rng: random.Random,
    log: PublishLog,
) -> None:
    """Publish ``count`` events of about ``size`` bytes on ``channel`` back to back."""
    client = AsyncHTTPClient(force_instance=True, max_clients=2)
    try:
        for _ in range(count):
            n = next(_numbers)
            envelope = {
                "channel": channel,
                "type": "burst",
                "data": {"n": n, "pad": "y" * size},
                "state": rng.random() < 0.1,
            }
            log.attempts[n] = envelope
            await _publish_one(client, rng.choice(urls()), envelope, log)
    finally:
        client.close()


async def _publish_one(
    client: AsyncHTTPClient, base: str, envelope: dict[str, Any], log: PublishLog
) -> None:
    request = HTTPRequest(
        base + "/api/publish",
        method="POST",
        body=json.dumps([envelope]),
        headers={"Authorization": f"Bearer {TEST_API_KEY}", "Content-Type": "application/json"},
        connect_timeout=3,
        request_timeout=10,
    )
    try:
        response = await client.fetch(request)
    except (HTTPClientError, OSError, TimeoutError):
        log.failed += 1  # maybe stored anyway: reconcile() finds it in the store
        return
    result = json.loads(response.body)["results"][0]
    if result.get("duplicate"):
        log.duplicates += 1
        return
    log.ok += 1
    log.published.append(
        {
            "channel": envelope["channel"],
            "epoch": result["epoch"],
            "offset": result["offset"],
            "type": envelope["type"],
            "data": envelope["data"],
            "state": envelope["state"],
        }
    )


def reconcile(
    log: PublishLog, channel: str, epoch: str | None, history: list[dict[str, Any]]
) -> int:
    """Add the stored events of ``channel`` that no reply reported; return how many."""
    if epoch is None:
        return 0
    known = {(p["epoch"], p["offset"]) for p in log.published if p["channel"] == channel}
    added = 0
    for event in history:
        if (epoch, event["offset"]) in known:
            continue
        attempt = log.attempts.get(event.get("data", {}).get("n"))
        if attempt is None:
            continue
        log.published.append(
            {
                "channel": channel,
                "epoch": epoch,
                "offset": event["offset"],
                "type": event["type"],
                "data": event["data"],
                "state": attempt["state"],
            }
        )
        added += 1
    return added
