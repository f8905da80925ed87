"""How many connections one box holds: 1,000 to 100,000 WebSocket connections (issue 19).

``python -m bench.scale`` starts, for every size N and repetition, a fresh server (and the
raw-socket floor at the same N), opens N connections from ``--processes`` client processes
spread over source addresses in 127.0.0.0/8 (so that ephemeral ports do not run out), and
measures:

* **RSS per connection**: the whole server process tree (supervisor and workers) divided
  by N, so the per-worker overhead is included, and the growth alone (after - before) / N;
* **handshakes per second**: connections opened and subscribed / seconds;
* **one event to all**: publish one event, time until the last of the N copies arrives;
* **steady 1 event/s to all**: publish-to-receive p50/p99, server CPU per delivery and its
  ratio to the floor's at the same N;
* **private channels**: N connections each on its own ``user:<i>`` channel (each with a
  token of its own): subscribe rate, RSS and the Redis memory they cost.

Targets (``--targets``): ``floor`` (raw asyncio transports, one process), ``memory``
(``realtime serve``, ``memory://``: one worker, since ``--workers`` needs a shared broker),
``redis`` (``--workers 2`` on Redis), ``redis-w1`` (one worker on Redis, for per-core
figures), ``private`` (``--workers 2`` on Redis, a ``user:`` channel per connection).
Redis is a private ``redis-server`` this command starts on a free port (stopped by PID), so
its memory is ours alone. The open-file limits are raised here (root can raise the hard
limit; every server child inherits it). Results go to ``bench/results/scale.json``;
``python -m bench.scale --report`` renders docs/PERFORMANCE.md's table and
``docs/scale.png`` from it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import procstat
from bench.loadgen import LoadConfig, LoadGenerator, raise_fd_limit
from bench.publishers import make_publisher
from bench.run import API_KEY, PY, ROOT, SECRET, free_port, stop, versions, wait_listening

RESULTS = ROOT / "bench" / "results" / "scale.json"
DOC = ROOT / "docs" / "PERFORMANCE.md"
PLOT = ROOT / "docs" / "scale.png"
BEGIN, END = "<!-- scale:begin -->", "<!-- scale:end -->"
SIZES = (1_000, 10_000, 25_000, 50_000, 100_000)
FD_LIMIT = 262_144


@dataclass(frozen=True, slots=True)
class Target:
    """A server to measure and how clients reach it."""

    name: str
    broker: str  # "memory", "redis" or "floor"
    workers: int = 1
    private: bool = False  # a user:<i> channel per connection
    note: str = ""

    def processes(self, n: int, per_process: int) -> int:
        """Server processes for N connections: the target's, or more if the fd limit says so.

        ``memory://`` stays at one (workers need a shared broker): 0 = N is out of reach.
        """
        if self.broker == "memory":
            return 1 if n <= per_process else 0
        return max(self.workers, -(-n // per_process))

    def command(self, port: int, prefix: str, redis_url: str, workers: int) -> list[str]:
        if self.broker == "floor":
            return [
                PY, "-m", "bench.peers.floor", "--port", str(port), "--prefix", prefix,
                "--redis-url", redis_url, "--workers", str(workers),
            ]  # fmt: skip
        return [PY, "-m", "realtime", "serve", "--port", str(port), "--workers", str(workers)]

    def env(self, prefix: str, redis_url: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            REALTIME_BROKER_URL="memory://" if self.broker == "memory" else redis_url,
            REALTIME_REDIS_PREFIX=prefix,
            REALTIME_SECRET=SECRET,
            REALTIME_API_KEY=API_KEY,
            REALTIME_LOG_LEVEL="WARNING",
            # per process; the default 50,000 would refuse a worker that got more than half
            REALTIME_MAX_CONNECTIONS="150000",
            # measure what the server can admit, not the default admission limit
            REALTIME_MAX_CONNECT_RATE="0",
        )
        return env


TARGETS = {
    "floor": Target("floor", "floor", note="raw asyncio transports + uvloop, one process"),
    "memory": Target("memory", "memory", note="realtime serve, memory://, one worker"),
    "redis": Target("redis", "redis", workers=2, note="realtime serve --workers 2, Redis"),
    "redis-w1": Target("redis-w1", "redis", note="realtime serve, Redis, one worker"),
    "private": Target(
        "private", "redis", workers=2, private=True, note="--workers 2, a user:<i> channel each"
    ),
}


@dataclass(slots=True)
class Plan:
    sizes: tuple[int, ...] = SIZES
    reps: int = 3
    targets: tuple[str, ...] = ("floor", "memory", "redis", "private")
    processes: int = 2
    steady_events: int = 8
    one_to_all: int = 3
    per_source: int = 100  # connections per source address
    # connections per process (server or client); lowered to the fd limit
    per_process: int = 150_000
    private_sizes: tuple[int, ...] | None = None  # None: the same sizes as the others
    extra: dict[str, Any] = field(default_factory=dict)


@contextmanager
def private_redis() -> Iterator[tuple[str, int]]:
    """A redis-server of our own on a free port (nothing on disk); stopped by PID."""
    port = free_port()
    folder = tempfile.mkdtemp(prefix="scale-redis-")
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", folder, "--maxclients", "10000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_listening(port, proc, 10)
        yield f"redis://127.0.0.1:{port}/0", proc.pid
    finally:
        stop(proc)
        shutil.rmtree(folder, ignore_errors=True)


def redis_memory(redis_url: str) -> int:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        return int(client.info("memory")["used_memory"])
    finally:
        client.close()


@contextmanager
def server(
    target: Target, redis_url: str, log_dir: Path, workers: int
) -> Iterator[tuple[int, int, str]]:
    """Start the target on a free port; yield (pid, port, prefix); stop it by PID."""
    port = free_port()
    prefix = f"scale-{target.name}-{port}:"
    with (log_dir / f"{target.name}-{port}.log").open("wb") as log:
        proc = subprocess.Popen(
            target.command(port, prefix, redis_url, workers),
            env=target.env(prefix, redis_url),
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_listening(port, proc, 30)
            yield proc.pid, port, prefix
        finally:
            stop(proc)


async def settle(pids: list[int], limit: float = 30.0) -> None:
    """Wait until the server is idle (under 5% of a core for half a second)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        before = procstat.sample(pids).cpu_ns
        await asyncio.sleep(0.5)
        if procstat.sample(pids).cpu_ns - before < 0.025e9:
            return


async def measure(
    target: Target, n: int, rep: int, plan: Plan, redis_url: str, log_dir: Path
) -> dict[str, Any]:
    """One repetition of one target at one size: a fresh server, N connections, rounds."""
    workers = target.processes(n, plan.per_process)
    if not workers:
        return {"target": target.name, "n": n, "rep": rep, "skipped": "over the fd limit"}
    clients = max(plan.processes, -(-n // plan.per_process))
    row: dict[str, Any] = {"target": target.name, "n": n, "rep": rep, "server_processes": workers}
    with server(target, redis_url, log_dir, workers) as (pid, port, prefix):
        await asyncio.sleep(1.0 + 0.3 * workers)
        pids = procstat.process_tree(pid)
        rss0, pss0 = procstat.sample(pids).rss_bytes, procstat.pss_bytes(pids)
        mem0 = redis_memory(redis_url) if target.broker != "memory" else None
        channel = "user:{i}" if target.private else "contest:scale"
        config = LoadConfig(
            url=f"ws://127.0.0.1:{port}/ws",
            channel=channel,
            connections=n,
            processes=clients,
            source_ips=max(4, n // plan.per_source),
            target=target.name,
            server_pids=[pid],
            connect_timeout=240,
            secret=SECRET if target.private else None,
        )
        gen = LoadGenerator(config)
        publisher = make_publisher(
            "http" if target.broker == "memory" else "redis",
            redis_url=redis_url,
            prefix=prefix,
            publish_url=f"http://127.0.0.1:{port}/api/publish",
            api_key=API_KEY,
        )
        try:
            opened = await gen.open()
            pids = gen.server_pids or pids
            await settle(pids)
            rss1, pss1 = procstat.sample(pids).rss_bytes, procstat.pss_bytes(pids)
            subscribed = opened["subscribed"]
            row.update(
                client_processes=clients,
                pss_mb=pss1 / 2**20,
                pss_base_mb=pss0 / 2**20,
                pss_per_conn_kb=pss1 / max(1, subscribed) / 1024,
                pss_growth_per_conn_kb=(pss1 - pss0) / max(1, subscribed) / 1024,
                subscribed=subscribed,
                failures=opened["failures"],
                first_failure=opened["first_failure"],
                open_s=opened["seconds"],
                handshakes_per_s=subscribed / max(1e-9, opened["seconds"]),
                rss_mb=rss1 / 2**20,
                rss_base_mb=rss0 / 2**20,
                rss_per_conn_kb=rss1 / max(1, subscribed) / 1024,
                rss_growth_per_conn_kb=(rss1 - rss0) / max(1, subscribed) / 1024,
            )
            if mem0 is not None:
                mem1 = redis_memory(redis_url)
                row["redis_mb"] = mem1 / 2**20
                row["redis_per_conn_b"] = (mem1 - mem0) / max(1, subscribed)
            print(f"  {target.name} N={n} rep={rep}: {json.dumps(opened)}", flush=True)
            if subscribed < n:
                row["error"] = f"only {subscribed} of {n} subscribed"
                return row
            if target.private:
                return row
            one = []
            for _ in range(plan.one_to_all):
                result = await gen.round(publisher, events=1, rate=0, duration=60, grace=60)
                one.append(result.window_s)
                row.setdefault("lost", 0)
                row["lost"] += result.lost
                await settle(pids)
            row["one_to_all_s"] = statistics.median(one)
            steady = await gen.round(
                publisher,
                events=plan.steady_events,
                rate=1.0,
                duration=plan.steady_events + 5,
                grace=30,
            )
            row.update(
                p50_ms=steady.latency_ms_p50,
                p99_ms=steady.latency_ms_p99,
                cpu_us_per_delivery=steady.server_cpu_us_per_delivery,
                client_busy=steady.client_busy,
                lost=row.get("lost", 0) + steady.lost,
                duplicates=steady.duplicates,
                timed_out=steady.timed_out,
            )
        finally:
            await gen.close()
            await publisher.close()
    return row


async def run(plan: Plan, log_dir: Path) -> dict[str, Any]:
    limit = raise_fd_limit(FD_LIMIT)
    # without CAP_SYS_RESOURCE the hard limit stays (20,000 on the VMs this was written on):
    # then more than ~19,000 connections take more server and client processes
    plan.per_process = min(plan.per_process, limit - 1_000)
    rows: list[dict[str, Any]] = []
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with private_redis() as (redis_url, _):
        for rep in range(plan.reps):
            for n in plan.sizes:
                for name in plan.targets:
                    private = plan.private_sizes
                    if name == "private" and private is not None and n not in private:
                        continue
                    try:
                        row = await measure(TARGETS[name], n, rep, plan, redis_url, log_dir)
                    except Exception as exc:  # one failed size must not lose the others
                        row = {"target": name, "n": n, "rep": rep, "error": repr(exc)}
                    if "skipped" not in row:
                        rows.append(row)
                    print(json.dumps(row), flush=True)
    return {
        "started": started,
        "fd_limit": limit,
        "versions": versions(),
        "load": os.getloadavg(),
        "plan": {k: getattr(plan, k) for k in plan.__dataclass_fields__},
        "rows": rows,
    }


# --- the report ---------------------------------------------------------------------------

FIELDS = (
    "pss_per_conn_kb", "pss_growth_per_conn_kb", "pss_mb", "server_processes",
    "rss_per_conn_kb", "rss_growth_per_conn_kb", "rss_mb", "handshakes_per_s", "one_to_all_s",
    "p50_ms", "p99_ms", "cpu_us_per_delivery", "redis_per_conn_b", "redis_mb", "client_busy",
)  # fmt: skip


def medians(rows: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    """Median of every figure over the repetitions of (target, N); losses are summed."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[(row["target"], row["n"])].append(row)
    out = {}
    for key, group in groups.items():
        good = [r for r in group if "error" not in r]
        med: dict[str, Any] = {"runs": len(good), "failed": len(group) - len(good)}
        for name in FIELDS:
            values = [r[name] for r in good if r.get(name) is not None]
            med[name] = statistics.median(values) if values else None
        med["lost"] = sum(r.get("lost", 0) for r in good)
        med["errors"] = [r["error"] for r in group if "error" in r]
        out[key] = med
    return out


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def render(doc: dict[str, Any]) -> str:
    """Markdown tables of the medians (and the plot, written beside the doc)."""
    med = medians(doc["rows"])
    sizes = sorted({n for _, n in med})
    lines = [
        f"Run {doc['started']}, {doc['plan']['reps']} repetitions or more (medians), "
        f"client processes: {doc['plan']['processes']} or one per "
        f"{doc['plan']['per_process']:,} connections, on the same 2 cores as the server; "
        f"open-file limit {doc['fd_limit']:,}; load average at the end "
        f"{', '.join(f'{x:.1f}' for x in doc['load'])}.",
        "",
        "| target | N | processes | memory/conn (KB) | growth/conn (KB) | RSS sum/conn (KB) "
        "| handshakes/s | one to all (s) | p50 / p99 at 1 ev/s (ms) | CPU µs/delivery "
        "| x floor | Redis B/conn | lost |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for name in ("floor", "memory", "redis", "redis-w1", "private"):
        for n in sizes:
            m = med.get((name, n))
            if m is None:
                continue
            floor = med.get(("floor", n), {}).get("cpu_us_per_delivery")
            cpu = m["cpu_us_per_delivery"]
            ratio = cpu / floor if cpu and floor and name != "floor" else None
            lat = (
                f"{_fmt(m['p50_ms'], '.1f')} / {_fmt(m['p99_ms'], '.1f')}"
                if m["p50_ms"] is not None
                else "-"
            )
            fail = f" ({m['failed']} failed)" if m["failed"] else ""
            lines.append(
                f"| {name}{fail} | {n:,} | {_fmt(m['server_processes'], '.0f')} "
                f"| {_fmt(m['pss_per_conn_kb'], '.2f')} "
                f"| {_fmt(m['pss_growth_per_conn_kb'], '.2f')} "
                f"| {_fmt(m['rss_per_conn_kb'], '.2f')} "
                f"| {_fmt(m['handshakes_per_s'], ',.0f')} | {_fmt(m['one_to_all_s'], '.3f')} "
                f"| {lat} | {_fmt(cpu, '.2f')} | {_fmt(ratio, '.2f')} "
                f"| {_fmt(m['redis_per_conn_b'] if name == 'private' else None, ',.0f')} "
                f"| {m['lost']} |"
            )
    errors = sorted({e for m in med.values() for e in m["errors"]})
    if errors:
        lines += ["", "Failed repetitions: " + "; ".join(errors)]
    for note in doc.get("notes", ()):
        lines += ["", note]
    plot(med, sizes)
    return "\n".join(lines)


def plot(med: dict[tuple[str, int], dict[str, Any]], sizes: list[int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for name in ("floor", "memory", "redis", "private"):
        ns = [n for n in sizes if (name, n) in med]
        for ax, metric, label in (
            (axes[0], "pss_per_conn_kb", "server memory (PSS) per connection (KB)"),
            (axes[1], "one_to_all_s", "one event to all: last delivery (s)"),
            (axes[2], "cpu_us_per_delivery", "server CPU per delivery (µs), 1 ev/s"),
        ):
            ys = [med[(name, n)][metric] for n in ns]
            pts = [(n, y) for n, y in zip(ns, ys, strict=True) if y is not None]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
            ax.set_title(label, fontsize=10)
            ax.set_xscale("log")
            ax.set_xlabel("connections")
    axes[0].axhline(4, color="grey", linestyle=":", linewidth=1)  # the issue's goal
    axes[0].set_yscale("log")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(PLOT, dpi=90)
    plt.close(fig)


def write_report(doc: dict[str, Any]) -> None:
    text = DOC.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    DOC.write_text(text[:start] + "\n" + render(doc) + "\n" + text[end:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    parser.add_argument("--sizes", help="comma-separated N (default 1000,...,100000)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument(
        "--private-sizes", help="comma-separated N for the private target (default: --sizes)"
    )
    parser.add_argument("--targets", help="comma-separated subset of " + ",".join(TARGETS))
    parser.add_argument("--processes", type=int, default=2, help="client processes")
    parser.add_argument("--steady-events", type=int, default=8)
    parser.add_argument(
        "--per-process",
        type=int,
        default=150_000,
        help="connections per server or client process at most (lowered to the fd limit)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="results JSON")
    parser.add_argument("--report", action="store_true", help="only render --out into the docs")
    args = parser.parse_args(argv)
    if args.report:
        write_report(json.loads(args.out.read_text()))
        return 0
    plan = Plan(
        reps=args.reps,
        processes=args.processes,
        steady_events=args.steady_events,
        per_process=args.per_process,
    )
    if args.sizes:
        plan.sizes = tuple(int(x) for x in args.sizes.split(","))
    if args.private_sizes:
        plan.private_sizes = tuple(int(x) for x in args.private_sizes.split(","))
    if args.targets:
        unknown = set(args.targets.split(",")) - set(TARGETS)
        if unknown:
            parser.error(f"unknown targets: {', '.join(sorted(unknown))}")
        plan.targets = tuple(args.targets.split(","))
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    log_dir = Path(tempfile.mkdtemp(prefix="scale-logs-"))
    doc = asyncio.run(run(plan, log_dir))
    args.out.write_text(json.dumps(doc, indent=1))
    print(render(doc))
    print(f"server logs: {log_dir}")
    failed = [r for r in doc["rows"] if "error" in r or r.get("lost")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
