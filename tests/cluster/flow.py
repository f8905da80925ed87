"""Helpers of the cluster tests: channels per shard, simple recording clients, and the
delivery-guarantee checker (``tests.guarantee.checker``) fed from live runs through the chaos
harness's protocol client and publishers (``tests.chaos``)."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, cast

import redis
import redis.cluster

from realtime.brokers import redis_layout
from realtime.brokers.redis_cluster import channel_slot
from tests.chaos.client import ChaosClient
from tests.chaos.publisher import PublishLog, publish_loop, reconcile
from tests.chaos.run import _reconcile_from_histories, _store_order
from tests.client import Client
from tests.conftest import ServerProcess
from tests.guarantee.checker import Violation, check


def channels_per_shard(owner_of_slot: Any, prefix: str, per_shard: int) -> dict[int, list[str]]:
    """``per_shard`` channel names on each primary (port -> names)."""
    found: dict[int, list[str]] = defaultdict(list)
    i = 0
    while len(found) < 3 or min(len(v) for v in found.values()) < per_shard:
        name = f"contest:{i}"
        port = owner_of_slot(channel_slot(prefix, name))
        if len(found[port]) < per_shard:
            found[port].append(name)
        i += 1
    return dict(found)


@dataclass
class Recorder:
    """A client that records, per channel, its events and resync notices in order."""

    client: Client
    log: dict[str, list[tuple[str, int, Any]]] = field(default_factory=lambda: defaultdict(list))
    task: asyncio.Task[None] | None = None
    last: float = 0.0

    @classmethod
    async def open(cls, url: str, channels: list[str]) -> Recorder:
        rec = cls(await Client.open(url))
        for name in channels:
            reply = await rec.client.subscribe(name)
            assert reply["op"] == "subscribed", reply
            rec.log[name].append(("subscribed", reply["offset"], reply["epoch"]))
        rec.task = asyncio.get_running_loop().create_task(rec._read())
        return rec

    async def _read(self) -> None:
        while True:
            msg = await self.client.recv(timeout=3600)
            self.last = time.monotonic()
            if msg["op"] == "event":
                self.log[msg["channel"]].append(("event", msg["offset"], msg["data"]))
            elif msg["op"] == "subscribed":  # unasked: a resync notice
                self.log[msg["channel"]].append(("resync", msg["offset"], msg["epoch"]))

    def offsets(self, channel: str) -> list[int]:
        return [o for kind, o, _ in self.log[channel] if kind == "event"]

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        await self.client.ws.close()


def stored(client: Any, prefix: str, channel: str) -> tuple[int, dict[int, Any]]:
    """(offset, {offset: data}) of a channel as its store holds it now."""
    meta, hist, _ = redis_layout.channel_keys(prefix, channel)
    offset = int(client.hget(meta, "offset") or 0)
    items = client.lrange(hist, 0, -1)
    first = offset - len(items) + 1
    data = {}
    for i, item in enumerate(items):
        event = json.loads(bytes(item).partition(b" ")[2])
        assert event["offset"] == first + i
        data[first + i] = event["data"]
    return offset, data


def cluster_client(url: str) -> redis.cluster.RedisCluster:
    seeds = url.split("://", 1)[1].split(",")
    nodes = [redis.cluster.ClusterNode(h, int(p)) for h, p in (s.rsplit(":", 1) for s in seeds)]
    return redis.cluster.RedisCluster(startup_nodes=nodes)


async def settle(recorders: list[Recorder], quiet: float = 1.5, limit: float = 30.0) -> None:
    """Wait until no recorder received anything for ``quiet`` seconds."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        newest = max([start, *(r.last for r in recorders)])
        if time.monotonic() - newest >= quiet:
            return
        await asyncio.sleep(0.2)


async def wait_healthy(servers: list[ServerProcess], limit: float = 45.0) -> None:
    """Wait until every server's /healthz is 200 (its broker back, after its back-off)."""
    deadline = time.monotonic() + limit
    for server in servers:
        while (await asyncio.to_thread(server.get, "/healthz"))[0] != 200:
            assert time.monotonic() < deadline, f"{server.url} still unhealthy"
            await asyncio.sleep(0.2)


# --- the guarantee checker on live runs: the chaos harness's client, publisher and log ------


StoreRead = Callable[[str], tuple[str | None, list[dict[str, Any]]]]


def _fixed(urls: list[str]) -> Callable[[], list[str]]:
    return lambda: urls


class Watchers:
    """Protocol clients (``tests.chaos.client``) recording checker histories, one task each.

    ``per_server`` clients on each server, every one subscribed to ``channels`` and
    following the protocol as ``static/realtime.js`` does (resubscribe with ``since``).
    """

    def __init__(self, servers: list[ServerProcess], channels: list[str], per_server: int = 1):
        self.clients = [
            ChaosClient(
                f"c{i}-{j}",
                _fixed([server.ws_url]),
                random.Random(i * 100 + j),
                [],
                list(channels),
                public=[],
                private=[],
            )
            for i, server in enumerate(servers)
            for j in range(per_server)
        ]
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, timeout: float = 10.0) -> None:
        """Connect every client and wait until each has all its subscriptions live."""
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(c.run(self._stop)) for c in self.clients]
        deadline = time.monotonic() + timeout
        while not all(s.status == "live" for c in self.clients for s in c.subs.values()):
            assert time.monotonic() < deadline, "clients did not subscribe"
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        """End the run (not a disconnect: the subscriptions count as live for rule 6)."""
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    @property
    def histories(self) -> dict[str, list[dict[str, Any]]]:
        return {c.cid: c.history for c in self.clients}

    def caught_up(self, read: StoreRead, channels: list[str]) -> bool:
        """Every client live on every channel at the store's epoch and last offset."""
        stored_at = {}
        for channel in channels:
            epoch, events = read(channel)
            stored_at[channel] = (epoch, events[-1]["offset"] if events else None)
        return all(
            sub.status == "live" and (sub.epoch, sub.offset) == stored_at[sub.channel]
            for c in self.clients
            for sub in c.subs.values()
        )

    async def settle(self, read: StoreRead, channels: list[str], limit: float = 30.0) -> None:
        """Wait until every client is up to date with the store (the checker's rule 6)."""
        deadline = time.monotonic() + limit
        while not await asyncio.to_thread(self.caught_up, read, channels):
            if time.monotonic() > deadline:
                return  # the checker names who is behind
            await asyncio.sleep(0.3)


def store_reader(client: Any, prefix: str) -> StoreRead:
    """``read(channel)``: the channel's epoch and history events as its store holds them now
    (the form ``tests.chaos.publisher.reconcile`` takes)."""

    def read(channel: str) -> tuple[str | None, list[dict[str, Any]]]:
        meta, hist, _ = redis_layout.channel_keys(prefix, channel)
        epoch = client.hget(meta, "epoch")
        entries = client.lrange(hist, 0, -1)
        events = [json.loads(bytes(e).partition(b" ")[2]) for e in entries]
        return (epoch.decode() if epoch else None), events

    return read


async def publish_for(
    servers: list[ServerProcess], channels: list[str], log: PublishLog, stop: asyncio.Event,
    rate: float = 40.0, loops: int = 2, seed: int = 0,
) -> None:  # fmt: skip
    """The chaos publishers (accepted events logged from the replies, retried with the same
    id) on ``channels`` through any of ``servers`` until ``stop`` is set."""
    await asyncio.gather(
        *(
            publish_loop(
                stop, lambda: [s.url for s in servers], channels, rate, random.Random(seed + i), log
            )
            for i in range(loops)
        )
    )


def guarantee(
    log: PublishLog, watchers: Watchers, read: StoreRead, channels: list[str]
) -> tuple[list[dict[str, Any]], list[Violation]]:
    """Build ``published`` from the replies and the store, and check every history.

    Events the store took but whose reply was lost come from the store (``reconcile``), or
    from what clients received if the store lost them since (as the chaos run does). A
    node that noticed a rollback renewed the channel's epoch at the offset the store went
    back to (its history restarts after it): that is logged as a ``renewed_from`` record.
    Returns the log and the violations (``settled``: the run ended in quiescence).
    """
    for channel in channels:
        epoch, events = read(channel)
        reconcile(log, channel, epoch, events)
    # accepted by a primary that died before replying, delivered, then lost in a promotion
    _reconcile_from_histories(cast(Any, SimpleNamespace(log=log, clients=watchers.clients)))
    published: list[dict[str, Any]] = []
    for channel in channels:
        mine = _store_order([p for p in log.published if p["channel"] == channel])
        epoch, events = read(channel)
        epochs = list(dict.fromkeys(p["epoch"] for p in mine))
        first = events[0]["offset"] if events else None
        if epoch in epochs and epochs.index(epoch) > 0 and first is not None and first > 1:
            # the store's epoch started above offset 1: renewed from the one before it
            at = next(i for i, p in enumerate(mine) if p["epoch"] == epoch)
            renewal = {
                "channel": channel,
                "epoch": epoch,
                "renewed_from": epochs[epochs.index(epoch) - 1],
                "offset": first - 1,
            }
            mine.insert(at, renewal)
        published += mine
    for cid, history in watchers.histories.items():
        assert any(r["kind"] == "event" for r in history), f"client {cid} saw no event"
    return published, check(published, watchers.histories, settled=True)
