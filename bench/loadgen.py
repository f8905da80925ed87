"""Load generator: hold N WebSocket connections on one channel, publish, measure.

Run ``python -m bench.loadgen --help``; docs/PERFORMANCE.md explains every figure. One run
opens ``--connections`` connections from ``--processes`` client processes, subscribes them
all, then publishes ``--events`` events at ``--rate`` per second (0 = as fast as the
publisher goes) and waits for every copy, at most ``--duration`` seconds of publishing plus
``--grace`` seconds. It prints one JSON line per round and a table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import resource
import sys
import time
from array import array
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bench import procstat
from bench.client import ClientConfig, start_pipe_reader, worker_main
from bench.publishers import Publisher, make_publisher
from bench.stats import RoundResult, percentile, table


@dataclass(slots=True)
class LoadConfig:
    """Where to connect and how many connections to hold."""

    url: str
    channel: str = "contest:bench"
    token: str | None = None
    connections: int = 1000
    processes: int = 1
    socketio: bool = False
    source_ips: int = 1
    connect_timeout: float = 120.0
    connect_concurrency: int = 200  # handshakes in flight per client process
    target: str = "server"
    server_pids: list[int] = field(default_factory=list)  # roots; descendants are added
    secret: str | None = None  # a private channel per connection (see ClientConfig)


def raise_fd_limit(at_least: int = 0) -> int:
    """Raise this process's open-file limit to its hard limit; return the new soft limit.

    With ``at_least`` above the hard limit, raise the hard limit too (root only; children
    such as a server started afterwards inherit it).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if at_least > hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (at_least, at_least))
            return at_least
        except (ValueError, OSError):
            pass  # not root: the hard limit stands
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class Peer:
    """The parent's end of one client process."""

    def __init__(self, proc: multiprocessing.process.BaseProcess, pipe: Connection) -> None:
        self.proc = proc
        self.pipe = pipe
        self.inbox: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        start_pipe_reader(pipe, self.inbox)

    async def expect(self, kind: str, wait: float) -> tuple[Any, ...]:
        """Wait for the next message of ``kind`` (skipping stale ``done`` notices)."""
        deadline = time.monotonic() + wait
        while True:
            msg = await asyncio.wait_for(self.inbox.get(), max(0.01, deadline - time.monotonic()))
            if msg[0] == kind:
                return msg
            if msg[0] == "dead":
                raise RuntimeError("a client process died")


async def close_peers(peers: list[Peer]) -> None:
    """Ask every client process to close its connections, then stop it (by its PID)."""
    for peer in peers:
        if peer.proc.is_alive():
            with contextlib.suppress(OSError):
                peer.pipe.send(("close",))
    for peer in peers:
        with contextlib.suppress(TimeoutError, RuntimeError):
            await peer.expect("closed", 30)
        peer.proc.join(5)
        if peer.proc.is_alive():
            peer.proc.terminate()
            peer.proc.join(5)
        peer.pipe.close()


class LoadGenerator:
    """Client processes holding the connections; runs measured rounds over them."""

    def __init__(self, config: LoadConfig) -> None:
        self.config = config
        self.peers: list[Peer] = []
        self.next_seq = 1
        self.server_pids: list[int] = []
        self.rss_per_conn_kb: float | None = None
        self.opened: list[dict[str, Any]] = []

    async def open(self) -> dict[str, Any]:
        """Start the client processes, connect and subscribe; measure idle RSS per connection."""
        cfg = self.config
        raise_fd_limit()
        roots = list(cfg.server_pids)
        if not roots and urlsplit(cfg.url).hostname in ("127.0.0.1", "localhost", "::1"):
            found = procstat.listening_pid(urlsplit(cfg.url).port or 80)
            roots = [found] if found else []
        self.server_pids = [pid for root in roots for pid in procstat.process_tree(root)]
        before = procstat.sample(self.server_pids) if self.server_pids else None
        ctx = multiprocessing.get_context("spawn")
        per, extra = divmod(cfg.connections, cfg.processes)
        first = 0
        for i in range(cfg.processes):
            count = per + (1 if i < extra else 0)
            client = ClientConfig(
                url=cfg.url,
                channel=cfg.channel,
                token=cfg.token,
                count=count,
                first_index=first,
                socketio=cfg.socketio,
                source_ips=cfg.source_ips,
                connect_timeout=cfg.connect_timeout,
                connect_concurrency=cfg.connect_concurrency,
                secret=cfg.secret,
            )
            first += count
            parent_end, child_end = ctx.Pipe()
            proc = ctx.Process(target=worker_main, args=(client, child_end), daemon=True)
            proc.start()
            child_end.close()
            self.peers.append(Peer(proc, parent_end))
        for peer in self.peers:
            peer.pipe.send(("open",))
        timeout = cfg.connect_timeout + 30
        self.opened = [(await p.expect("opened", timeout))[1] for p in self.peers]
        subscribed = sum(o["subscribed"] for o in self.opened)
        if before is not None and subscribed:
            await asyncio.sleep(1.0)  # let the server finish per-connection set-up work
            after = procstat.sample(self.server_pids)
            self.rss_per_conn_kb = (after.rss_bytes - before.rss_bytes) / subscribed / 1024
        return {
            "subscribed": subscribed,
            "connected": sum(o["connected"] for o in self.opened),
            "failures": sum(o["failures"] for o in self.opened),
            "first_failure": next(
                (o["first_failure"] for o in self.opened if o["first_failure"]), None
            ),
            "seconds": max(o["seconds"] for o in self.opened),
            "rss_per_conn_kb": self.rss_per_conn_kb,
        }

    async def round(
        self,
        publisher: Publisher,
        *,
        events: int,
        rate: float,
        duration: float,
        grace: float = 10.0,
    ) -> RoundResult:
        """Publish ``events`` (at ``rate``/s, 0 = burst) and measure their delivery."""
        base, self.next_seq = self.next_seq, self.next_seq + events
        for peer in self.peers:
            peer.pipe.send(("arm", base, events))
        for peer in self.peers:
            await peer.expect("armed", 30)
        s0 = procstat.sample(self.server_pids) if self.server_pids else None
        t0_ns, t0 = time.time_ns(), time.monotonic()
        published = 0
        for k in range(events):
            if rate > 0:
                delay = t0 + k / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            if time.monotonic() - t0 > duration:
                break
            await publisher.publish(self.config.channel, base + k)
            published += 1
        deadline = time.monotonic() + grace
        timed_out = False
        done_ns = []
        for peer in self.peers:
            try:
                done_ns.append((await peer.expect("done", deadline - time.monotonic()))[1])
            except TimeoutError:
                timed_out = True
        s1 = procstat.sample(self.server_pids) if self.server_pids else None
        end_ns = max(done_ns) if done_ns and not timed_out else time.time_ns()
        results = []
        for peer in self.peers:
            peer.pipe.send(("collect",))
        for peer in self.peers:
            results.append((await peer.expect("result", 60))[1])
        return self._summarise(results, events, published, rate, t0_ns, end_ns, timed_out, s0, s1)

    def _summarise(
        self,
        results: list[dict[str, Any]],
        events: int,
        published: int,
        rate: float,
        t0_ns: int,
        end_ns: int,
        timed_out: bool,
        s0: procstat.Sample | None,
        s1: procstat.Sample | None,
    ) -> RoundResult:
        lat = array("q")
        for r in results:
            lat.frombytes(r["latencies"])
        ordered = sorted(lat)
        deliveries = sum(r["received"] for r in results)
        window = max(1e-9, (end_ns - t0_ns) / 1e9)
        cpu = tick = cpu_s = None
        if s0 is not None and s1 is not None and deliveries:
            cpu_s = (s1.cpu_ns - s0.cpu_ns) / 1e9
            cpu = (s1.cpu_ns - s0.cpu_ns) / 1000 / deliveries
            tick = (s1.tick_ns - s0.tick_ns) / 1000 / deliveries
        connections = sum(r["connections"] for r in results)
        return RoundResult(
            target=self.config.target,
            mode="burst" if rate <= 0 else "steady",
            connections=connections,
            events=published,
            rate=rate,
            deliveries=deliveries,
            expected=connections * events,
            lost=sum(r["lost"] for r in results),
            duplicates=sum(r["duplicates"] for r in results),
            window_s=window,
            deliveries_per_s=deliveries / window,
            server_cpu_us_per_delivery=cpu,
            server_cpu_tick_us_per_delivery=tick,
            server_cpu_s=cpu_s,
            latency_ms_p50=percentile(ordered, 50) / 1e6,
            latency_ms_p99=percentile(ordered, 99) / 1e6,
            latency_ms_max=(ordered[-1] if ordered else 0) / 1e6,
            client_cpu_s=sum(r["cpu_s"] for r in results),
            client_busy=max(r["cpu_s"] / max(1e-9, window) for r in results),
            rss_per_conn_kb=self.rss_per_conn_kb,
            timed_out=timed_out,
            errors=sum(r["errors"] for r in results),
            extra={"asked_events": events},
        )

    async def close(self) -> None:
        """Disconnect every connection and stop the client processes."""
        await close_peers(self.peers)
        self.peers = []


def http_publish_url(ws_url: str) -> str:
    """Derive ``http(s)://host:port/api/publish`` from the WebSocket URL."""
    parts = urlsplit(ws_url)
    scheme = "https" if parts.scheme == "wss" else "http"
    return urlunsplit((scheme, parts.netloc, "/api/publish", "", ""))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.loadgen",
        description="Hold N WebSocket connections on one channel, publish events, measure "
        "deliveries/s, server CPU per delivery, latency, lost events and memory.",
    )
    parser.add_argument("--url", default="ws://127.0.0.1:8888/ws", help="WebSocket URL")
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--processes", type=int, default=1, help="client processes")
    parser.add_argument(
        "--channel",
        default="contest:bench",
        help="channel to subscribe (default contest:bench; leaderboard:* coalesces, "
        "so skipped events would count as lost)",
    )
    parser.add_argument("--token", help="connection token (JWT), sent with an auth command")
    parser.add_argument("--rate", type=float, default=2.0, help="events per second; 0 = burst")
    parser.add_argument("--events", type=int, default=100, help="events per round")
    parser.add_argument("--duration", type=float, default=30.0, help="max seconds publishing")
    parser.add_argument("--grace", type=float, default=10.0, help="max seconds to wait after")
    parser.add_argument("--repeat", type=int, default=1, help="rounds on the same connections")
    parser.add_argument(
        "--publish",
        choices=("http", "redis", "bridge", "channels", "socketio"),
        default="http",
        help="publish path: http = POST /api/publish; redis = the realtime Redis script; "
        "bridge = django_bridge.publish (with --broker-url redis:// or amqp://)",
    )
    parser.add_argument("--broker-url", help="for --publish bridge (default: --redis-url)")
    parser.add_argument("--bridge-redis-url", help="for --publish bridge with amqp://")
    parser.add_argument("--api-key", help="for --publish http (REALTIME_API_KEY)")
    parser.add_argument("--publish-url", help="default: derived from --url")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--prefix", default="rt:", help="Redis key prefix (REALTIME_REDIS_PREFIX)")
    parser.add_argument("--socketio", action="store_true", help="socket.io framing (peer c)")
    parser.add_argument("--server-pid", type=int, action="append", default=[])
    parser.add_argument("--source-ips", type=int, default=1, help="spread over 127.0.0.x")
    parser.add_argument("--event-size", type=int, default=200, help="approximate event bytes")
    parser.add_argument("--target", default="server", help="label in the results")
    parser.add_argument("--json", dest="json_path", help="append JSON lines to this file")
    return parser


async def main_async(args: argparse.Namespace) -> int:
    """Run ``args.repeat`` rounds; print JSON lines and a table; exit 1 if anything was lost."""
    config = LoadConfig(
        url=args.url,
        channel=args.channel,
        token=args.token,
        connections=args.connections,
        processes=args.processes,
        socketio=args.socketio,
        source_ips=args.source_ips,
        target=args.target,
        server_pids=args.server_pid,
    )
    publisher = make_publisher(
        args.publish,
        redis_url=args.redis_url,
        prefix=args.prefix,
        publish_url=args.publish_url or http_publish_url(args.url),
        api_key=args.api_key or "",
        broker_url=args.broker_url,
        bridge_redis_url=args.bridge_redis_url,
        event_size=args.event_size,
    )
    gen = LoadGenerator(config)
    rows = []
    try:
        opened = await gen.open()
        print(json.dumps({"opened": opened}), file=sys.stderr)
        if not opened["subscribed"]:
            print(f"no connection subscribed: {opened['first_failure']}", file=sys.stderr)
            return 1
        for _ in range(args.repeat):
            result = await gen.round(
                publisher,
                events=args.events,
                rate=args.rate,
                duration=args.duration,
                grace=args.grace,
            )
            row = result.to_json()
            rows.append(row)
            line = json.dumps(row)
            print(line, flush=True)
            if args.json_path:
                with Path(args.json_path).open("a") as fh:  # noqa: ASYNC230 - tiny append
                    fh.write(line + "\n")
    finally:
        await gen.close()
        await publisher.close()
    print(table(rows), file=sys.stderr)
    return 0 if all(r["lost"] == 0 and not r["timed_out"] for r in rows) else 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
