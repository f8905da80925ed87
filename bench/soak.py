"""Bounded soak run: thousands of connections, reconnect churn, a steady event rate.

``python -m bench.soak --duration 600 --connections 2000 --rate 5`` starts a real server,
holds the connections (each subscribed to one of ``--channels`` channels), publishes
``--rate`` events a second over HTTP, and every second closes a few connections, which
come back at once with ``since`` and must recover what they missed. At the end it checks:

- no event lost: every connection ends at the last published offset of its channel, having
  seen each offset exactly once and in order (a resync would be counted as a failure here:
  nothing is ever lost from history in a soak);
- no leak: the server's RSS and open file descriptors after the run (same number of
  connections, churn stopped) match those after the warm-up, within a tolerance.

Writes a JSON result (``--out``, default ``bench/results/soak-<time>.json``); exits 0 when
every check passed, 1 otherwise. ``--quick`` is a CI-size run (40 s, 300 connections).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import websockets

ROOT = Path(__file__).resolve().parent.parent
SECRET = "soak-secret-0123456789abcdef-0123456789abcdef"
API_KEY = "soak-api-key"


@dataclass
class Options:
    """What one soak run does."""

    duration: float = 600.0
    connections: int = 2000
    rate: float = 5.0  # events a second, over all channels
    channels: int = 10
    churn: float = 0.01  # share of connections closed and re-opened every second
    warmup: float = 20.0
    broker_url: str = "memory://"
    rss_tolerance_mb: float = 24.0
    fd_tolerance: int = 8
    out: str = ""


@dataclass
class Conn:
    """One soak connection's view of its channel."""

    channel: str
    epoch: str | None = None
    offset: int = 0
    events: int = 0
    recoveries: int = 0
    resyncs: int = 0
    reconnects: int = 0
    violations: list[str] = field(default_factory=list)
    ws: Any = None
    up: asyncio.Event = field(default_factory=asyncio.Event)

    def on_event(self, event: dict[str, Any]) -> None:
        self.events += 1
        if event["offset"] != self.offset + 1 and len(self.violations) < 5:
            self.violations.append(f"{self.channel}: offset {event['offset']} after {self.offset}")
        self.offset = max(self.offset, event["offset"])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _proc_usage(pid: int) -> dict[str, int]:
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    return {"rss_bytes": rss, "fds": len(os.listdir(f"/proc/{pid}/fd"))}


class Soak:
    """One run: a server process, the connections, the publisher, the checks."""

    def __init__(self, options: Options) -> None:
        self.o = options
        self.port = _free_port()
        self.url = f"ws://127.0.0.1:{self.port}/ws"
        self.channels = [f"contest:soak{i}" for i in range(options.channels)]
        self.conns = [Conn(self.channels[i % options.channels]) for i in range(options.connections)]
        self.last: dict[str, tuple[str, int]] = {}
        self.published = 0
        self.publish_errors = 0
        self.refused = 0
        self.stopping = False
        self.publishing = True
        self.timeline: list[dict[str, Any]] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = Path(tempfile.mkdtemp(prefix="soak-")) / "server.log"

    # -- server -----------------------------------------------------------------------

    def start_server(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("REALTIME_")}
        env.update(
            REALTIME_SECRET=SECRET,
            REALTIME_API_KEY=API_KEY,
            REALTIME_LOG_LEVEL="WARNING",  # churn would write two INFO lines a second per conn
            REALTIME_BROKER_URL=self.o.broker_url,
            REALTIME_REDIS_PREFIX=f"soak:{uuid.uuid4().hex[:8]}:",
            REALTIME_HISTORY_SIZE="1000",
        )
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "realtime", "serve", "--port", str(self.port)],
                env=env,
                cwd=str(ROOT),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2):
                    return
            except (OSError, urllib.error.URLError):
                time.sleep(0.1)
        raise RuntimeError(f"server did not start; log: {self.log_path}")

    def stop_server(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def usage(self) -> dict[str, int]:
        assert self.proc is not None
        return _proc_usage(self.proc.pid)

    # -- clients ----------------------------------------------------------------------

    async def hold(self, conn: Conn, sem: asyncio.Semaphore) -> None:
        """Keep one connection up until the run stops; recover with `since` after each loss."""
        while not self.stopping:
            try:
                async with sem:
                    ws = await websockets.connect(self.url, max_size=None, open_timeout=30)
            except websockets.InvalidStatus as exc:
                self.refused += 1
                retry = float(exc.response.headers.get("Retry-After", "1"))
                await asyncio.sleep(retry * random.uniform(0.5, 1.0))
                continue
            except (OSError, TimeoutError, websockets.InvalidHandshake):
                await asyncio.sleep(random.uniform(0.2, 1.0))
                continue
            conn.ws = ws
            try:
                await self._session(conn, ws)
            except websockets.ConnectionClosed:
                pass
            finally:
                conn.up.clear()
                conn.ws = None
            if not self.stopping:
                conn.reconnects += 1

    async def _session(self, conn: Conn, ws: Any) -> None:
        command: dict[str, Any] = {"op": "subscribe", "channel": conn.channel, "id": 1}
        if conn.epoch is not None:
            command["since"] = {"epoch": conn.epoch, "offset": conn.offset}
        await ws.send(json.dumps(command))
        async for frame in ws:
            for line in str(frame).split("\n"):
                msg = json.loads(line)
                op = msg["op"]
                if op == "event":
                    conn.on_event(msg)
                elif op == "subscribed":
                    if "id" not in msg and msg.get("recovered") and msg["offset"] == 0:
                        conn.epoch = msg["epoch"]  # the epoch the first event starts
                        continue
                    if "since" in command and msg.get("recovered"):
                        conn.recoveries += 1
                        for event in msg["missed"]:
                            conn.on_event(event)
                    elif conn.epoch is not None:
                        conn.resyncs += 1
                    conn.epoch, conn.offset = msg["epoch"], msg["offset"]
                    conn.up.set()

    async def churn(self) -> None:
        """Close a share of the connections every second; they reconnect at once."""
        per_second = max(1, int(self.o.connections * self.o.churn))
        while not self.stopping:
            await asyncio.sleep(1.0)
            for conn in random.sample(self.conns, per_second):
                if conn.ws is not None:
                    await conn.ws.close()

    async def publish(self) -> None:
        """Publish ``rate`` events a second, round-robin over the channels."""
        loop = asyncio.get_running_loop()
        interval = 1.0 / self.o.rate
        n = 0
        next_at = loop.time()
        while self.publishing and not self.stopping:
            channel = self.channels[n % len(self.channels)]
            n += 1
            envelope = {"channel": channel, "type": "soak", "data": {"n": n}}
            try:
                answer = await loop.run_in_executor(None, self._post, envelope)
                result = answer["results"][0]
                self.last[channel] = (result["epoch"], result["offset"])
                self.published += 1
            except (OSError, urllib.error.URLError, KeyError):
                self.publish_errors += 1
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - loop.time()))

    def _post(self, envelope: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/api/publish",
            data=json.dumps(envelope).encode(),
            headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            result: dict[str, Any] = json.loads(response.read())
            return result

    async def sample(self, label: str) -> dict[str, Any]:
        point = {"t": round(time.monotonic() - self.t0, 1), "label": label, **self.usage()}
        point["connected"] = sum(1 for c in self.conns if c.up.is_set())
        self.timeline.append(point)
        return point

    # -- the run ------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        self.t0 = time.monotonic()
        sem = asyncio.Semaphore(100)
        holders = [asyncio.create_task(self.hold(c, sem)) for c in self.conns]
        await asyncio.wait_for(asyncio.gather(*(c.up.wait() for c in self.conns)), 120)
        connected_in = time.monotonic() - self.t0
        background = [asyncio.create_task(self.publish()), asyncio.create_task(self.churn())]
        await asyncio.sleep(self.o.warmup)
        await self._settle()
        start = await self.sample("after warm-up")
        end_at = self.t0 + connected_in + self.o.duration
        while time.monotonic() < end_at:
            await asyncio.sleep(min(10.0, max(0.0, end_at - time.monotonic())))
            await self.sample("running")
        # the publisher is stopped, not cancelled: a cancelled publish still reaches the
        # server from its thread, and its offset would be missing from `last`
        self.publishing = False
        background[1].cancel()
        await asyncio.gather(*background, return_exceptions=True)
        caught_up = await self._settle()
        end = await self.sample("end")
        self.stopping = True
        for conn in self.conns:
            if conn.ws is not None:
                await conn.ws.close()
        await asyncio.gather(*holders, return_exceptions=True)
        return self.report(start, end, caught_up, connected_in)

    async def _settle(self, within: float = 60.0) -> bool:
        """Wait until every connection is up and at its channel's last offset."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            lagging = [
                c
                for c in self.conns
                if not c.up.is_set()
                or (c.channel in self.last and (c.epoch, c.offset) != self.last[c.channel])
            ]
            if not lagging:
                await asyncio.sleep(1.0)  # let the server free what the churn left behind
                return True
            await asyncio.sleep(0.2)
        return False

    def report(
        self, start: dict[str, Any], end: dict[str, Any], caught_up: bool, connected_in: float
    ) -> dict[str, Any]:
        o = self.o
        behind = [
            c
            for c in self.conns
            if c.channel in self.last and (c.epoch, c.offset) != self.last[c.channel]
        ]
        violations = [v for c in self.conns for v in c.violations]
        resyncs = sum(c.resyncs for c in self.conns)
        rss_growth = end["rss_bytes"] - start["rss_bytes"]
        fd_growth = end["fds"] - start["fds"]
        checks = {
            "no_event_lost": caught_up and not behind and not violations and resyncs == 0,
            "rss_stable": rss_growth <= o.rss_tolerance_mb * 1048576,
            "fds_stable": abs(fd_growth) <= o.fd_tolerance,
            "every_reconnect_recovered": sum(c.recoveries for c in self.conns)
            >= sum(c.reconnects for c in self.conns),
        }
        return {
            "options": asdict(o),
            "passed": all(checks.values()),
            "checks": checks,
            "connected_in_s": round(connected_in, 2),
            "published": self.published,
            "publish_errors": self.publish_errors,
            "deliveries": sum(c.events for c in self.conns),
            "reconnects": sum(c.reconnects for c in self.conns),
            "recoveries": sum(c.recoveries for c in self.conns),
            "resyncs": resyncs,
            "refused_handshakes": self.refused,
            "behind_at_end": len(behind),
            "violations": violations[:20],
            "rss_start_mb": round(start["rss_bytes"] / 1048576, 1),
            "rss_end_mb": round(end["rss_bytes"] / 1048576, 1),
            "rss_growth_mb": round(rss_growth / 1048576, 2),
            "fds_start": start["fds"],
            "fds_end": end["fds"],
            "timeline": self.timeline,
            "server_log": str(self.log_path),
        }


def run_soak(options: Options) -> dict[str, Any]:
    """Run one soak and return its result (the server is stopped, pass or fail)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = options.connections * 2 + 1000
    if soft < needed:
        # the server child inherits the raised limit
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(needed, soft)), hard))
    soak = Soak(options)
    soak.start_server()
    try:
        result = asyncio.run(soak.run())
    finally:
        result_code = soak.stop_server()
    result["server_exit_code"] = result_code
    result["checks"]["clean_exit"] = result_code == 0
    result["passed"] = all(result["checks"].values())
    return result


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--duration", type=float, default=600.0, help="seconds once connected, warm-up included"
    )
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=5.0, help="events a second, all channels")
    parser.add_argument("--channels", type=int, default=10)
    parser.add_argument("--churn", type=float, default=0.01, help="share re-opened a second")
    parser.add_argument("--warmup", type=float, default=20.0)
    parser.add_argument("--broker-url", default="memory://")
    parser.add_argument("--rss-tolerance-mb", type=float, default=24.0)
    parser.add_argument("--quick", action="store_true", help="CI size: 40 s, 300 connections")
    parser.add_argument("--out", default="", help="result JSON path")
    args = parser.parse_args(argv)
    options = Options(
        duration=args.duration,
        connections=args.connections,
        rate=args.rate,
        channels=args.channels,
        churn=args.churn,
        warmup=args.warmup,
        broker_url=args.broker_url,
        rss_tolerance_mb=args.rss_tolerance_mb,
        out=args.out,
    )
    if args.quick:
        options.duration, options.connections, options.warmup = 25.0, 300, 8.0
        options.rate, options.churn = 20.0, 0.02
    return options


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    result = run_soak(options)
    out = Path(
        options.out or ROOT / "bench" / "results" / f"soak-{time.strftime('%Y%m%d-%H%M%S')}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    summary = {k: v for k, v in result.items() if k not in ("timeline", "options")}
    print(json.dumps(summary, indent=2))
    print(f"result written to {out}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
