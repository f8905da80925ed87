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
RETRIES = 8  # as a publisher should: PROTOCOL.md, "retry it with the same id"


@dataclass
class PublishLog:
    """What was published: accepted records and every attempt by its ``n``."""

    published: list[dict[str, Any]] = field(default_factory=list)
    attempts: dict[int, dict[str, Any]] = field(default_factory=dict)
    keys: set[tuple[str, str, int]] = field(default_factory=set)
    ok: int = 0
    failed: int = 0  # attempts
    retries: int = 0
    duplicates: int = 0  # a retry found its event stored already
    gave_up: int = 0


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
                "id": f"chaos-{n}",
            }
            log.attempts[n] = envelope
            await _publish_one(client, urls, envelope, log, rng)
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
                "id": f"chaos-{n}",
            }
            log.attempts[n] = envelope
            await _publish_one(client, urls, envelope, log, rng)
    finally:
        client.close()


async def _publish_one(
    client: AsyncHTTPClient,
    urls: Callable[[], list[str]],
    envelope: dict[str, Any],
    log: PublishLog,
    rng: random.Random,
) -> None:
    """Publish one envelope with its ``id``; on failure retry with the same ``id``.

    PROTOCOL.md: a 503 means "not confirmed" (maybe stored but not sent); a retry with the
    same ``id`` answers ``duplicate: true`` and sends the stored event again.
    """
    body = json.dumps([envelope])
    for attempt in range(RETRIES + 1):
        if attempt:
            log.retries += 1
            await asyncio.sleep(min(2.0, 0.2 * 2**attempt) * rng.uniform(0.5, 1.5))
        request = HTTPRequest(
            rng.choice(urls()) + "/api/publish",
            method="POST",
            body=body,
            headers={
                "Authorization": f"Bearer {TEST_API_KEY}",
                "Content-Type": "application/json",
            },
            connect_timeout=3,
            request_timeout=10,
        )
        try:
            response = await client.fetch(request)
        except (HTTPClientError, OSError, TimeoutError):
            log.failed += 1  # maybe stored: the retry (same id) sends it, reconcile() logs it
            continue
        result = json.loads(response.body)["results"][0]
        log.ok += 1
        log.duplicates += bool(result.get("duplicate"))
        key = (envelope["channel"], result["epoch"], result["offset"])
        if key not in log.keys:  # a duplicate names the stored event: log it once
            log.keys.add(key)
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
        return
    log.gave_up += 1


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
