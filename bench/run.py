"""Run the whole benchmark: our server and the peers, for several N, steady and burst.

``python -m bench.run --quick`` (one N, one repetition, a few minutes at most) or
``--full`` (N = 1,000 / 5,000 / 10,000, three repetitions). Every server runs as a child
process on a free loopback port with a unique Redis prefix, and is stopped by PID. Results
go to ``bench/results/<mode>.json`` (raw rounds also to ``bench/results/raw/``), and
``bench.report`` renders docs/PERFORMANCE.md's tables and plot from them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import procstat
from bench.loadgen import LoadConfig, LoadGenerator, raise_fd_limit
from bench.publishers import Publisher, make_publisher
from bench.stats import table

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PY = sys.executable
SECRET = "bench-secret-" + "x" * 24
API_KEY = "bench-api-key"


@dataclass(frozen=True, slots=True)
class Target:
    """A server under test: how to start it, where clients connect, how to publish."""

    name: str
    module: str  # python -m <module>
    path: str = "/ws"
    publish: str = "redis"
    socketio: bool = False
    max_n: int = 1_000_000
    connect_concurrency: int = 200
    max_burst_deliveries: int = 0  # >0: fewer burst events at large N, to bound the run
    note: str = ""
    extra_args: tuple[str, ...] = field(default_factory=tuple)
    default: bool = True  # measured unless --targets names others

    def command(self, port: int, prefix: str, redis_url: str) -> list[str]:
        if self.name.startswith("realtime"):
            return [PY, "-m", "realtime", "serve", "--port", str(port), *self.extra_args]
        return [
            PY, "-m", self.module, "--port", str(port), "--prefix", prefix,
            "--redis-url", redis_url, *self.extra_args,
        ]  # fmt: skip

    def env(self, prefix: str, redis_url: str) -> dict[str, str]:
        env = dict(os.environ)
        if self.name.startswith("realtime"):
            env.update(
                REALTIME_BROKER_URL=redis_url,
                REALTIME_REDIS_PREFIX=prefix,
                REALTIME_SECRET=SECRET,
                REALTIME_API_KEY=API_KEY,
                REALTIME_LOG_LEVEL="WARNING",
            )
        return env


TARGETS = {
    "floor": Target("floor", "bench.peers.floor", note="raw asyncio transports (uvloop)"),
    "realtime": Target("realtime", "realtime", publish="bridge"),
    # one worker per core (SO_REUSEPORT): the fan-out of one event runs on both cores
    "realtime-w2": Target(
        "realtime-w2",
        "realtime",
        publish="bridge",
        extra_args=("--workers", "2"),
        note="realtime serve --workers 2",
        default=False,  # only with --targets realtime-w2
    ),
    "naive": Target("naive", "bench.peers.naive_tornado", max_burst_deliveries=500_000),
    "socketio": Target(
        "socketio",
        "bench.peers.socketio_peer",
        path="/socket.io/?EIO=4&transport=websocket",
        publish="socketio",
        socketio=True,
        max_burst_deliveries=500_000,
    ),
    # channels_redis's pool (redis-py default: 100 connections) raises "Too many
    # connections" under 200 concurrent group_add calls: open connections more gently
    "channels": Target(
        "channels",
        "bench.peers.channels_peer",
        publish="channels",
        max_n=5000,
        connect_concurrency=50,
        max_burst_deliveries=100_000,
    ),
}


@dataclass(frozen=True, slots=True)
class Plan:
    """What one benchmark run measures."""

    mode: str
    sizes: tuple[int, ...]
    reps: int
    steady_rate: float
    steady_events: int
    burst_events: int
    grace: float
    targets: tuple[str, ...]
    processes: int = 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait until ``port`` accepts connections; raise if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server not listening on {port} after {timeout} s")


@contextmanager
def running(target: Target, redis_url: str, log_dir: Path) -> Iterator[tuple[int, int, str]]:
    """Start a target on a free port; yield (pid, port, prefix); stop it by PID afterwards."""
    port = free_port()
    prefix = f"bench-{target.name}-{secrets.token_hex(4)}:"
    log_path = log_dir / f"{target.name}-{port}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            target.command(port, prefix, redis_url),
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
            delete_prefix(redis_url, prefix)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a server we started, by its PID: SIGTERM, then SIGKILL after 15 s."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def delete_prefix(redis_url: str, prefix: str) -> None:
    """Delete this run's Redis keys (only ours: the prefix is unique per run)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        batch = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for i in range(0, len(batch), 500):
            client.delete(*batch[i : i + 500])
    finally:
        client.close()


async def wait_idle(pids: list[int], limit: float) -> None:
    """Wait until the server uses under 5% CPU (it may still drain a timed-out burst)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        before = procstat.sample(pids).cpu_ns
        await asyncio.sleep(0.5)
        if procstat.sample(pids).cpu_ns - before < 0.025e9:
            return


async def measure_target(
    target: Target, n: int, plan: Plan, redis_url: str, log_dir: Path
) -> list[dict[str, Any]]:
    """Start one target, hold N connections, run the plan's rounds; return result rows."""
    rows: list[dict[str, Any]] = []
    with running(target, redis_url, log_dir) as (pid, port, prefix):
        url = f"ws://127.0.0.1:{port}{target.path}"
        config = LoadConfig(
            url=url,
            connections=n,
            processes=plan.processes,
            socketio=target.socketio,
            target=target.name,
            server_pids=[pid],
            connect_timeout=60,
            connect_concurrency=target.connect_concurrency,
        )
        publisher: Publisher = make_publisher(
            target.publish,
            redis_url=redis_url,
            prefix=prefix,
            publish_url=f"http://127.0.0.1:{port}/api/publish",
            api_key=API_KEY,
        )
        gen = LoadGenerator(config)
        try:
            opened = await gen.open()
            print(f"  {target.name} N={n}: {json.dumps(opened)}", flush=True)
            if opened["subscribed"] < n:
                raise RuntimeError(f"only {opened['subscribed']} of {n} subscribed")
            burst = plan.burst_events
            if target.max_burst_deliveries:
                burst = max(10, min(burst, target.max_burst_deliveries // n))
            for rep in range(plan.reps):
                for rate, events in ((plan.steady_rate, plan.steady_events), (0.0, burst)):
                    result = await gen.round(
                        publisher,
                        events=events,
                        rate=rate,
                        duration=events / rate + 5 if rate else 60,
                        grace=plan.grace,
                    )
                    row = result.to_json()
                    row["rep"] = rep
                    row["extra"]["publish"] = target.publish
                    rows.append(row)
                    print(table([row]).splitlines()[1], flush=True)
                    if result.timed_out:
                        await wait_idle(gen.server_pids, 120)
        finally:
            await gen.close()
            await publisher.close()
    return rows


def versions() -> dict[str, str]:
    """Versions of everything that shapes the numbers."""
    out = {
        "python": platform.python_version(),
        "kernel": platform.release(),
        "cpus": str(os.cpu_count()),
    }
    dists = ["tornado", "picows", "uvloop", "orjson", "redis", "hiredis", "channels"]
    dists += ["channels_redis", "uvicorn", "websockets", "python-socketio", "aiohttp", "django"]
    for dist in dists:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "-"
    return out


def realtime_available() -> bool:
    return (ROOT / "realtime" / "cli.py").exists() and (ROOT / "realtime" / "__main__.py").exists()


async def run_plan(plan: Plan, redis_url: str) -> dict[str, Any]:
    raise_fd_limit()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    raw_dir = RESULTS / "raw"
    raw_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    failures: list[str] = []
    for name in plan.targets:
        target = TARGETS[name]
        if name == "realtime" and not realtime_available():
            failures.append("realtime: server not available yet (realtime/cli.py missing)")
            continue
        for n in plan.sizes:
            if n > target.max_n:
                continue
            try:
                rows += await measure_target(target, n, plan, redis_url, raw_dir)
            except Exception as exc:
                failures.append(f"{name} N={n}: {type(exc).__name__}: {exc}")
                print(f"  FAILED {failures[-1]}", flush=True)
    doc = {
        "mode": plan.mode,
        "stamp": stamp,
        "versions": versions(),
        "plan": {k: getattr(plan, k) for k in plan.__dataclass_fields__},
        "failures": failures,
        "rows": rows,
    }
    (raw_dir / f"{stamp}-{plan.mode}.json").write_text(json.dumps(doc, indent=1))
    return doc


def merge_previous(doc: dict[str, Any], path: Path) -> None:
    """Keep the previous run's rows for targets this run did not measure (``--targets``)."""
    if not path.exists():
        return
    previous = json.loads(path.read_text())
    measured = {row["target"] for row in doc["rows"]} | set(doc["plan"]["targets"])
    kept = [row for row in previous["rows"] if row["target"] not in measured]
    if kept:
        for row in kept:
            row.setdefault("extra", {}).setdefault("stamp", previous["stamp"])
        doc["rows"] += kept
        doc["merged"] = sorted({row["extra"]["stamp"] for row in kept})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="N=1000, 1 rep (default)")
    group.add_argument("--full", action="store_true", help="N=1000/5000/10000, 3 reps")
    parser.add_argument("--targets", help="comma-separated subset of " + ",".join(TARGETS))
    parser.add_argument("--sizes", help="comma-separated N values (overrides the mode's)")
    parser.add_argument("--reps", type=int)
    parser.add_argument("--processes", type=int, default=1, help="client processes")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--no-report", action="store_true", help="skip docs/PERFORMANCE.md")
    parser.add_argument(
        "--out", type=Path, help="write the results here only (no merge, no report)"
    )
    args = parser.parse_args(argv)
    everyone = tuple(name for name, target in TARGETS.items() if target.default)
    if args.full:
        plan = Plan("full", (1000, 5000, 10000), 3, 2.0, 20, 100, 30.0, everyone)
    else:
        plan = Plan("quick", (1000,), 1, 2.0, 6, 50, 20.0, everyone)
    changes: dict[str, Any] = {"processes": args.processes}
    if args.targets:
        changes["targets"] = tuple(args.targets.split(","))
    if args.sizes:
        changes["sizes"] = tuple(int(x) for x in args.sizes.split(","))
    if args.reps:
        changes["reps"] = args.reps
    plan = Plan(**{**{k: getattr(plan, k) for k in plan.__dataclass_fields__}, **changes})
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    started = time.monotonic()
    doc = asyncio.run(run_plan(plan, args.redis_url))
    if args.out is not None:  # an experiment: kept apart from the published results
        args.out.write_text(json.dumps(doc, indent=1))
    else:
        merge_previous(doc, RESULTS / f"{plan.mode}.json")
        (RESULTS / f"{plan.mode}.json").write_text(json.dumps(doc, indent=1))
    print(table(doc["rows"]))
    for failure in doc["failures"]:
        print("not measured:", failure)
    print(f"{len(doc['rows'])} rounds in {time.monotonic() - started:.0f} s")
    if not args.no_report and args.out is None:
        from bench import report

        report.render(doc)
    return 0 if not doc["failures"] else 1


if __name__ == "__main__":
    sys.exit(main())
