"""Where an idle connection's memory goes: ``python -m bench.memory --connections 2000``.

Runs the server in this process (uvloop, ``--broker``), opens and subscribes the
connections from a picows client process, and reports the server's RSS growth per
connection and, with ``--trace``, the Python objects per connection by allocation site
(tracemalloc; it slows the handshakes and doubles RSS, so its RSS figure is not the
server's). Loopback only, bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import tracemalloc

from bench.loadgen import LoadConfig, LoadGenerator
from bench.run import SECRET, free_port


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def measure(connections: int, broker: str, trace: bool, top: int) -> None:
    """Print RSS (and with ``trace`` Python allocations) per idle subscribed connection."""
    from realtime.config import load_settings
    from realtime.server import Server

    port = free_port()
    env = {
        "REALTIME_BROKER_URL": broker,
        "REALTIME_REDIS_PREFIX": f"bench-memory-{port}:",
        "REALTIME_SECRET": SECRET,
        "REALTIME_PORT": str(port),
        "REALTIME_LOG_LEVEL": "WARNING",
    }
    server = Server(load_settings(None, env=env))
    await server.start()
    try:
        await asyncio.sleep(0.5)
        gc.collect()
        if trace:
            tracemalloc.start(12)
        before_rss = _rss()
        before = tracemalloc.take_snapshot() if trace else None
        gen = LoadGenerator(LoadConfig(url=f"ws://127.0.0.1:{port}/ws", connections=connections))
        try:
            opened = await gen.open()
            await asyncio.sleep(1.0)
            gc.collect()
            grown = (_rss() - before_rss) / opened["subscribed"] / 1024
            print(f"{opened['subscribed']} connections: RSS +{grown:.2f} KB per connection")
            if before is not None:
                stats = tracemalloc.take_snapshot().compare_to(before, "traceback")
                total = sum(s.size_diff for s in stats) / connections
                print(f"Python objects: {total / 1024:.2f} KB per connection; largest sites:")
                for stat in stats[:top]:
                    frame = stat.traceback[-1]
                    print(
                        f"  {stat.size_diff / connections:7.0f} B  "
                        f"{'/'.join(frame.filename.split('/')[-2:])}:{frame.lineno}"
                    )
        finally:
            await gen.close()
    finally:
        await server.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--broker", default="memory://")
    parser.add_argument("--trace", action="store_true", help="tracemalloc by allocation site")
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    asyncio.run(measure(args.connections, args.broker, args.trace, args.top))


if __name__ == "__main__":
    main()
