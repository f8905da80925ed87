"""Profile our server under fan-out load with py-spy; print where the time goes.

``python -m bench.profile --connections 5000 --rounds 4 [--rate 2 --events 20]`` starts
``realtime serve`` (Redis broker, unique prefix), holds the connections, samples the server
with ``py-spy record`` while it runs the rounds (burst by default), then prints the top
functions by own time and by total time (collapsed stacks are kept in ``bench/results/raw/``).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from bench.loadgen import LoadConfig, LoadGenerator, raise_fd_limit
from bench.publishers import make_publisher
from bench.run import RESULTS, TARGETS, running

LINE_RE = re.compile(r":\d+\)$")


def top_functions(collapsed: Path, limit: int) -> str:
    """Summarise py-spy's collapsed stacks: own and inclusive share per function."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        # the first frame is the thread name; drop line numbers to group by function
        frames = [LINE_RE.sub(")", f) for f in stack.split(";")[1:]]
        samples += count
        if frames:
            own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    lines = [f"{samples} samples", "", "own time:"]
    lines += [f"{100 * c / samples:5.1f}%  {f}" for f, c in own.most_common(limit)]
    lines += ["", "inclusive time:"]
    lines += [f"{100 * c / samples:5.1f}%  {f}" for f, c in total.most_common(limit)]
    return "\n".join(lines)


async def load(pid: int, port: int, prefix: str, args: argparse.Namespace) -> None:
    config = LoadConfig(
        url=f"ws://127.0.0.1:{port}/ws",
        connections=args.connections,
        target="realtime",
        server_pids=[pid],
        connect_concurrency=TARGETS["realtime"].connect_concurrency,
    )
    publisher = make_publisher("redis", redis_url=args.redis_url, prefix=prefix)
    gen = LoadGenerator(config)
    try:
        await gen.open()
        for i in range(args.rounds):
            rate = args.rate
            result = await gen.round(
                publisher, events=args.events, rate=rate, duration=60, grace=30
            )
            print(
                f"round {i} {result.mode}: {result.server_cpu_us_per_delivery:.2f} µs/delivery, "
                f"{result.deliveries_per_s:,.0f} deliveries/s, lost {result.lost}",
                flush=True,
            )
    finally:
        await gen.close()
        await publisher.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--events", type=int, default=50, help="events per round")
    parser.add_argument("--rate", type=float, default=0.0, help="events/s; 0 = burst")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--summarise", metavar="FILE", help="only summarise saved stacks")
    args = parser.parse_args(argv)
    if args.summarise:
        print(top_functions(Path(args.summarise), args.top))
        return 0
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    raise_fd_limit()
    raw = RESULTS / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    out = raw / f"profile-{time.strftime('%Y%m%d-%H%M%S')}.txt"
    with running(TARGETS["realtime"], args.redis_url, raw) as (pid, port, prefix):
        recorder = subprocess.Popen(
            [spy, "record", "--pid", str(pid), "--format", "raw", "--output", str(out),
             "--rate", "200", "--nonblocking"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            asyncio.run(load(pid, port, prefix, args))
        finally:
            recorder.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            try:
                recorder.wait(30)
            except subprocess.TimeoutExpired:
                recorder.kill()
    print(top_functions(out, args.top))
    print(f"\ncollapsed stacks: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
