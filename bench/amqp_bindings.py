"""Measure RabbitMQ binding churn: bind and unbind N per-channel routing keys.

    python -m bench.amqp_bindings [--url amqp://...] [--channels 10000] [--nodes 1]

What the server does per channel with local subscribers (``realtime.brokers.rabbitmq``):
one ``queue.bind`` awaited until Bind-Ok, later one ``queue.unbind``. This script runs the
same calls through the server's own ``_Link`` on a throw-away exchange and reports

* bind/unbind rate and per-call latency (p50/p99) when awaited one at a time (one node
  subscribing channels back to back) and with ``--nodes`` links doing it concurrently;
* the same binds sent with nowait and one barrier call (how a reconnect re-binds);
* publish round trips (confirmed) with 0 bindings versus N bindings on the exchange, to
  see whether many bindings slow routing.

The exchange is deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import time
from typing import Any

import pika

from realtime.brokers.rabbitmq import _Link


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _open(url: str, exchange: str) -> tuple[_Link, str]:
    link = _Link(pika.URLParameters(url), asyncio.get_running_loop(), lambda *_: None)
    await link.open()
    ch = link.channel
    await link.rpc(lambda cb: ch.exchange_declare(exchange, "topic", durable=True, callback=cb))
    queue = f"{exchange}.bench.{secrets.token_hex(3)}"
    await link.rpc(
        lambda cb: ch.queue_declare(queue, exclusive=True, auto_delete=True, callback=cb)
    )
    return link, queue


async def _churn(link: _Link, queue: str, exchange: str, keys: list[str], op: str) -> list[float]:
    ch = link.channel
    method = ch.queue_bind if op == "bind" else ch.queue_unbind
    latencies: list[float] = []
    for key in keys:

        def call(cb: Any, k: str = key) -> Any:
            return method(queue, exchange, k, callback=cb)

        t0 = time.perf_counter()
        await link.rpc(call)
        latencies.append(time.perf_counter() - t0)
    return latencies


async def _pipelined(link: _Link, queue: str, exchange: str, keys: list[str]) -> float:
    """Bind with nowait, then one synchronous call as a barrier (how a reconnect re-binds)."""
    ch = link.channel
    t0 = time.perf_counter()
    for key in keys:
        ch.queue_bind(queue, exchange, key)
    await link.rpc(lambda cb: ch.basic_qos(prefetch_count=0, callback=cb))
    return time.perf_counter() - t0


async def _publish_rtt(link: _Link, exchange: str, count: int) -> float:
    props = pika.BasicProperties(content_type="application/json", delivery_mode=2)
    t0 = time.perf_counter()
    for i in range(count):
        await link.publish(exchange, f"contest:{i % 50}", b'{"v":1}', props)
    return (time.perf_counter() - t0) / count


def _report(label: str, latencies: list[float], wall: float) -> dict[str, Any]:
    row = {
        "what": label,
        "calls": len(latencies),
        "per_s": round(len(latencies) / wall),
        "p50_ms": round(statistics.median(latencies) * 1000, 3),
        "p99_ms": round(_pct(latencies, 0.99) * 1000, 3),
        "wall_s": round(wall, 2),
    }
    print(
        f"{label:<34} {row['calls']:>6} calls  {row['per_s']:>6}/s  "
        f"p50 {row['p50_ms']:.3f} ms  p99 {row['p99_ms']:.3f} ms  ({row['wall_s']} s)"
    )
    return row


async def main(url: str, channels: int, nodes: int) -> None:
    exchange = f"rt-bench-bindings-{secrets.token_hex(4)}"
    links = [await _open(url, exchange) for _ in range(nodes)]
    try:
        link, queue = links[0]
        base = await _publish_rtt(link, exchange, 500)
        print(f"confirmed publish, 0 bindings:      {base * 1000:.3f} ms each")

        keys = [f"user:{i}" for i in range(channels)]
        t0 = time.perf_counter()
        lat = await _churn(link, queue, exchange, keys, "bind")
        _report(f"bind, 1 node, {channels} channels", lat, time.perf_counter() - t0)

        loaded = await _publish_rtt(link, exchange, 500)
        print(f"confirmed publish, {channels} bindings: {loaded * 1000:.3f} ms each")

        t0 = time.perf_counter()
        lat = await _churn(link, queue, exchange, keys, "unbind")
        _report(f"unbind, 1 node, {channels} channels", lat, time.perf_counter() - t0)

        wall = await _pipelined(link, queue, exchange, keys)
        print(f"bind nowait + barrier, {channels}:     {channels / wall:.0f}/s ({wall:.2f} s)")
        await _churn(link, queue, exchange, keys, "unbind")

        if nodes > 1:
            per = [[f"user:{n}.{i}" for i in range(channels // nodes)] for n in range(nodes)]
            for op in ("bind", "unbind"):
                t0 = time.perf_counter()
                results = await asyncio.gather(
                    *(
                        _churn(lk, q, exchange, ks, op)
                        for (lk, q), ks in zip(links, per, strict=True)
                    )
                )
                _report(
                    f"{op}, {nodes} nodes at once",
                    [x for r in results for x in r],
                    time.perf_counter() - t0,
                )
    finally:
        link, _ = links[0]
        ch = link.channel
        await link.rpc(lambda cb: ch.exchange_delete(exchange, callback=cb))
        for lk, _ in links:
            lk.close()
        await asyncio.gather(*(asyncio.wait_for(lk.lost, 2) for lk, _ in links))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    parser.add_argument("--channels", type=int, default=10_000)
    parser.add_argument("--nodes", type=int, default=1)
    args = parser.parse_args()
    asyncio.run(main(args.url, args.channels, args.nodes))
