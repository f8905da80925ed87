"""One Redis against a 3-shard Redis Cluster (sharded pub/sub), on loopback.

    python -m bench.cluster [--runs 3] [--events 20000] [--channels 1000] [--json PATH]

Starts, on free loopback ports, one ``redis-server`` and a 3-primary + 3-replica cluster
(``tests/cluster/redis_procs``), stopped by PID at the end. For each deployment, ``--runs``
times (medians reported; the cluster as a ratio to the single Redis measured in the same run):

* **publish script**: events/s through the server's own ``RedisStore.publish`` (the atomic
  script; SPUBLISH on the cluster), 32 concurrent publishes (each with an id) over
  ``--channels`` channels;
* **deliveries**: the same publishing while two "nodes" (child processes, each the
  server's own broker subscribed to every channel) count what they receive; deliveries/s =
  events received by both nodes per second, and the share that arrived;
* **per-shard traffic**: SPUBLISH calls per primary (``INFO commandstats``) in that run;
* **partition skew**: for N channels named like a site's (``contest:<i>``), the busiest
  shard's share against the even 1/3, computed from the cluster's slot map.

The machine's cores are shared by every process here (Redis servers, publisher, nodes), so
a cluster cannot show its scaling on 2 cores; the numbers say what it costs, not what it
gains on more machines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from realtime.brokers.redis import RedisBroker, RedisStore, store_client
from realtime.brokers.redis_cluster import RedisClusterBroker, channel_slot
from realtime.envelope import Envelope, Event
from realtime.errors import BrokerUnavailable
from tests.cluster.redis_procs import RedisCluster3x2, RedisProc
from tests.conftest import free_port

CONCURRENCY = 32


def _channels(n: int) -> list[str]:
    return [f"contest:{i}" for i in range(n)]


async def _publish(url: str, prefix: str, channels: list[str], events: int) -> float:
    """Publish ``events`` round robin over ``channels``; return events per second."""
    client = store_client(url)
    sharded = url.startswith(("redis+cluster", "rediss+cluster"))
    store = RedisStore(client, prefix, 100, 600, 3600, sharded=sharded)
    queue = iter(range(events))
    retries = [0]

    async def worker() -> None:
        for i in queue:
            envelope = Envelope(channels[i % len(channels)], "t", b'{"i":%d}' % i, id=f"e{i}")
            while True:
                try:
                    await store.publish(envelope)
                    break
                except BrokerUnavailable:  # a stalled machine; the id makes the retry safe
                    retries[0] += 1

    await store.publish(Envelope(channels[0], "t", b"0"))  # load the script, warm the pool
    start = time.perf_counter()
    await asyncio.gather(*[worker() for _ in range(CONCURRENCY)])
    elapsed = time.perf_counter() - start
    await client.aclose()
    if retries[0]:
        print(f"({retries[0]} publishes retried)")
    return events / elapsed


def _node(url: str, prefix: str, channels: list[str], ready: Any, done: Any, out: Any) -> None:
    """A child process: the server's broker subscribed to every channel, counting events."""

    async def main() -> None:
        cls = RedisClusterBroker if url.startswith("redis+cluster") else RedisBroker
        broker = cls(url, prefix, 100, 600, 3600)
        count = [0]
        stamps: list[float] = []

        def on_event(event: Event) -> None:
            count[0] += 1
            if count[0] == 1:
                stamps.append(time.perf_counter())

        await broker.start(on_event, lambda _h: None)
        while not broker.healthy:  # noqa: ASYNC110 - no event to wait on
            await asyncio.sleep(0.05)
        await asyncio.gather(*[broker.subscribe(c) for c in channels])
        ready.set()
        await asyncio.to_thread(done.wait)
        out.put(count[0])
        await broker.close()

    asyncio.run(main())


def _deliveries(url: str, prefix: str, channels: list[str], events: int) -> dict[str, float]:
    ctx = multiprocessing.get_context("spawn")
    done = ctx.Event()
    out = ctx.Queue()
    readies = [ctx.Event() for _ in range(2)]
    nodes = [ctx.Process(target=_node, args=(url, prefix, channels, r, done, out)) for r in readies]
    for node in nodes:
        node.start()
    try:
        for r in readies:
            assert r.wait(60), "a node did not subscribe in time"
        rate = asyncio.run(_publish(url, prefix, channels, events))
        time.sleep(1.0)  # let the last messages arrive
        elapsed = events / rate
        done.set()
        received = [out.get(timeout=30) for _ in nodes]
        return {
            "events_per_s": rate,
            "deliveries_per_s": sum(received) / elapsed,
            "delivered_share": sum(received) / (2 * (events + 1)),  # + the warm-up event
        }
    finally:
        done.set()
        for node in nodes:
            node.join(10)
            if node.is_alive():
                node.kill()


def _cpu(procs: list[RedisProc]) -> dict[int, float]:
    """CPU seconds (user + sys) each Redis server has used so far."""
    out = {}
    for proc in procs:
        info = proc.client().info("cpu")
        out[proc.port] = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    return out


def _spublish_calls(cluster: RedisCluster3x2) -> dict[int, int]:
    calls = {}
    for port in cluster.primaries():
        stats = cluster.proc(port).client().info("commandstats")
        calls[port] = int(stats.get("cmdstat_spublish", {}).get("calls", 0))
    return calls


def skew(cluster: RedisCluster3x2, prefix: str, counts: list[int]) -> list[dict[str, Any]]:
    """The busiest shard's share of channels (even = 1/3) for each channel count."""
    rows = []
    owner: dict[int, int] = {}
    for n in counts:
        slots = [channel_slot(prefix, c) for c in _channels(n)]
        for slot in slots:
            if slot not in owner:
                owner[slot] = cluster.owner_port(slot)
        owners = Counter(owner[slot] for slot in slots)
        rows.append(
            {
                "channels": n,
                "shards_used": len(owners),
                "busiest_share": max(owners.values()) / n,
                "ratio_to_even": max(owners.values()) / n * 3,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--channels", type=int, default=1000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    single = RedisProc(free_port(), work, ["--save", "", "--appendonly", "no"])
    cluster = RedisCluster3x2(work / "cluster")
    results: dict[str, Any] = {"runs": [], "args": vars(args) | {"json": str(args.json)}}
    try:
        single.start()
        cluster.start()
        urls = {"single": f"redis://127.0.0.1:{single.port}/0", "cluster": cluster.url}
        channels = _channels(args.channels)
        for run in range(args.runs):
            row: dict[str, Any] = {}
            for name, url in urls.items():
                prefix = f"bc{run}{name[0]}:"
                before = _spublish_calls(cluster) if name == "cluster" else {}
                servers = (
                    [single] if name == "single" else [cluster.proc(p) for p in cluster.primaries()]
                )
                cpu_before = _cpu(servers)
                row[name] = {
                    "publish_script_events_per_s": asyncio.run(
                        _publish(url, prefix, channels, args.events)
                    ),
                    **_deliveries(url, prefix + "d:", channels, args.events),
                }
                cpu = _cpu(servers)
                # Redis CPU per 10,000 events (publish-script pass + deliveries pass): the
                # busiest server's share is what limits a deployment whose shards have cores
                row[name]["redis_cpu_s_per_10k_events"] = {
                    str(p): (cpu[p] - cpu_before[p]) / (2 * args.events) * 10000 for p in cpu
                }
                if name == "cluster":
                    after = _spublish_calls(cluster)
                    row[name]["spublish_per_shard"] = {
                        str(p): after[p] - before.get(p, 0) for p in after
                    }
            results["runs"].append(row)
            print(json.dumps(row))
        results["skew"] = skew(cluster, "rt:", [1, 3, 10, 30, 100, 1000])
    finally:
        cluster.stop()
        single.stop()
    summary: dict[str, Any] = {}
    runs = results["runs"]
    for metric in ("publish_script_events_per_s", "events_per_s", "deliveries_per_s"):
        summary[metric] = {
            "single": statistics.median(r["single"][metric] for r in runs),
            "cluster": statistics.median(r["cluster"][metric] for r in runs),
            # the ratio within each run (same machine state), then its median
            "cluster_to_single": statistics.median(
                r["cluster"][metric] / r["single"][metric] for r in runs
            ),
        }
    busiest = "redis_cpu_s_per_10k_events"
    summary[busiest] = {
        "single": statistics.median(max(r["single"][busiest].values()) for r in runs),
        "cluster_busiest_shard": statistics.median(
            max(r["cluster"][busiest].values()) for r in runs
        ),
        "cluster_all_shards": statistics.median(sum(r["cluster"][busiest].values()) for r in runs),
    }
    results["summary"] = summary
    print(json.dumps({"summary": summary, "skew": results["skew"]}, indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
