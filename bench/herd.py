"""The reconnect herd: N connected, restart the server or Redis, measure the way back.

Run ``python -m bench.herd --help``; docs/PERFORMANCE.md ("The reconnect herd") explains the
figures. Each scenario run starts its own private ``redis-server`` (persisting on shutdown:
``--save "3600 1"``, so a SIGTERM writes an RDB and the restart keeps the history, as a
production Redis does) and its own ``realtime serve --workers 2`` on it, opens N connections
from client processes (``bench/herd_client.py``), publishes 1 event a second on every channel
through ``POST /api/publish`` the whole time, then

- ``server``: SIGTERM the server's supervisor, start it again at once;
- ``redis``: SIGTERM the redis-server, start it again on the same port and directory;

and measures until every connection is back and recovered (it delivered, on each of its
channels, the first event published after the restart, hence everything before it). At the
end the publisher stops, every connection settles at the channels' last offsets and every
history is checked against the publisher's log by ``tests/guarantee/checker.py``: any
violation fails the run (exit 1). Everything that is started is stopped by its PID.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import redis

from bench import procstat
from bench.herd_client import HerdClientConfig, raise_nofile, worker_main
from bench.loadgen import Peer, close_peers

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "herd-bench-api-key"
SECRET = "herd-bench-secret-not-for-production-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """SIGTERM a child by PID, SIGKILL it when it does not exit in time."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


class PrivateRedis:
    """A private redis-server on a free port, persisting to ``workdir`` on shutdown."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 20.0) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--daemonize", "no"]
        args += ["--save", "3600 1", "--dir", str(self.workdir), "--appendonly", "no"]
        args += ["--maxclients", "10000"]
        with (self.workdir / "redis.log").open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError):
                if self.client().ping():
                    return
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: see {self.workdir / 'redis.log'}")
            time.sleep(0.05)
        raise TimeoutError(f"redis-server on {self.port} did not answer")

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2, socket_connect_timeout=1)

    def stop(self, timeout: float = 30.0) -> None:
        _stop(self.proc, timeout)


class Server:
    """``realtime serve --workers N`` on the private Redis, with a raised descriptor limit."""

    def __init__(self, redis_url: str, workdir: Path, args: argparse.Namespace) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = dict(os.environ)
        self.env.update(
            {
                "PYTHONPATH": str(ROOT),
                "REALTIME_BROKER_URL": redis_url,
                "REALTIME_SECRET": SECRET,
                "REALTIME_API_KEY": API_KEY,
                # long enough to cover the outage: 1 event/s per channel
                "REALTIME_HISTORY_SIZE": str(args.history_size),
                "REALTIME_MAX_CONNECTIONS": str(max(50000, 2 * args.connections)),
                "REALTIME_LOG_LEVEL": args.log_level,
            }
        )
        self.workers = args.workers

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self, timeout: float = 60.0) -> None:
        args = [sys.executable, "-m", "realtime", "serve", "--host", "127.0.0.1"]
        args += ["--port", str(self.port), "--workers", str(self.workers)]
        with (self.workdir / "server.log").open("ab") as log:
            self.proc = subprocess.Popen(
                args, env=self.env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=raise_nofile
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited: see {self.workdir / 'server.log'}")
            with contextlib.suppress(OSError):
                url = f"http://127.0.0.1:{self.port}/healthz"
                with urllib.request.urlopen(url, timeout=2) as reply:
                    if reply.status == 200:
                        return
            time.sleep(0.1)
        raise TimeoutError("the server did not become ready")

    def tree(self) -> list[int]:
        if self.proc is None or self.proc.poll() is not None:
            return []
        return procstat.process_tree(self.proc.pid)

    def stop(self, timeout: float = 40.0) -> None:
        _stop(self.proc, timeout)


@dataclass(slots=True)
class Accepted:
    """One event the store accepted, as the publish reply said."""

    at: float
    channel: str
    epoch: str
    offset: int
    seq: int


class Publisher:
    """An event every ``interval`` seconds per channel through POST /api/publish, retried
    until accepted.

    An event keeps its ``id`` over retries, so a retry of an event the store took before a
    failure answers ``duplicate`` with the stored offset instead of storing it twice.
    """

    def __init__(
        self, port: int, channels: tuple[str, ...], run_id: str, interval: float = 1.0
    ) -> None:
        self.url = f"http://127.0.0.1:{port}/api/publish"
        self.interval = interval
        self.channels = channels
        self.run_id = run_id
        self.log: list[Accepted] = []
        self.failures = 0
        self.seq = 0
        self.pending: dict[str, dict[str, Any]] = {}
        self.stopping = False
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.ensure_future(self.run())

    async def run(self) -> None:
        next_tick = time.monotonic()
        while not self.stopping or self.pending:
            now = time.monotonic()
            if not self.stopping and now >= next_tick:
                for channel in self.channels:
                    if channel not in self.pending:
                        self.seq += 1
                        self.pending[channel] = {
                            "channel": channel,
                            "type": "herd",
                            "data": {"i": self.seq},
                            "id": f"{self.run_id}-{self.seq}",
                        }
                next_tick = max(next_tick + self.interval, now)
            if self.pending:
                await asyncio.to_thread(self.send, list(self.pending.values()))
            wait = 0.25 if self.pending else next_tick - time.monotonic()
            await asyncio.sleep(max(0.0, wait))

    def send(self, envelopes: list[dict[str, Any]]) -> None:
        request = urllib.request.Request(
            self.url,
            data=orjson.dumps(envelopes),
            headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=3) as reply:
                body = reply.read()
        except urllib.error.HTTPError as exc:
            body = exc.read()
            self.failures += 1
        except OSError:
            self.failures += 1
            return
        try:
            results = orjson.loads(body).get("results") or []
        except (orjson.JSONDecodeError, AttributeError):
            return
        now = time.time()
        for envelope, result in zip(envelopes, results, strict=False):
            self.log.append(
                Accepted(
                    now,
                    envelope["channel"],
                    str(result["epoch"]),
                    int(result["offset"]),
                    int(envelope["data"]["i"]),
                )
            )
            self.pending.pop(envelope["channel"], None)

    def first_after(self, t: float) -> dict[str, Accepted] | None:
        """Per channel, the first event accepted after ``t``; None until every channel has one."""
        out: dict[str, Accepted] = {}
        for rec in self.log:
            if rec.at > t and rec.channel not in out:
                out[rec.channel] = rec
        return out if len(out) == len(self.channels) else None

    def last(self) -> dict[str, Accepted]:
        out: dict[str, Accepted] = {}
        for rec in self.log:
            out[rec.channel] = rec
        return out

    async def stop(self, timeout: float = 60.0) -> None:
        self.stopping = True
        if self.task is not None:
            await asyncio.wait_for(self.task, timeout)

    def published(self) -> list[dict[str, Any]]:
        """The log in the checker's format (per channel in the store's order)."""
        seen: set[tuple[str, str, int]] = set()
        out = []
        for rec in self.log:
            key = (rec.channel, rec.epoch, rec.offset)
            if key in seen:
                continue  # a duplicate reply names an event already logged
            seen.add(key)
            out.append(
                {
                    "channel": rec.channel,
                    "epoch": rec.epoch,
                    "offset": rec.offset,
                    "type": "herd",
                    "data": {"i": rec.seq},
                    "state": False,
                }
            )
        return out


@dataclass(slots=True)
class Sampler:
    """Samples the server tree's RSS (0.5 s) and Redis INFO (1 s) in a thread."""

    server: Server
    redis_port: int
    rss: list[tuple[float, int]] = field(default_factory=list)
    # time, instantaneous ops/s, commands processed, script calls (totals across restarts)
    redis: list[tuple[float, int, int, int]] = field(default_factory=list)
    stop_flag: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    # counters restart at 0 with redis-server: running totals are kept across restarts
    base: tuple[int, int] = (0, 0)
    last: tuple[int, int] = (0, 0)

    def start(self) -> None:
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self) -> None:
        tick = 0
        while not self.stop_flag.wait(0.5):
            tick += 1
            pids = self.server.tree()
            if pids:
                self.rss.append((time.time(), procstat.sample(pids).rss_bytes))
            if tick % 2 == 0:
                self.sample_redis()

    def sample_redis(self) -> None:
        """Read Redis INFO once (also called right before Redis is stopped)."""
        client = redis.Redis(port=self.redis_port, socket_timeout=1, socket_connect_timeout=0.5)
        try:
            stats = client.info("stats")
            cmdstats = client.info("commandstats")
        except redis.RedisError:
            return
        finally:
            client.close()
        cmds = int(stats["total_commands_processed"])
        evals = int(cmdstats.get("cmdstat_evalsha", {}).get("calls", 0))
        evals += int(cmdstats.get("cmdstat_eval", {}).get("calls", 0))
        with self.lock:
            if cmds < self.last[0]:
                self.base = (self.base[0] + self.last[0], self.base[1] + self.last[1])
            self.last = (cmds, evals)
            ops = int(stats["instantaneous_ops_per_sec"])
            self.redis.append((time.time(), ops, self.base[0] + cmds, self.base[1] + evals))

    def close(self) -> None:
        self.stop_flag.set()
        if self.thread is not None:
            self.thread.join(5)

    def window(self, t0: float, t1: float) -> dict[str, Any]:
        """Peak RSS and Redis figures between t0 and t1."""
        rss = [r for t, r in self.rss if t0 <= t <= t1]
        red = [r for r in self.redis if t0 - 1 <= r[0] <= t1 + 1]
        out: dict[str, Any] = {"peak_rss_mb": max(rss) / 2**20 if rss else None}
        if len(red) >= 2:
            span = max(1e-9, red[-1][0] - red[0][0])
            out["redis_ops_peak"] = max(r[1] for r in red)
            out["redis_commands"] = red[-1][2] - red[0][2]
            out["redis_ops_mean"] = out["redis_commands"] / span
            out["redis_scripts"] = red[-1][3] - red[0][3]
            out["sampled"] = (red[0][0], red[-1][0])
        return out


class Clients:
    """The client processes and their pipes."""

    def __init__(self, url: str, channels: tuple[str, ...], args: argparse.Namespace) -> None:
        ctx = multiprocessing.get_context("spawn")
        per, extra = divmod(args.connections, args.processes)
        first = 0
        self.peers: list[Peer] = []
        for i in range(args.processes):
            count = per + (1 if i < extra else 0)
            config = HerdClientConfig(
                url=url,
                channels=channels,
                count=count,
                first_index=first,
                source_ips=args.source_ips,
                per_connection=args.per_connection,
                seed=args.seed * 1000 + i,
            )
            first += count
            parent_end, child_end = ctx.Pipe()
            proc = ctx.Process(target=worker_main, args=(config, child_end), daemon=True)
            proc.start()
            child_end.close()
            self.peers.append(Peer(proc, parent_end))

    async def ask(self, *command: Any, reply: str = "ok", wait: float = 60.0) -> list[Any]:
        for peer in self.peers:
            peer.pipe.send(command)
        return [(await p.expect(reply, wait))[1:] for p in self.peers]

    async def status(self) -> dict[str, Any]:
        parts = [r[0] for r in await self.ask("status", reply="status", wait=30)]
        out: dict[str, Any] = {}
        for key in (
            "connections",
            "connected",
            "subscribed",
            "back",
            "recovered",
            "reconnects",
            "resyncs",
            "errors",
            "history_bytes",
            "early_drops",
        ):
            out[key] = sum(p[key] for p in parts)
        closes: dict[int, int] = {}
        for p in parts:
            for code, n in p["closes"].items():
                closes[code] = closes.get(code, 0) + n
        out["closes"] = {str(k): v for k, v in sorted(closes.items())}
        failures: dict[str, int] = {}
        for p in parts:
            for kind, n in p["failures"].items():
                failures[kind] = failures.get(kind, 0) + n
        out["failures"] = failures
        out["last_back_at"] = max(p["last_back_at"] for p in parts)
        out["last_recovered_at"] = max(p["last_recovered_at"] for p in parts)
        positions: dict[int, tuple[int, int]] = {}
        for p in parts:
            for ch, (lo, hi) in p["positions"].items():
                old = positions.get(ch, (lo, hi))
                positions[ch] = (min(old[0], lo), max(old[1], hi))
        out["positions"] = positions
        return out

    async def close(self) -> None:
        await close_peers(self.peers)


async def _wait_for(what: str, clients: Clients, done: Any, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status = await clients.status()
        if done(status):
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s ({_brief(status)})")
        # a status walks every connection: poll less often when there are many (the
        # times reported come from each connection's own clock, not from this poll)
        await asyncio.sleep(0.5 if status["connections"] <= 20000 else 1.0)


def _brief(status: dict[str, Any]) -> str:
    keys = ("connections", "connected", "subscribed", "back", "recovered", "errors")
    return ", ".join(f"{k} {status[k]}" for k in keys)


async def run_scenario(scenario: str, run: int, args: argparse.Namespace) -> dict[str, Any]:
    """One run of one scenario; returns its result row (``ok`` False on any failure)."""
    channels = tuple(f"contest:herd{i}" for i in range(args.channels))
    workdir = Path(tempfile.mkdtemp(prefix=f"herd-{scenario}-"))
    store = PrivateRedis(workdir)
    server: Server | None = None
    clients: Clients | None = None
    sampler: Sampler | None = None
    publisher: Publisher | None = None
    row: dict[str, Any] = {"scenario": scenario, "run": run, "connections": args.connections}
    try:
        store.start()
        server = Server(store.url, workdir, args)
        server.start()
        sampler = Sampler(server, store.port)
        sampler.start()
        publisher = Publisher(
            server.port, channels, f"herd{os.getpid()}-{scenario}-{run}", args.interval
        )
        publisher.start()
        clients = Clients(server.url, channels, args)
        t_open = time.monotonic()
        await clients.ask("open")
        status = await _wait_for(
            "connect", clients, lambda s: s["subscribed"] == args.connections, args.timeout
        )
        row["connect_s"] = time.monotonic() - t_open
        await asyncio.sleep(args.steady)
        steady = sampler.window(time.time() - args.steady, time.time())
        row["steady_rss_mb"] = steady["peak_rss_mb"]

        t0 = time.time()
        await clients.ask("fault", t0)
        service: Server | PrivateRedis = server if scenario == "server" else store
        if scenario == "redis":
            # the counters start again at 0: take their last values first
            await asyncio.to_thread(sampler.sample_redis)
        # in a thread: the publisher goes on (and fails, and retries) during the outage
        await asyncio.to_thread(service.stop)
        row["stop_s"] = time.time() - t0  # SIGTERM until the process exited
        await asyncio.sleep(args.outage)
        t_start = time.time()
        await asyncio.to_thread(service.start)
        t_up = time.time()
        row["start_s"] = t_up - t_start  # until /healthz answers 200 (Redis: PING)
        row["restart_s"] = t_up - t0
        deadline = time.monotonic() + args.timeout
        while (first := publisher.first_after(t_up)) is None:
            if time.monotonic() > deadline:
                raise TimeoutError("no event was accepted after the restart")
            await asyncio.sleep(0.1)
        target = {channels.index(c): (a.epoch, a.offset) for c, a in first.items()}
        await clients.ask("target", target)
        status = await _wait_for(
            "recover",
            clients,
            lambda s: s["recovered"] == args.connections,
            args.timeout - (time.time() - t0),
        )
        t_rec = status["last_recovered_at"]
        row["all_back_s"] = (status["last_back_at"] - t0) if status["back"] else 0.0
        row["back"] = status["back"]
        row["all_recovered_s"] = t_rec - t0
        back, recovered = array("d"), array("d")
        for b, r in await clients.ask("times", reply="times"):
            back.frombytes(b)
            recovered.frombytes(r)
        for name, times in (("back", back), ("recovered", recovered)):
            ordered = sorted(t - t0 for t in times)
            for q in (50, 99):
                row[f"{name}_p{q}_s"] = (
                    ordered[int(q / 100 * (len(ordered) - 1))] if ordered else 0.0
                )
        row["reconnects"] = status["reconnects"]
        row["resyncs"] = status["resyncs"]
        row["errors"] = status["errors"]  # failed handshakes and error replies
        row["closes"] = status["closes"]  # close code ("-1": none) -> connections
        row["early_drops"] = status["early_drops"]  # lost before any `subscribed` reply
        row["failures"] = status["failures"]  # failed handshakes, error replies by code
        # the herd span lasts at least 5 s: Redis's figures come from samples a second apart
        # (shorter with a --steady below 2.5 s: the quick run of the tests)
        span = min(5.0, 2 * args.steady)
        await asyncio.sleep(max(args.steady, t0 + span + 1.5 - time.time()))
        herd = sampler.window(t0, max(t_rec, t0 + span))
        if "sampled" in herd:
            # every publish is one script call: the rest are the subscribes' history reads
            # (approximate: the INFO samples are a second apart, and the first call of a
            # script after a Redis restart is an EVALSHA refused with NOSCRIPT, then an EVAL)
            s0, s1 = herd.pop("sampled")
            published_in = sum(1 for r in publisher.log if s0 <= r.at <= s1)
            row["store_reads"] = max(0, herd["redis_scripts"] - published_in)
        row.update(herd)
        await publisher.stop()
        final = publisher.last()
        want = {channels.index(c): a.offset for c, a in final.items()}

        def settled(s: dict[str, Any]) -> bool:
            pos = s["positions"]
            return s["subscribed"] == args.connections and all(
                pos.get(ch, (-1, -1))[0] == off for ch, off in want.items()
            )

        await _wait_for("settle", clients, settled, 60)
        row["events_published"] = len(publisher.log)
        row["publish_failures"] = publisher.failures
        published = publisher.published()
        t_check = time.monotonic()
        checked = [
            r[0] for r in await clients.ask("check", published, 5, reply="checked", wait=600)
        ]
        row["check_s"] = time.monotonic() - t_check
        row["checked_events"] = sum(c["events"] for c in checked)
        row["violations"] = sum(c["violations"] for c in checked)
        row["first_violations"] = [text for c in checked for text in c["first"]][:5]
        status = await clients.status()
        row["history_mb"] = status["history_bytes"] / 2**20
        row["ok"] = row["violations"] == 0
    except Exception as exc:  # the row says what failed; the caller exits 1
        row["ok"] = False
        row["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        if publisher is not None and publisher.task is not None and not publisher.task.done():
            publisher.task.cancel()
        if clients is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(clients.close(), 60)
        if sampler is not None:
            sampler.close()
        if server is not None:
            server.stop()
        store.stop()
        if row.get("ok") and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            row["workdir"] = str(workdir)  # the server's and Redis's logs
    return row


COLUMNS = (
    ("scenario", "scenario", "{}"),
    ("connections", "N", "{}"),
    ("restart_s", "restart s", "{:.1f}"),
    ("back_p50_s", "back p50 s", "{:.1f}"),
    ("all_back_s", "all back s", "{:.1f}"),
    ("recovered_p50_s", "recovered p50 s", "{:.1f}"),
    ("all_recovered_s", "all recovered s", "{:.1f}"),
    ("reconnects", "reconnects", "{}"),
    ("resyncs", "resyncs", "{}"),
    ("peak_rss_mb", "peak RSS MB", "{:.0f}"),
    ("redis_ops_peak", "Redis ops/s peak", "{}"),
    ("redis_ops_mean", "Redis ops/s mean", "{:.0f}"),
    ("store_reads", "store reads", "{}"),
    ("checked_events", "events checked", "{}"),
    ("violations", "violations", "{}"),
)


def table(rows: list[dict[str, Any]]) -> str:
    """Render the result rows as an aligned plain-text table."""
    cells = [[title for _, title, _ in COLUMNS]]
    for row in rows:
        cells.append(["-" if row.get(k) is None else fmt.format(row[k]) for k, _, fmt in COLUMNS])
    widths = [max(len(r[i]) for r in cells) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.herd", description=__doc__.split("\n")[0])
    p.add_argument("--connections", type=int, default=100_000)
    p.add_argument("--runs", type=int, default=1, help="runs of each scenario")
    p.add_argument("--scenario", choices=("server", "redis", "both"), default="both")
    p.add_argument("--processes", type=int, default=2, help="client processes")
    p.add_argument(
        "--source-ips",
        type=int,
        default=None,
        help="source addresses 127.0.0.2.. (default: one per 500 connections, at most 250)",
    )
    p.add_argument("--channels", type=int, default=4, help="contest:herd0..; 0 is the hot one")
    p.add_argument("--per-connection", type=int, default=2, help="channels per connection")
    p.add_argument("--workers", type=int, default=2, help="server worker processes")
    p.add_argument(
        "--interval", type=float, default=1.0, help="seconds between events on each channel"
    )
    p.add_argument("--history-size", type=int, default=1000, help="REALTIME_HISTORY_SIZE")
    p.add_argument("--steady", type=float, default=10.0, help="seconds before and after")
    p.add_argument("--timeout", type=float, default=300.0, help="bound of each phase")
    p.add_argument(
        "--outage", type=float, default=0.0, help="seconds down before the restart (0: at once)"
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--keep", action="store_true", help="keep the logs and RDB of every run")
    p.add_argument("--log-level", default="WARNING", help="the server's REALTIME_LOG_LEVEL")
    p.add_argument("--json", metavar="PATH", help="also append the JSON lines to PATH")
    return p


def _append(path: Path, line: str) -> None:
    with path.open("a") as out:
        out.write(line + "\n")


async def amain(args: argparse.Namespace) -> list[dict[str, Any]]:
    scenarios = ("server", "redis") if args.scenario == "both" else (args.scenario,)
    rows = []
    for run in range(1, args.runs + 1):
        for scenario in scenarios:
            row = await run_scenario(scenario, run, args)
            line = json.dumps(row, sort_keys=True)
            print(line, flush=True)
            if args.json:
                await asyncio.to_thread(_append, Path(args.json), line)
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the herd scenarios; exit 1 when any run failed or lost an event."""
    args = parser().parse_args(argv)
    if args.source_ips is None:
        # 500 connections an address: their 1,000 subscribes fit the server's per-address
        # churn burst (ip_channel_churn_burst, 2,000) even when the bucket is half full
        args.source_ips = max(1, min(250, math.ceil(args.connections / 500)))
    raise_nofile()

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM too: the cleanup stops what we started, by PID

    signal.signal(signal.SIGTERM, interrupted)
    rows = asyncio.run(amain(args))
    print(table(rows))
    failed = [r for r in rows if not r.get("ok")]
    for row in failed:
        print(f"FAILED {row['scenario']} run {row['run']}: {row.get('error', '')}", file=sys.stderr)
        for text in row.get("first_violations") or ():
            print(text, file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
