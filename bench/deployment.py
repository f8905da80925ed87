"""The deployment check: ``realtime loadtest`` against a server the benchmark starts.

``python -m bench.deployment --connections 2000 --rate 2 --duration 20 --reps 3`` starts
``realtime serve`` on the Redis broker (``--workers 2`` with ``--workers 2``), runs the
installed load test against it (the same code users point at their own deployment), and
prints the median of each figure over the repetitions; ``--out`` writes them as JSON
(default ``bench/results/deployment.json``). A repetition with any lost or duplicated
event fails the run (exit 1).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import statistics
import sys
import tempfile
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from bench.run import API_KEY, ROOT, TARGETS, running
from realtime.loadtest import Options, Summary, run, table

FIGURES = ("deliveries_per_s", "latency_p50_ms", "latency_p99_ms", "latency_max_ms")


def main(argv: list[str] | None = None) -> int:
    """Run the repetitions; exit 1 when any lost or duplicated an event."""
    p = argparse.ArgumentParser(prog="python -m bench.deployment", description=__doc__)
    p.add_argument("--connections", type=int, default=2000)
    p.add_argument("--rate", type=float, default=2.0)
    p.add_argument("--size", type=int, default=200)
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--processes", type=int, default=1)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "deployment.json"))
    args = p.parse_args(argv)
    target = TARGETS["realtime-w2"] if args.workers == 2 else TARGETS["realtime"]
    runs: list[Summary] = []
    with tempfile.TemporaryDirectory() as logs:
        for rep in range(args.reps):
            with running(target, args.redis_url, Path(logs)) as (_pid, port, _prefix):
                options = Options(
                    url=f"ws://127.0.0.1:{port}/ws",
                    channel=f"contest:deployment{rep}",
                    connections=args.connections,
                    publish_url=f"http://127.0.0.1:{port}/api/publish",
                    api_key=API_KEY,
                    rate=args.rate,
                    size=args.size,
                    duration=args.duration,
                    processes=args.processes,
                    grace=3.0,
                )
                summary = asyncio.run(run(options, out=io.StringIO()))
            runs.append(summary)
            print(f"repetition {rep + 1}:\n{table(summary)}\n", flush=True)
    medians: dict[str, Any] = {
        name: statistics.median(v for r in runs if (v := getattr(r, name)) is not None)
        for name in FIGURES
    }
    report = {
        "target": target.name,
        "options": {k: v for k, v in vars(args).items() if k != "out"},
        "medians": medians,
        "runs": [asdict(replace(r)) | {"ok": r.ok} for r in runs],
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(medians, indent=2))
    return 0 if all(r.ok for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
