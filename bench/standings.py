"""Cost of live standings: ``python -m bench.standings`` (loopback, bounded, medians).

Starts ``realtime serve`` (redis broker, a unique prefix) and, in this process, the bridge
(Django configured in memory) recording verdicts with ``Leaderboard.record_verdict``.

1. Fills a board of ``--contestants`` (one verdict each), then records ``--record`` more
   verdicts on the full board: verdicts recorded per second by one process (each one
   publishes the top-N board, the move, the user's row and the jury board).
2. Holds ``--watchers`` WebSocket clients and records verdicts paced at ``--rate`` a minute
   for ``--seconds``, twice per repetition, interleaved: *baseline*, watchers on
   ``leaderboard:<C>`` only (the top N, what existed before moves); *standings*, watchers
   also on ``standings:<C>`` (every move, merged per window) and ``presence:standings:<C>``.
   Reports frames and bytes per watcher per 500 ms window, per channel, and the server's
   CPU (from /proc), medians of ``--repeat`` runs, and the standings/baseline CPU ratio.

Results print as one JSON document (``--out`` writes it too).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import websockets

from bench import procstat
from bench.run import TARGETS, running

WINDOW_S = 0.5
PROBLEMS = "ABCDEFGHIJ"


def _configure_django(redis_url: str, prefix: str) -> None:
    import django
    from django.conf import settings

    settings.configure(
        INSTALLED_APPS=["django_bridge"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        USE_TZ=True,
        REALTIME={"BROKER_URL": redis_url, "PREFIX": prefix, "RAISE_ON_ERROR": True},
    )
    django.setup()


class Judge:
    """Seeded ICPC verdicts for ``contestants`` contestants, recorded through the bridge."""

    def __init__(self, redis_url: str, prefix: str, contestants: int, seed: int) -> None:
        import redis

        from django_bridge.leaderboard import Contest, Leaderboard

        self.board = Leaderboard(redis.Redis.from_url(redis_url), prefix=prefix + "lb:")
        self.contest = Contest(id=f"bench{uuid.uuid4().hex[:6]}", top_n=50)
        self.users = [f"c{i:05d}" for i in range(contestants)]
        self.rng = random.Random(seed)
        self.count = 0

    def record(self, user: str | None = None) -> None:
        self.count += 1
        rng = self.rng
        user = user or rng.choice(self.users)
        result = "AC" if rng.random() < 0.3 else rng.choice(["WA", "TLE", "CE"])
        at = 60 + self.count * 0.05 + rng.random()
        self.board.record_verdict(
            self.contest, user, rng.choice(PROBLEMS), result, at, submission=self.count
        )


def recording_rate(judge: Judge, count: int) -> float:
    """Record ``count`` verdicts on the full board as fast as possible; return per second."""
    began = time.perf_counter()
    for _ in range(count):
        judge.record()
    return count / (time.perf_counter() - began)


class Watchers:
    """WebSocket clients that count frames and bytes per channel (the first event's)."""

    def __init__(self, url: str, channels: list[str], n: int) -> None:
        self.url, self.channels, self.n = url, channels, n
        self.frames: dict[str, int] = {}
        self.bytes: dict[str, int] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self.ready = 0
        self.all_ready = asyncio.Event()

    async def _one(self) -> None:
        async with websockets.connect(self.url, max_size=None, ping_interval=None) as ws:
            for channel in self.channels:
                await ws.send(orjson.dumps({"op": "subscribe", "channel": channel}).decode())
            self.ready += 1
            if self.ready == self.n:
                self.all_ready.set()
            async for text in ws:
                raw = text if isinstance(text, bytes) else text.encode()
                head = orjson.loads(raw.split(b"\n", 1)[0])
                if head.get("op") != "event":
                    continue
                channel = head["channel"].split(":", 1)[0]
                self.frames[channel] = self.frames.get(channel, 0) + 1
                self.bytes[channel] = self.bytes.get(channel, 0) + len(raw)

    async def open(self) -> None:
        self.ready = 0
        self.all_ready.clear()
        self.tasks = [asyncio.create_task(self._one()) for _ in range(self.n)]
        await asyncio.wait_for(self.all_ready.wait(), 60)
        await asyncio.sleep(1.0)  # subscribed replies in

    def reset(self) -> None:
        self.frames, self.bytes = {}, {}

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def paced(
    judge: Judge, watchers: Watchers, pid: int, rate_per_min: float, seconds: float
) -> dict[str, Any]:
    """Record at a steady rate in a thread; return per watcher per window figures and CPU."""
    watchers.reset()
    stop = threading.Event()

    def pace() -> None:
        step = 60.0 / rate_per_min
        due = time.monotonic()
        while not stop.is_set():
            judge.record()
            due += step
            stop.wait(max(0.0, due - time.monotonic()))

    before = procstat.sample([pid]).cpu_ns
    began = time.monotonic()
    thread = threading.Thread(target=pace, daemon=True)
    thread.start()
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.to_thread(thread.join)
    await asyncio.sleep(2 * WINDOW_S)  # the last window out
    wall = time.monotonic() - began
    cpu = (procstat.sample([pid]).cpu_ns - before) / 1e9
    windows = wall / WINDOW_S
    per = {
        ch: {
            "frames": watchers.frames[ch] / watchers.n / windows,
            "bytes": watchers.bytes.get(ch, 0) / watchers.n / windows,
        }
        for ch in watchers.frames
    }
    return {
        "per_watcher_per_window": per,
        "frames": sum(v["frames"] for v in per.values()),
        "bytes": sum(v["bytes"] for v in per.values()),
        "server_cpu": cpu / wall,
    }


async def main_async(args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    target = TARGETS["realtime"]
    with running(target, args.redis_url, log_dir) as (pid, port, prefix):
        _configure_django(args.redis_url, prefix)
        judge = Judge(args.redis_url, prefix, args.contestants, args.seed)
        began = time.perf_counter()
        for user in judge.users:
            judge.record(user)
        fill_rate = args.contestants / (time.perf_counter() - began)
        rates = [recording_rate(judge, args.record) for _ in range(args.repeat)]
        url = f"ws://127.0.0.1:{port}/ws"
        cid = judge.contest.id
        base = Watchers(url, [f"leaderboard:{cid}"], args.watchers)
        full = Watchers(
            url,
            [f"leaderboard:{cid}", f"standings:{cid}", f"presence:standings:{cid}"],
            args.watchers,
        )
        runs: dict[str, list[dict[str, Any]]] = {"baseline": [], "standings": []}
        for _ in range(args.repeat):
            for name, watchers in (("baseline", base), ("standings", full)):
                await watchers.open()
                runs[name].append(await paced(judge, watchers, pid, args.rate, args.seconds))
                await watchers.close()

    def med(name: str, key: str) -> float:
        return float(statistics.median(r[key] for r in runs[name]))

    def med_channel(name: str, channel: str, key: str) -> float:
        return float(
            statistics.median(
                r["per_watcher_per_window"].get(channel, {}).get(key, 0.0) for r in runs[name]
            )
        )

    return {
        "contestants": args.contestants,
        "watchers": args.watchers,
        "rate_per_min": args.rate,
        "seconds": args.seconds,
        "repeat": args.repeat,
        "fill_verdicts_per_s": round(fill_rate, 1),
        "record_verdicts_per_s": [round(r, 1) for r in rates],
        "record_verdicts_per_s_median": round(statistics.median(rates), 1),
        "median": {
            name: {
                "frames_per_watcher_per_window": round(med(name, "frames"), 3),
                "bytes_per_watcher_per_window": round(med(name, "bytes"), 1),
                "server_cpu": round(med(name, "server_cpu"), 4),
                "by_channel": {
                    ch: {
                        "frames": round(med_channel(name, ch, "frames"), 3),
                        "bytes": round(med_channel(name, ch, "bytes"), 1),
                    }
                    for ch in ("leaderboard", "standings", "presence")
                },
            }
            for name in runs
        },
        "cpu_ratio_standings_to_baseline": round(
            med("standings", "server_cpu") / max(med("baseline", "server_cpu"), 1e-9), 2
        ),
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--contestants", type=int, default=10_000)
    parser.add_argument("--record", type=int, default=2_000, help="verdicts per rate run")
    parser.add_argument("--watchers", type=int, default=300)
    parser.add_argument("--rate", type=float, default=1_000.0, help="verdicts a minute")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of one paced run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--log-dir", default="/tmp/bench-standings")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    log_dir = Path(args.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    doc = asyncio.run(main_async(args, log_dir))
    text = json.dumps(doc, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
