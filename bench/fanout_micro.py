"""Python cost of one delivery, without the kernel: ``python -m bench.fanout_micro``.

Builds N real ``Connection`` objects (no sockets: a fake socket whose ``send``
takes everything), subscribes them to one channel, and times ``Hub.publish`` plus the
per-tick flush for ``--events`` events. What is left of a real delivery's cost is the
``send()`` system call and cache misses. Bounded; medians of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from realtime.brokers.memory import MemoryBroker
from realtime.config import Settings, validate
from realtime.connection import Connection, _flush_all
from realtime.context import ServerContext
from realtime.envelope import Event
from realtime.heartbeat import HeartbeatWheel
from realtime.node import Node


class _Socket:
    def send(self, data: bytes) -> int:
        return len(data)


async def measure(connections: int, events: int, repeat: int) -> list[float]:
    """Return µs per delivery of each run."""
    settings = validate(Settings(dev=True))
    node = Node(settings, MemoryBroker(100, 600))
    heartbeat = HeartbeatWheel(settings.heartbeat)
    ctx = ServerContext(settings=settings, node=node, metrics=node.metrics, heartbeat=heartbeat)
    channel = "contest:micro"
    for _ in range(connections):
        conn = Connection(ctx, "127.0.0.1")
        conn._socket = _Socket()  # type: ignore[assignment]  # never attached: no reader
        conn._offsets[channel] = 0
        node.hub.add(channel, conn)
    payload = b'{"op":"event","channel":"contest:micro","offset":%d,"type":"t","data":"%s"}'
    runs = []
    offset = 0
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(events):
            offset += 1
            node.hub.publish(Event(channel, "e", offset, payload % (offset, b"x" * 120)))
            _flush_all(ctx)
        runs.append((time.perf_counter() - start) / (events * connections) * 1e6)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--events", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    runs = asyncio.run(measure(args.connections, args.events, args.repeat))
    print(
        f"python µs per delivery (N={args.connections}, {args.events} events): "
        f"median {statistics.median(runs):.3f}, runs {', '.join(f'{r:.3f}' for r in runs)}"
    )


if __name__ == "__main__":
    main()
