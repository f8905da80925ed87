"""Helpers of the cluster tests: channels per shard, recording clients, a publisher that
retries, and a checker of what each client saw against what the store holds."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.cluster

from realtime.brokers import redis_layout
from realtime.brokers.redis_cluster import channel_slot
from tests.client import Client
from tests.conftest import ServerProcess


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


def check(recorder: Recorder, channel: str, final: int, data: dict[int, Any]) -> int:
    """Every stored event once and in order, or covered by a resync; return resyncs seen.

    Within the log, offsets only grow; an event's data is the store's data at its offset
    (a reused offset would differ); an offset skipped is covered by a resync notice at or
    after it; the client ends at the store's final offset.
    """
    position = None
    resyncs = 0
    for kind, offset, value in recorder.log[channel]:
        if kind == "subscribed":
            position = offset
            continue
        assert position is not None
        if kind == "resync":
            resyncs += 1
            assert offset >= position, (channel, "resync went back", offset, position)
            position = offset
            continue
        assert offset == position + 1, (channel, "gap or repeat", position, offset)
        if offset in data:
            assert value == data[offset], (channel, offset, value, data[offset])
        position = offset
    assert position == final, (channel, "ends at", position, "store at", final)
    return resyncs


class Publisher(threading.Thread):
    """Publishes ``count`` events per channel through the HTTP API of the given servers
    (round robin), in order, retrying an event (same id) until a server takes it."""

    def __init__(self, servers: list[ServerProcess], channels: list[str], count: int,
                 pause: float = 0.01) -> None:  # fmt: skip
        super().__init__(daemon=True)
        self.servers = servers
        self.channels = channels
        self.count = count
        self.pause = pause
        self.retries = 0
        self.published = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            turn = 0
            for i in range(self.count):
                for name in self.channels:
                    envelope = {"channel": name, "type": "t", "data": {"i": i}, "id": f"{name}#{i}"}
                    deadline = time.monotonic() + 30
                    while True:
                        server = self.servers[turn % len(self.servers)]
                        turn += 1
                        try:
                            server.publish(envelope)
                            break
                        except (urllib.error.URLError, OSError):
                            self.retries += 1
                            assert time.monotonic() < deadline, "could not publish for 30 s"
                            time.sleep(0.1)
                    self.published += 1
                time.sleep(self.pause)
        except BaseException as exc:
            self.error = exc


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
