"""The reconnect herd's client process: connections that come back with ``since``.

Each connection behaves like ``static/realtime.js``: on a close it waits (1012: random
0.1-1.5 s; 1013: ``retry-after`` plus jitter; anything else, a refused handshake included:
full-jitter exponential back-off, random in [0.05, min(20, 0.5 * 2^attempt)] s, the attempt
count reset once a connection has stayed up 10 s), reconnects and subscribes again with
``since`` = the last position it delivered. Frames are read with one regex per event (no JSON
decode on the hot path); the rare control replies are decoded.

Every connection keeps its history in one ``array('i')`` of tagged records (see ``_Rec``),
turned into the records of ``tests/guarantee/checker.py`` only at the end, one small batch of
connections at a time, and checked against the publisher's log there.
"""

from __future__ import annotations

import asyncio
import random
import re
import resource
import time
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import orjson
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from bench.client import start_pipe_reader

# one published event: the publisher's data is {"i": <global sequence number>}
EVENT_RE = re.compile(
    rb'^\{"op":"event","channel":"([^"]*)","offset":(\d+),"type":"[^"]*","data":\{"i":(\d+)\}'
)
RETRY_AFTER_RE = re.compile(r"retry-after=(\d+(?:\.\d+)?)", re.I)

# realtime.js's reconnect policy (its options minDelay, maxDelay, stableAfter, restartDelay)
MIN_DELAY = 0.5
MAX_DELAY = 20.0
STABLE_AFTER = 10.0
CONNECT_TIMEOUT = 15.0  # TCP connect and WebSocket handshake together
RESTART_DELAY = 1.5
SUBSCRIBE_RETRY = 1.0  # a subscribe refused with an error (e.g. rate_limited) is sent again
NOFILE = 262144  # descriptors a process may hold (the herd needs one per connection)
CHECK_BATCH = 32  # connections converted and checked together (bounds the memory of a check)


class _Rec:
    """Record tags of the compact history (the ints that follow each tag)."""

    CONNECT = 1  # -
    DISCONNECT = 2  # close code (-1: none)
    EVENT = 3  # channel, offset, i
    # channel, epoch id, offset, recovered (-1 None, 0, 1), asked, since epoch id (-1 none),
    # since offset, state offset (-1 none), n, then n missed offsets and n missed i's
    SUBSCRIBED = 4
    ERROR = 5  # channel (-1 none)
    UNSUBSCRIBED = 6  # channel


@dataclass(frozen=True, slots=True)
class HerdClientConfig:
    """What one client process holds."""

    url: str
    channels: tuple[str, ...]  # channel 0 is the hot one every connection watches
    count: int
    first_index: int
    source_ips: int = 1
    per_connection: int = 2  # channels per connection: the hot one plus one of the others
    connect_concurrency: int = 500  # handshakes in flight in this process
    seed: int = 0


class Epochs:
    """Epoch strings interned as small ints (the histories hold ints only)."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.ids: dict[str, int] = {}

    def id(self, epoch: str) -> int:
        found = self.ids.get(epoch)
        if found is None:
            found = self.ids[epoch] = len(self.names)
            self.names.append(epoch)
        return found


class Shared:
    """State of the process that every connection reads: channel names, fault marks."""

    def __init__(self, config: HerdClientConfig) -> None:
        self.config = config
        self.channel_ids = {c.encode(): i for i, c in enumerate(config.channels)}
        self.epochs = Epochs()
        self.gate = asyncio.Semaphore(config.connect_concurrency)
        self.stop = asyncio.Event()
        self.fault_at = 0.0  # connections that connect after this count as back
        # per channel: (epoch, offset) a connection must reach to count as recovered
        self.target: dict[int, tuple[str, int]] | None = None
        self.closes: dict[int, int] = {}  # close code (-1: none, the link dropped) -> count
        self.early_drops = 0  # connections lost before any `subscribed` reply
        self.failures: dict[str, int] = {}  # error reply code or handshake failure -> count


class Conn:
    """One connection's positions, history and reconnect state."""

    __slots__ = (
        "attempt",
        "back_at",
        "channels",
        "connected",
        "dropped",
        "epoch",
        "errors",
        "history",
        "index",
        "live",
        "offset",
        "pending_since",
        "reconnects",
        "recovered_at",
        "resyncs",
        "shared",
        "transport",
    )

    def __init__(self, shared: Shared, index: int) -> None:
        n = len(shared.config.channels)
        per = max(1, min(shared.config.per_connection, n))
        # the hot channel 0, plus per-1 of the others chosen by index
        others = [1 + (index + k) % (n - 1) for k in range(per - 1)] if n > 1 else []
        self.shared = shared
        self.index = index
        self.channels = [0, *others]
        self.epoch: dict[int, str | None] = dict.fromkeys(self.channels)
        self.offset: dict[int, int] = dict.fromkeys(self.channels, 0)
        self.live: dict[int, bool] = dict.fromkeys(self.channels, False)
        self.pending_since: dict[int, tuple[str, int] | None] = dict.fromkeys(self.channels)
        self.history = array("i")
        self.transport: WSTransport | None = None
        self.connected = False
        self.attempt = 0
        self.reconnects = 0
        self.resyncs = 0
        self.errors = 0
        self.dropped = False  # lost its connection since the fault
        self.back_at = 0.0  # connected again and subscribed to every channel
        self.recovered_at = 0.0

    # -- commands

    def subscribe(self, transport: WSTransport, ch: int) -> None:
        command: dict[str, Any] = {
            "op": "subscribe",
            "channel": self.shared.config.channels[ch],
            "id": ch + 1,
        }
        epoch = self.epoch[ch]
        since = None
        if epoch is not None:
            since = (epoch, self.offset[ch])
            command["since"] = {"epoch": epoch, "offset": self.offset[ch]}
        self.pending_since[ch] = since
        transport.send(WSMsgType.TEXT, orjson.dumps(command))

    # -- frames

    def connected_now(self, transport: WSTransport) -> None:
        self.transport = transport
        self.connected = True
        self.history.append(_Rec.CONNECT)
        for ch in self.channels:
            self.subscribe(transport, ch)

    def feed(self, payload: bytes) -> None:
        """Handle one text frame (one or more JSON lines)."""
        for line in payload.split(b"\n"):
            if not line:
                continue
            m = EVENT_RE.match(line)
            if m is not None:
                ch = self.shared.channel_ids.get(m.group(1), -1)
                offset = int(m.group(2))
                self.history.extend((_Rec.EVENT, ch, offset, int(m.group(3))))
                if ch in self.offset and offset > self.offset[ch]:
                    self.offset[ch] = offset
                    self.progress()
            else:
                self.control(orjson.loads(line))

    def control(self, msg: dict[str, Any]) -> None:
        op = msg.get("op")
        ch = self.shared.channel_ids.get(str(msg.get("channel", "")).encode(), -1)
        if op == "subscribed" and ch in self.offset:
            self.subscribed(ch, msg)
        elif op == "error":
            self.errors += 1
            code = str(msg.get("code"))
            self.shared.failures[code] = self.shared.failures.get(code, 0) + 1
            self.history.extend((_Rec.ERROR, ch))
            if ch in self.offset and not self.live[ch] and self.transport is not None:
                asyncio.get_running_loop().call_later(SUBSCRIBE_RETRY, self.retry, ch)
        elif op == "unsubscribed" and ch in self.offset:
            self.live[ch] = False
            self.history.extend((_Rec.UNSUBSCRIBED, ch))

    def retry(self, ch: int) -> None:
        if self.transport is not None and not self.live[ch]:
            self.subscribe(self.transport, ch)

    def subscribed(self, ch: int, msg: dict[str, Any]) -> None:
        epoch, offset = str(msg.get("epoch")), int(msg.get("offset") or 0)
        asked = "id" in msg
        since = self.pending_since[ch] if asked else None
        if asked:
            self.pending_since[ch] = None
        missed = [m for m in msg.get("missed") or () if isinstance(m, dict)]
        state = msg.get("state")
        raw = msg.get("recovered")
        recovered = -1 if asked and since is None else (1 if raw is True else 0)
        eid = self.shared.epochs.id(epoch)
        rec = [_Rec.SUBSCRIBED, ch, eid, offset, recovered, int(asked)]
        rec += [self.shared.epochs.id(since[0]), since[1]] if since else [-1, 0]
        rec.append(int(state["offset"]) if isinstance(state, dict) else -1)
        rec.append(len(missed))
        rec += [int(m["offset"]) for m in missed]
        rec += [int((m.get("data") or {}).get("i", -1)) for m in missed]
        self.history.extend(rec)
        if not asked and not self.live[ch]:
            return  # an unasked resync racing our own subscribe: its reply covers it
        self.live[ch] = True
        # realtime.js: an unasked reply at offset 0 names the epoch the first event starts
        starts = not asked and offset == 0 and self.offset[ch] == 0
        if raw is True and (since is not None or not asked) and (self.epoch[ch] == epoch or starts):
            self.epoch[ch] = epoch
            for m in missed:
                self.offset[ch] = max(self.offset[ch], int(m["offset"]))
            self.offset[ch] = max(self.offset[ch], offset)
        else:
            if since is not None or not asked:
                self.resyncs += 1
            self.epoch[ch], self.offset[ch] = epoch, offset
        if self.dropped and not self.back_at and all(self.live.values()):
            self.back_at = time.time()
        self.progress()

    def progress(self) -> None:
        """Note the moment this connection first reaches the recovery target."""
        target = self.shared.target
        if target is None or self.recovered_at or not self.connected:
            return
        for ch in self.channels:
            want = target.get(ch)
            if not self.live[ch]:
                return
            if want is not None and (self.epoch[ch] != want[0] or self.offset[ch] < want[1]):
                return
        self.recovered_at = time.time()

    def lost(self, code: int | None) -> None:
        self.transport = None
        if self.shared.fault_at:
            self.dropped = True
        if not any(self.live.values()):
            self.shared.early_drops += 1
        key = -1 if code is None else code
        self.shared.closes[key] = self.shared.closes.get(key, 0) + 1
        if self.connected:
            self.connected = False
            self.history.extend((_Rec.DISCONNECT, -1 if code is None else code))
        for ch in self.channels:
            self.live[ch] = False

    # -- the checker's records

    def records(self, channels: Sequence[str], epochs: Sequence[str]) -> list[dict[str, Any]]:
        """Convert the compact history to ``tests/guarantee/checker.py`` records."""
        out: list[dict[str, Any]] = []
        h, i, n = self.history, 0, len(self.history)
        while i < n:
            tag = h[i]
            if tag == _Rec.CONNECT:
                out.append({"kind": "connect"})
                i += 1
            elif tag == _Rec.DISCONNECT:
                out.append({"kind": "disconnect", "code": None if h[i + 1] < 0 else h[i + 1]})
                i += 2
            elif tag == _Rec.EVENT:
                name = channels[h[i + 1]] if h[i + 1] >= 0 else "?"
                out.append(event_record(name, h[i + 2], h[i + 3]))
                i += 4
            elif tag == _Rec.SUBSCRIBED:
                ch, eid, offset, recovered, asked, seid, soff, state, k = h[i + 1 : i + 10]
                offsets, seqs = h[i + 10 : i + 10 + k], h[i + 10 + k : i + 10 + 2 * k]
                rec: dict[str, Any] = {
                    "kind": "subscribed",
                    "channel": channels[ch],
                    "epoch": epochs[eid],
                    "offset": offset,
                    "recovered": None if recovered < 0 else bool(recovered),
                    "missed": [
                        {"offset": o, "type": "herd", "data": {"i": s}}
                        for o, s in zip(offsets, seqs, strict=True)
                    ],
                    "state": None if state < 0 else {"offset": state},
                    "asked": bool(asked),
                }
                if seid >= 0:
                    rec["since"] = {"epoch": epochs[seid], "offset": soff}
                out.append(rec)
                i += 10 + 2 * k
            elif tag == _Rec.ERROR:
                where = channels[h[i + 1]] if h[i + 1] >= 0 else None
                out.append({"kind": "error", "channel": where, "code": "error"})
                i += 2
            elif tag == _Rec.UNSUBSCRIBED:
                out.append({"kind": "unsubscribed", "channel": channels[h[i + 1]], "reason": ""})
                i += 2
            else:
                raise ValueError(f"corrupt history at {i}: tag {tag}")
        return out


def event_record(channel: str, offset: int, seq: int) -> dict[str, Any]:
    """One delivered event as the checker's record (data as the publisher sent it)."""
    return {
        "kind": "event",
        "channel": channel,
        "offset": offset,
        "type": "herd",
        "data": {"i": seq},
    }


def full_jitter(attempt: int) -> float:
    """realtime.js ``_backoff``: random in [min(0.05, ceiling), ceiling]."""
    ceiling = min(MAX_DELAY, MIN_DELAY * 2**attempt)
    return random.uniform(min(0.05, ceiling), ceiling)


def close_delay(code: int | None, reason: str, attempt: int) -> float:
    """realtime.js ``_afterClose``: how long to wait before reconnecting after a close."""
    if code == 1012:
        return random.uniform(0.1, RESTART_DELAY)
    if code == 1013:
        m = RETRY_AFTER_RE.search(reason)
        wait = float(m.group(1)) if m else 0.0
        if wait > 0:
            return wait + random.uniform(0, max(1.0, wait * 0.5))
        return random.uniform(0.5, RESTART_DELAY * 2)
    return full_jitter(attempt)


async def hold(conn: Conn) -> None:
    """Keep one connection open, reconnecting like realtime.js, until the process stops."""
    shared = conn.shared
    cfg = shared.config
    kwargs: dict[str, Any] = {}
    if cfg.source_ips > 1:
        kwargs["local_addr"] = (f"127.0.0.{2 + conn.index % cfg.source_ips}", 0)
    close: list[tuple[int | None, str]] = []
    opened: list[bool] = []

    class Listener(WSListener):
        def on_ws_connected(self, transport: WSTransport) -> None:
            opened.append(True)
            conn.connected_now(transport)

        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            if frame.msg_type == WSMsgType.TEXT:
                conn.feed(frame.get_payload_as_bytes())
            elif frame.msg_type == WSMsgType.CLOSE:
                code = frame.get_close_code()
                close.append((int(code.value), frame.get_close_message().decode(errors="replace")))
                transport.send_close(code)  # answer the close frame, as a browser does
                transport.disconnect()

    def failed(kind: str) -> float:
        """Count a handshake that did not open a WebSocket; return the back-off delay."""
        conn.errors += 1
        shared.failures[kind] = shared.failures.get(kind, 0) + 1
        delay = full_jitter(conn.attempt)
        conn.attempt += 1
        return delay

    first = True
    while not shared.stop.is_set():
        close.clear()
        opened.clear()
        try:
            async with shared.gate:
                # bounded as a whole: a SYN the full accept queue dropped is retried by the
                # kernel for up to two minutes, holding a slot of the gate all that time
                transport, _ = await asyncio.wait_for(
                    ws_connect(Listener, cfg.url, websocket_handshake_timeout=30, **kwargs),
                    CONNECT_TIMEOUT,
                )
        except Exception:
            # refused, 503 (the admission limit) or timed out: a browser sees only a 1006
            delay = failed("handshake")
        else:
            if not opened:
                # picows returns from ws_connect when the peer resets the connection during
                # the handshake (a listening socket closed with it in its backlog, as when
                # the server stops): no WebSocket was opened, a failed handshake; never
                # wait for such a transport to report its end
                transport.disconnect()
                await asyncio.sleep(failed("reset in the handshake"))
                continue
            # picows calls on_ws_connected before ws_connect returns: the WebSocket is open
            if not first:
                conn.reconnects += 1
            first = False
            up = time.monotonic()
            waiter = asyncio.ensure_future(transport.wait_disconnected())
            stopper = asyncio.ensure_future(shared.stop.wait())
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if shared.stop.is_set():
                transport.disconnect()
                waiter.cancel()
                return
            stopper.cancel()
            code, reason = close[0] if close else (None, "")
            conn.lost(code)
            if time.monotonic() - up >= STABLE_AFTER:
                conn.attempt = 0
            delay = close_delay(code, reason, conn.attempt)
            conn.attempt += 1
        await asyncio.sleep(delay)


class HerdWorker:
    """A client process: holds the connections and answers the parent through a pipe."""

    def __init__(self, config: HerdClientConfig, pipe: Connection) -> None:
        self.config = config
        self.pipe = pipe
        random.seed(config.seed)
        self.shared = Shared(config)
        self.conns = [Conn(self.shared, config.first_index + i) for i in range(config.count)]
        self.tasks: list[asyncio.Task[None]] = []

    async def run(self) -> None:
        """Serve the parent's commands until ``close``."""
        inbox: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        start_pipe_reader(self.pipe, inbox)
        while True:
            cmd = await inbox.get()
            kind = cmd[0]
            if kind == "open":
                self.tasks = [asyncio.ensure_future(hold(c)) for c in self.conns]
                self.pipe.send(("ok",))
            elif kind == "status":
                self.pipe.send(("status", self.status()))
            elif kind == "fault":
                self.shared.fault_at = cmd[1]
                self.shared.target = None
                for c in self.conns:
                    c.back_at = c.recovered_at = 0.0
                    c.dropped = False
                self.pipe.send(("ok",))
            elif kind == "target":
                self.shared.target = {int(k): (str(e), int(o)) for k, (e, o) in cmd[1].items()}
                for c in self.conns:
                    c.progress()
                self.pipe.send(("ok",))
            elif kind == "times":
                back = array("d", (c.back_at for c in self.conns if c.back_at))
                recovered = array("d", (c.recovered_at for c in self.conns if c.recovered_at))
                self.pipe.send(("times", back.tobytes(), recovered.tobytes()))
            elif kind == "check":
                self.pipe.send(("checked", self.check(cmd[1], cmd[2])))
            elif kind in ("close", "dead"):
                self.shared.stop.set()
                await asyncio.wait_for(asyncio.gather(*self.tasks, return_exceptions=True), 10)
                if kind == "close":
                    self.pipe.send(("closed",))
                return

    def status(self) -> dict[str, Any]:
        conns = self.conns
        return {
            "connections": len(conns),
            "connected": sum(1 for c in conns if c.connected),
            "subscribed": sum(1 for c in conns if c.connected and all(c.live.values())),
            "back": sum(1 for c in conns if c.back_at),
            "recovered": sum(1 for c in conns if c.recovered_at),
            "last_back_at": max((c.back_at for c in conns), default=0.0),
            "last_recovered_at": max((c.recovered_at for c in conns), default=0.0),
            "reconnects": sum(c.reconnects for c in conns),
            "resyncs": sum(c.resyncs for c in conns),
            "errors": sum(c.errors for c in conns),
            "closes": dict(self.shared.closes),
            "early_drops": self.shared.early_drops,
            "failures": dict(self.shared.failures),
            "history_bytes": sum(c.history.itemsize * len(c.history) for c in conns),
            "positions": _positions(conns),
        }

    def check(self, published: list[dict[str, Any]], limit: int) -> dict[str, Any]:
        """Run the guarantee checker over every connection's history."""
        return check_histories(
            self.conns, self.config.channels, self.shared.epochs.names, published, limit
        )


def _positions(conns: Sequence[Conn]) -> dict[int, tuple[int, int]]:
    """Per channel: (lowest, highest) offset of the live subscriptions."""
    out: dict[int, tuple[int, int]] = {}
    for c in conns:
        for ch in c.channels:
            if c.live[ch]:
                lo, hi = out.get(ch, (c.offset[ch], c.offset[ch]))
                out[ch] = (min(lo, c.offset[ch]), max(hi, c.offset[ch]))
    return out


def check_histories(
    conns: Sequence[Conn],
    channels: Sequence[str],
    epochs: Sequence[str],
    published: list[dict[str, Any]],
    limit: int = 5,
) -> dict[str, Any]:
    """Convert and check the histories a few connections at a time (settled: rule 6 too)."""
    from tests.guarantee.checker import check, format_violations

    violations = 0
    shown: list[str] = []
    records = events = 0
    for start in range(0, len(conns), CHECK_BATCH):
        batch: Mapping[str, list[dict[str, Any]]] = {
            f"c{c.index}": c.records(channels, epochs) for c in conns[start : start + CHECK_BATCH]
        }
        for history in batch.values():
            records += len(history)
            events += sum(
                1 if r["kind"] == "event" else len(r["missed"])
                for r in history
                if r["kind"] in ("event", "subscribed")
            )
        found = check(published, batch, settled=True)
        violations += len(found)
        if found and len(shown) < limit:
            shown.append(format_violations(found[: limit - len(shown)], batch, limit=limit))
    return {"violations": violations, "first": shown, "records": records, "events": events}


def raise_nofile() -> None:
    """Raise RLIMIT_NOFILE to 262144 (as root; else as far as the hard limit allows)."""
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))
    except (ValueError, OSError):
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def worker_main(config: HerdClientConfig, pipe: Connection) -> None:
    """Entry point of a client process."""
    raise_nofile()
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is optional, only cheaper
        pass
    asyncio.run(HerdWorker(config, pipe).run())
