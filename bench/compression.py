"""What permessage-deflate would cost the fan-out: ``python -m bench.compression``.

Compares, for a typical ~200-byte event sent to N connections:

* ``none``: the frame is built once and written N times (what the server does);
* ``per-connection``: each connection keeps its own zlib context (RFC 7692 with context
  takeover, what Tornado's ``write_message`` does when a client negotiates compression):
  N compressions per event;
* ``shared``: one compression per event without context takeover, the same compressed
  frame for every connection that negotiated ``server_no_context_takeover``.

Pure CPU, in-process, bounded (``--events`` x ``--connections`` compressions at most);
medians of ``--repeat`` runs. Prints a table and, with ``--json``, one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import zlib

import orjson

EVENT = orjson.dumps(
    {
        "op": "event",
        "channel": "submission:9001",
        "offset": 17,
        "type": "judge.progress",
        "data": {
            "submission": 9001,
            "status": "running",
            "test": 7,
            "of": 25,
            "verdict": None,
            "time_ms": 312,
            "memory_kb": 10240,
        },
    }
)


def _deflate(ctx: zlib._Compress, data: bytes) -> bytes:
    # RFC 7692 7.2.1: compress, sync-flush, drop the trailing 00 00 ff ff
    return (ctx.compress(data) + ctx.flush(zlib.Z_SYNC_FLUSH))[:-4]


def per_connection(events: list[bytes], connections: int) -> tuple[float, int]:
    """Seconds per delivery and bytes of the last message, one context per connection."""
    contexts = [zlib.compressobj(6, zlib.DEFLATED, -15) for _ in range(connections)]
    size = 0
    start = time.perf_counter()
    for event in events:
        for ctx in contexts:
            size = len(_deflate(ctx, event))
    return (time.perf_counter() - start) / (len(events) * connections), size


def shared(events: list[bytes], connections: int) -> tuple[float, int]:
    """Seconds per delivery and bytes, one context-free compression per event."""
    size = 0
    start = time.perf_counter()
    for event in events:
        size = len(_deflate(zlib.compressobj(6, zlib.DEFLATED, -15), event))
    return (time.perf_counter() - start) / (len(events) * connections), size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    # successive events differ a little, as judge progress does
    events = [EVENT.replace(b'"test":7', b'"test":%d' % i) for i in range(args.events)]
    rows = {"none": (0.0, len(EVENT))}
    for name, fn in (("per-connection", per_connection), ("shared", shared)):
        runs = [fn(events, args.connections) for _ in range(args.repeat)]
        rows[name] = (statistics.median(r[0] for r in runs), runs[-1][1])
    if args.json:
        print(
            json.dumps({k: {"us_per_delivery": v[0] * 1e6, "bytes": v[1]} for k, v in rows.items()})
        )
        return
    print(f"event {len(EVENT)} bytes, N={args.connections}, {args.events} events", end="")
    print(f", median of {args.repeat}")
    print(f"{'mode':16} {'CPU µs/delivery':>16} {'bytes/message':>14}")
    for name, (seconds, size) in rows.items():
        print(f"{name:16} {seconds * 1e6:16.3f} {size:14d}")


if __name__ == "__main__":
    main()
