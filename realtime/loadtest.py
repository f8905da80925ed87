"""``realtime loadtest``: hold N protocol-following connections on a deployment and measure.

Point it at any server (loopback or your own staging host; never at someone else's)::

    realtime loadtest --url ws://HOST/ws --connections 5000 --channel contest:load \\
        --publish-url http://HOST/api/publish --api-key K --rate 2 --duration 60

Connections are opened at ``--ramp`` a second, subscribe like the browser client (and
re-subscribe with ``since`` after a disconnect), and check every event's offset: a skipped
offset without a resync is a **lost** event, an offset seen twice a **duplicate**. With
``--publish-url`` it publishes ``--rate`` events a second of ``--size`` bytes, each carrying
its send time, so every delivery's publish-to-receive latency is measured. A progress line
each second, a summary table at the end (``--json`` writes it too); the exit code is 1 on
any loss or duplicate, 2 on bad arguments, 0 otherwise. ``--processes`` splits the
connections over that many client processes (one per core is the useful maximum).

Connections use picows (frames parsed in Cython) and read only what they need from each
event with a regular expression, so one client core holds thousands of connections.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import random
import re
import resource
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection as Pipe
from typing import Any

import orjson

EVENT_RE = re.compile(rb'\{"op":"event","channel":"[^"]*","offset":(\d+)')
SENT_RE = re.compile(rb'"data":\{"t":(\d+)')
MAX_SAMPLES = 200_000  # latency samples kept per process (a uniform reservoir)


@dataclass(frozen=True, slots=True)
class Options:
    """What to connect to and how hard to push."""

    url: str
    channel: str
    connections: int = 100
    token: str | None = None
    secret: str | None = None
    publish_url: str | None = None
    api_key: str | None = None
    rate: float = 1.0
    size: int = 100
    duration: float = 30.0
    ramp: float = 500.0  # new connections a second (all processes together)
    processes: int = 1
    source_ips: int = 1  # >1: bind to 127.0.0.2 .. 127.0.0.(1+n) (loopback only)
    grace: float = 5.0  # after publishing stops, wait this long for the last deliveries
    ramp_timeout: float = 30.0  # publish anyway when the ramp is this late
    json_path: str | None = None


@dataclass(slots=True)
class Counts:
    """What one process's connections saw since the last report."""

    connected: int = 0
    deliveries: int = 0
    lost: int = 0
    duplicates: int = 0
    resyncs: int = 0
    errors: int = 0
    disconnects: int = 0
    latencies_us: list[int] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)  # each connection's last offset


class Conn:
    """One connection's position in the channel and its counters (no I/O here)."""

    __slots__ = ("epoch", "live", "offset", "stats", "subscribed_once")

    def __init__(self, stats: Counts) -> None:
        self.stats = stats
        self.epoch: str | None = None
        self.offset = 0
        self.live = False
        self.subscribed_once = False

    def subscribe_command(self, channel: str) -> bytes:
        command: dict[str, Any] = {"op": "subscribe", "channel": channel, "id": 1}
        if self.epoch is not None:
            command["since"] = {"epoch": self.epoch, "offset": self.offset}
        return orjson.dumps(command)

    def feed(self, payload: bytes) -> None:
        """Handle one text frame (one or more JSON lines)."""
        for line in payload.split(b"\n"):
            if not line:
                continue
            match = EVENT_RE.match(line)
            if match is not None:
                self._event(int(match.group(1)), line)
            else:
                self._control(orjson.loads(line))

    def _event(self, offset: int, line: bytes) -> None:
        if not self.live:
            return  # before `subscribed`: its reply covers it
        st = self.stats
        if offset <= self.offset:
            st.duplicates += 1
            return
        if offset > self.offset + 1:
            st.lost += offset - self.offset - 1
        self.offset = offset
        st.deliveries += 1
        sent = SENT_RE.search(line)
        if sent is not None:
            sample = (time.time_ns() - int(sent.group(1))) // 1000
            lat = st.latencies_us
            if len(lat) < MAX_SAMPLES:
                lat.append(sample)
            else:
                lat[random.randrange(MAX_SAMPLES)] = sample

    def _control(self, msg: dict[str, Any]) -> None:
        op = msg.get("op")
        if op == "subscribed":
            self._subscribed(msg)
        elif op == "error":
            self.stats.errors += 1

    def _subscribed(self, msg: dict[str, Any]) -> None:
        epoch, offset = str(msg.get("epoch")), int(msg.get("offset") or 0)
        asked = "id" in msg
        if not asked and msg.get("recovered") and offset == 0 and self.offset == 0:
            self.epoch = epoch  # the epoch the channel's first event starts
            return
        if not self.live:
            self.live = True
            self.stats.connected += 1
        if msg.get("recovered") and asked and self.epoch == epoch:
            for event in msg.get("missed") or ():
                self._event(int(event["offset"]), orjson.dumps(event))
            self.offset = max(self.offset, offset)
        else:
            if self.subscribed_once or not asked:
                self.stats.resyncs += 1  # told: not a silent loss
            self.epoch, self.offset = epoch, offset
        self.subscribed_once = True

    def lost_link(self) -> None:
        if self.live:
            self.live = False
            self.stats.connected -= 1
            self.stats.disconnects += 1


def _mint(secret: str, index: int, channel: str, ttl: float) -> str:
    import jwt

    claims = {"sub": f"loadtest-{index}", "channels": [channel], "exp": int(time.time() + ttl)}
    return jwt.encode(claims, secret, algorithm="HS256")


async def _hold(options: Options, index: int, conn: Conn, stop: asyncio.Event) -> None:
    """Keep one connection open (reconnecting with back-off) until ``stop``."""
    from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

    token = options.token
    if token is None and options.secret:
        token = _mint(options.secret, index, options.channel, options.duration + 3600)

    class Listener(WSListener):
        def on_ws_connected(self, transport: WSTransport) -> None:
            if token:
                transport.send(WSMsgType.TEXT, orjson.dumps({"op": "auth", "token": token}))
            transport.send(WSMsgType.TEXT, conn.subscribe_command(options.channel))

        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            if frame.msg_type == WSMsgType.TEXT:
                conn.feed(frame.get_payload_as_bytes())
            elif frame.msg_type == WSMsgType.PING:
                transport.send_pong(frame.get_payload_as_bytes())
            elif frame.msg_type == WSMsgType.CLOSE:
                transport.disconnect()

    kwargs: dict[str, Any] = {}
    if options.source_ips > 1:
        kwargs["local_addr"] = (f"127.0.0.{2 + index % options.source_ips}", 0)
    delay = 0.5
    while not stop.is_set():
        try:
            transport, _ = await ws_connect(
                Listener, options.url, websocket_handshake_timeout=30, **kwargs
            )
        except Exception:
            conn.stats.errors += 1
        else:
            delay = 0.5
            waiter = asyncio.ensure_future(transport.wait_disconnected())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if stop.is_set():
                transport.disconnect()
                waiter.cancel()
                return
            stopper.cancel()
            conn.lost_link()
        await asyncio.sleep(random.uniform(0.05, delay))
        delay = min(delay * 2, 10.0)


async def _client_process(options: Options, first: int, count: int, pipe: Pipe) -> None:
    """Open ``count`` connections at this process's share of the ramp; report each second."""
    stats = Counts()
    conns = [Conn(stats) for _ in range(count)]
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    ramp = max(1.0, options.ramp / options.processes)

    async def opener() -> None:
        for i, conn in enumerate(conns):
            tasks.append(asyncio.ensure_future(_hold(options, first + i, conn, stop)))
            await asyncio.sleep(1.0 / ramp)

    open_task = asyncio.ensure_future(opener())
    while True:
        await asyncio.sleep(1.0)
        report = {
            "connected": stats.connected,
            "deliveries": stats.deliveries,
            "lost": stats.lost,
            "duplicates": stats.duplicates,
            "resyncs": stats.resyncs,
            "errors": stats.errors,
            "disconnects": stats.disconnects,
            "latencies_us": stats.latencies_us,
        }
        stats.deliveries = 0
        stats.latencies_us = []
        pipe.send(report)
        if pipe.poll():
            command, final = pipe.recv()
            if command == "stop":
                positions = [c.offset for c in conns if c.live]
                stop.set()
                open_task.cancel()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)
                pipe.send({"positions": positions, "expected": final})
                return


def _process_main(options: Options, first: int, count: int, pipe: Pipe) -> None:
    _raise_fd_limit()
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    asyncio.run(_client_process(options, first, count, pipe))


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Publisher:
    """Publishes ``rate`` events a second over HTTP; remembers the last offset it got."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.published = 0
        self.failed = 0
        self.last_offset = 0
        self._pad = "x" * max(0, options.size - 40)

    def publish_one(self) -> None:
        o = self.options
        assert o.publish_url is not None
        body = b'{"channel":%s,"type":"loadtest","data":{"t":%d,"pad":"%s"}}' % (
            orjson.dumps(o.channel),
            time.time_ns(),
            self._pad.encode(),
        )
        headers = {"Content-Type": "application/json"}
        if o.api_key:
            headers["Authorization"] = f"Bearer {o.api_key}"
        request = urllib.request.Request(o.publish_url, data=body, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                result = json.loads(response.read())["results"][0]
            self.published += 1
            self.last_offset = max(self.last_offset, int(result["offset"]))
        except (OSError, ValueError, KeyError):
            self.failed += 1


@dataclass(slots=True)
class Summary:
    """The end-of-run figures (the table and ``--json``)."""

    connections: int
    connected_at_end: int
    duration_s: float
    deliveries: int
    deliveries_per_s: float
    published: int
    publish_failures: int
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    latency_max_ms: float | None
    lost: int
    duplicates: int
    resyncs: int
    disconnects: int
    errors: int

    @property
    def ok(self) -> bool:
        """No loss, no duplicate, and every connection subscribed at the end."""
        return self.lost == 0 and self.duplicates == 0 and self.connected_at_end == self.connections

    @property
    def verdict(self) -> str:
        if self.lost or self.duplicates:
            return "FAIL: events lost or duplicated"
        if self.connected_at_end < self.connections:
            return f"FAIL: {self.connections - self.connected_at_end} connections not subscribed"
        return "PASS"


def _percentile(sorted_values: list[int], q: float) -> float | None:
    if not sorted_values:
        return None
    k = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[k] / 1000.0


async def run(options: Options, out: Any = sys.stderr) -> Summary:
    """Run one load test and return its summary (the caller prints it)."""
    ctx = multiprocessing.get_context("spawn")
    pipes: list[Pipe] = []
    procs = []
    share, extra = divmod(options.connections, options.processes)
    first = 0
    for p in range(options.processes):
        count = share + (1 if p < extra else 0)
        ours, theirs = ctx.Pipe()
        proc = ctx.Process(target=_process_main, args=(options, first, count, theirs), daemon=True)
        proc.start()
        pipes.append(ours)
        procs.append(proc)
        first += count
    publisher = Publisher(options) if options.publish_url else None
    totals = Counts()
    samples: list[int] = []
    latest: dict[int, dict[str, Any]] = {}
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    # publishing starts once every connection is subscribed (or the ramp ran late)
    ramp_deadline = started + options.connections / options.ramp + options.ramp_timeout
    publish_from: float | None = None
    next_publish = next_line = started + 1.0
    try:
        while publish_from is None or time.monotonic() < publish_from + options.duration + (
            options.grace
        ):
            now = time.monotonic()
            for i, pipe in enumerate(pipes):
                while pipe.poll():
                    report = pipe.recv()
                    latest[i] = report
                    totals.deliveries += report["deliveries"]
                    samples.extend(report["latencies_us"])
            if publish_from is None:
                connected = sum(r["connected"] for r in latest.values())
                if connected >= options.connections or now >= ramp_deadline:
                    publish_from = next_publish = now
            publishing = publish_from is not None and now < publish_from + options.duration
            if publisher is not None and publishing and now >= next_publish:
                await loop.run_in_executor(None, publisher.publish_one)
                next_publish += 1.0 / options.rate
            if len(samples) > MAX_SAMPLES * 2:
                samples = random.sample(samples, MAX_SAMPLES)
            if now >= next_line:
                next_line += 1.0
                _progress(out, now - started, options, latest, totals, samples, publisher)
            wake = next_line
            if publisher is not None and publishing:
                wake = min(wake, next_publish)
            await asyncio.sleep(min(0.05, max(0.0, wake - time.monotonic())))
        expected = publisher.last_offset if publisher is not None else None
        positions: list[int] = []
        for pipe in pipes:
            pipe.send(("stop", expected))
        for i, pipe in enumerate(pipes):
            while True:
                msg = await loop.run_in_executor(None, pipe.recv)
                if "positions" in msg:
                    positions.extend(msg["positions"])
                    break
                latest[i] = msg
                totals.deliveries += msg["deliveries"]
                samples.extend(msg["latencies_us"])
    finally:
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
    behind = sum(expected - p for p in positions if p < expected) if expected else 0
    reports = list(latest.values())
    samples.sort()
    elapsed = time.monotonic() - started
    return Summary(
        connections=options.connections,
        connected_at_end=len(positions),
        duration_s=round(elapsed, 1),
        deliveries=totals.deliveries,
        deliveries_per_s=round(totals.deliveries / max(0.001, options.duration), 1),  # approx.
        published=publisher.published if publisher else 0,
        publish_failures=publisher.failed if publisher else 0,
        latency_p50_ms=_percentile(samples, 0.5),
        latency_p99_ms=_percentile(samples, 0.99),
        latency_max_ms=samples[-1] / 1000.0 if samples else None,
        lost=sum(r["lost"] for r in reports) + behind,
        duplicates=sum(r["duplicates"] for r in reports),
        resyncs=sum(r["resyncs"] for r in reports),
        disconnects=sum(r["disconnects"] for r in reports),
        errors=sum(r["errors"] for r in reports),
    )


def _progress(
    out: Any,
    elapsed: float,
    options: Options,
    latest: dict[int, dict[str, Any]],
    totals: Counts,
    samples: list[int],
    publisher: Publisher | None,
) -> None:
    reports = list(latest.values())
    connected = sum(r["connected"] for r in reports)
    rate = sum(r["deliveries"] for r in reports)
    recent = sorted(s for r in reports for s in r["latencies_us"])
    p50, p99 = _percentile(recent, 0.5), _percentile(recent, 0.99)
    print(
        f"[{elapsed:5.0f}s] connected {connected}/{options.connections}  "
        f"deliveries/s {rate}  p50 {_ms(p50)}  p99 {_ms(p99)}  "
        f"lost {sum(r['lost'] for r in reports)}  dup {sum(r['duplicates'] for r in reports)}  "
        f"errors {sum(r['errors'] for r in reports)}  "
        f"published {publisher.published if publisher else 0}",
        file=out,
        flush=True,
    )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def table(summary: Summary) -> str:
    """The summary as a two-column table."""
    rows = [
        ("connections (at the end)", f"{summary.connected_at_end} of {summary.connections}"),
        ("deliveries", f"{summary.deliveries:,}"),
        ("deliveries/s (while publishing)", f"{summary.deliveries_per_s:,.0f}"),
        ("published (failed)", f"{summary.published} ({summary.publish_failures})"),
        ("publish-to-receive p50", _ms(summary.latency_p50_ms)),
        ("publish-to-receive p99", _ms(summary.latency_p99_ms)),
        ("publish-to-receive max", _ms(summary.latency_max_ms)),
        ("events lost", str(summary.lost)),
        ("duplicates", str(summary.duplicates)),
        ("resyncs (announced)", str(summary.resyncs)),
        ("disconnects", str(summary.disconnects)),
        ("errors", str(summary.errors)),
        ("result", summary.verdict),
    ]
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{name.ljust(width)}  {value}" for name, value in rows)


def parser() -> argparse.ArgumentParser:
    """The ``realtime loadtest`` argument parser."""
    p = argparse.ArgumentParser(
        prog="realtime loadtest",
        description="Hold N connections on a realtime deployment, publish, measure.",
    )
    p.add_argument("--url", required=True, help="ws://HOST/ws of the deployment")
    p.add_argument("--connections", type=int, default=100)
    p.add_argument("--channel", required=True, help="e.g. contest:load")
    auth = p.add_mutually_exclusive_group()
    auth.add_argument("--token", help="one token for every connection")
    auth.add_argument("--secret", help="mint a token per connection with this HS256 secret")
    p.add_argument("--publish-url", help="http://HOST/api/publish (omit: only listen)")
    p.add_argument("--api-key", help="the publish API key")
    p.add_argument("--rate", type=float, default=1.0, help="events published a second")
    p.add_argument("--size", type=int, default=100, help="bytes of each event's data")
    p.add_argument("--duration", type=float, default=30.0, help="seconds of publishing")
    p.add_argument("--ramp", type=float, default=500.0, help="new connections a second")
    p.add_argument("--processes", type=int, default=1, help="client processes (<= cores)")
    p.add_argument("--source-ips", type=int, default=1, help="spread over 127.0.0.2..N+1")
    p.add_argument("--grace", type=float, default=5.0, help="wait after publishing stops")
    p.add_argument(
        "--ramp-timeout",
        type=float,
        default=30.0,
        help="publish anyway when not every connection is subscribed this long after the ramp",
    )
    p.add_argument("--json", dest="json_path", help="write the summary as JSON here")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run ``realtime loadtest``; exit 0 (pass), 1 (loss, duplicates, connections that never
    subscribed), 2 (bad arguments)."""
    args = parser().parse_args(argv)
    options = Options(**vars(args))
    problem = _check(options)
    if problem:
        print(f"realtime loadtest: {problem}", file=sys.stderr)
        return 2
    _raise_fd_limit()
    summary = asyncio.run(run(options))
    print(table(summary))
    if options.json_path:
        with open(options.json_path, "w") as fh:
            json.dump({**asdict(summary), "ok": summary.ok, "options": asdict(options)}, fh)
    return 0 if summary.ok else 1


def _check(o: Options) -> str | None:
    if not o.url.startswith(("ws://", "wss://")):
        return f"--url must be ws:// or wss://, got {o.url!r}"
    if o.connections < 1 or o.processes < 1 or o.processes > o.connections:
        return "--connections must be >= 1 and --processes between 1 and --connections"
    if o.rate <= 0 or o.duration <= 0 or o.ramp <= 0 or o.size < 0:
        return "--rate, --duration and --ramp must be > 0, --size >= 0"
    if o.publish_url is not None and not o.publish_url.startswith(("http://", "https://")):
        return f"--publish-url must be http:// or https://, got {o.publish_url!r}"
    if o.source_ips > 1 and "://127." not in o.url and "://localhost" not in o.url:
        return "--source-ips spreads loopback addresses: only for a server on 127.0.0.1"
    return None
