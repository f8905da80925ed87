"""The load generator's client process: holds WebSocket connections and counts deliveries.

Connections use picows (a Cython WebSocket client: frame parsing costs well under a
microsecond) and do the least possible Python work per frame: one compiled regex pulls
the benchmark's ``"i":<seq>,"t":<send ns>`` pair out of every event in the frame (a frame
may batch several events separated by ``\\n``), so no JSON is decoded on the hot path.
The same regex reads socket.io frames (``42["event",{...}]``), so every peer is measured by
the same client. The parent process drives this one through a pipe (see ``Worker.run``).
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from array import array
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, cast

import orjson
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

EVENT_RE = re.compile(rb'"i":\s*(\d+),\s*"t":\s*(\d+)')
SUBSCRIBED_RE = re.compile(rb'"op":\s*"subscribed"')
ERROR_RE = re.compile(rb'"op":\s*"error"')


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """What one client process connects to and how."""

    url: str
    channel: str
    token: str | None
    count: int  # connections held by this process
    first_index: int  # global index of its first connection (spreads source addresses)
    socketio: bool = False
    source_ips: int = 1  # >1: bind connections to n addresses from 127.0.0.2 on (127.0.0.0/8)
    connect_concurrency: int = 200
    connect_timeout: float = 60.0
    # a private channel per connection: ``channel`` holds "{i}" (the connection's index),
    # and each connection authenticates with a token minted for user "<i>" with this secret
    secret: str | None = None


def source_address(index: int, count: int) -> str:
    """The loopback address connection ``index`` binds to, one of ``count`` in 127.0.0.0/8.

    Each source address has its own ~28,000 ephemeral ports, so 100,000 connections to one
    server port need at least four; spreading wider also keeps per-IP limits realistic.
    """
    x = 2 + index % count
    return f"127.{x >> 16 & 255}.{x >> 8 & 255}.{x & 255}"


def connection_token(secret: str, index: int) -> str:
    """A token for user ``str(index)`` (``user:<index>`` is then its own private channel)."""
    import jwt

    return jwt.encode({"sub": str(index), "exp": int(time.time()) + 86_400}, secret, "HS256")


class RoundState:
    """Counters of the current round, shared by all connections of this process."""

    def __init__(self) -> None:
        self.base = 0
        self.m = 0
        self.expected = -1  # no round armed
        self.received = 0
        self.errors = 0
        self.latencies = array("q")
        self.done_ns = 0
        self.subscribed = 0
        self.notify: Connection | None = None

    def delivered(self) -> None:
        """Tell the parent once this process got every expected copy."""
        if self.received >= self.expected and not self.done_ns:
            self.done_ns = time.time_ns()
            if self.notify is not None:
                self.notify.send(("done", self.done_ns))

    def on_subscribed(self) -> None:
        self.subscribed += 1


class JsonConn(WSListener):
    """One connection speaking the realtime protocol (JSON text frames)."""

    def __init__(self, state: RoundState, channel: str, token: str | None) -> None:
        super().__init__()
        self.state = state
        self.channel = channel
        self.token = token
        self.transport: WSTransport | None = None
        self.subscribed = False
        self.counts = bytearray()
        self.error = ""
        # resolves True on `subscribed`, False on an error before it (bounds the opening)
        self.ready: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        self.start(transport)

    def start(self, transport: WSTransport) -> None:
        if self.token:
            transport.send(WSMsgType.TEXT, orjson.dumps({"op": "auth", "token": self.token}))
        transport.send(WSMsgType.TEXT, orjson.dumps({"op": "subscribe", "channel": self.channel}))

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type != WSMsgType.TEXT:
            if frame.msg_type == WSMsgType.CLOSE:
                self.state.errors += 1
            return
        payload = frame.get_payload_as_bytes()
        if not self.count(payload):
            self.control(transport, payload)

    def count(self, payload: bytes) -> bool:
        """Count the events in a frame; return False when it held none."""
        found = EVENT_RE.findall(payload)
        if not found:
            return False
        now = time.time_ns()
        st = self.state
        counts, base, m, lat = self.counts, st.base, st.m, st.latencies
        for seq, sent in found:
            k = int(seq) - base
            if 0 <= k < m:
                c = counts[k]
                if c < 255:
                    counts[k] = c + 1
                st.received += 1
                lat.append(now - int(sent))
        if st.received >= st.expected > 0:
            st.delivered()
        if not self.subscribed and SUBSCRIBED_RE.search(payload):
            self.mark_subscribed()  # a batch may carry the reply and the first event
        return True

    def control(self, transport: WSTransport, payload: bytes) -> None:
        if not self.subscribed and SUBSCRIBED_RE.search(payload):
            self.mark_subscribed()
        elif ERROR_RE.search(payload):
            self.state.errors += 1
            self.fail(payload)

    def mark_subscribed(self) -> None:
        self.subscribed = True
        self.state.on_subscribed()
        if not self.ready.done():
            self.ready.set_result(True)

    def fail(self, payload: bytes) -> None:
        if not self.ready.done():
            self.error = payload[:200].decode(errors="replace")
            self.ready.set_result(False)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.transport = None
        self.fail(b"disconnected")
        if self.state.expected >= 0:
            self.state.errors += 1


class SocketIOConn(JsonConn):
    """One connection speaking socket.io v5 / engine.io v4 over the WebSocket transport."""

    def start(self, transport: WSTransport) -> None:
        pass  # wait for the engine.io open packet

    def control(self, transport: WSTransport, payload: bytes) -> None:
        if payload == b"2":  # engine.io ping: answer or the server drops us
            transport.send(WSMsgType.TEXT, b"3")
        elif payload[:1] == b"0":  # engine.io open: connect to the default namespace
            transport.send(WSMsgType.TEXT, b"40")
        elif payload[:2] == b"40":
            body = orjson.dumps(["subscribe", {"op": "subscribe", "channel": self.channel}])
            transport.send(WSMsgType.TEXT, b"42" + body)
        elif payload.startswith(b'42["subscribed"'):
            if not self.subscribed:
                self.mark_subscribed()
        elif payload[:2] == b"44" or ERROR_RE.search(payload):
            self.state.errors += 1
            self.fail(payload)


def start_pipe_reader(pipe: Connection, inbox: asyncio.Queue[tuple[Any, ...]]) -> None:
    """Feed messages from a pipe into an asyncio queue from a daemon thread.

    A thread, not ``loop.add_reader``: uvloop makes the descriptor non-blocking, and
    ``Connection.send`` of a large result then fails with EAGAIN.
    """
    loop = asyncio.get_running_loop()

    def read() -> None:
        while True:
            try:
                msg = pipe.recv()
            except (EOFError, OSError):
                loop.call_soon_threadsafe(inbox.put_nowait, ("dead",))
                return
            loop.call_soon_threadsafe(inbox.put_nowait, msg)

    threading.Thread(target=read, daemon=True).start()


class Worker:
    """A client process: opens connections, arms rounds and reports counts on request."""

    def __init__(self, config: ClientConfig, pipe: Connection) -> None:
        self.config = config
        self.pipe = pipe
        self.state = RoundState()
        self.state.notify = pipe
        self.conns: list[JsonConn] = []
        self.cpu0 = 0.0
        self.wall0 = 0.0

    async def run(self) -> None:
        """Serve the parent's commands until ``close``."""
        commands: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        start_pipe_reader(self.pipe, commands)
        while True:
            cmd = await commands.get()
            if cmd[0] == "open":
                self.pipe.send(("opened", await self.open()))
            elif cmd[0] == "arm":
                self.arm(cmd[1], cmd[2])
                self.pipe.send(("armed",))
            elif cmd[0] == "collect":
                self.pipe.send(("result", self.collect()))
            elif cmd[0] == "close":
                await self.close()
                self.pipe.send(("closed",))
                return

    async def open(self) -> dict[str, Any]:
        """Open and subscribe every connection (bounded concurrency and time)."""
        cfg = self.config
        cls = SocketIOConn if cfg.socketio else JsonConn
        gate = asyncio.Semaphore(cfg.connect_concurrency)
        failures: list[str] = []
        started = time.monotonic()

        async def one(index: int) -> None:
            kwargs: dict[str, Any] = {}
            if cfg.source_ips > 1:
                kwargs["local_addr"] = (source_address(index, cfg.source_ips), 0)
            channel, token = cfg.channel, cfg.token
            if cfg.secret is not None:
                channel = channel.format(i=index)
                token = connection_token(cfg.secret, index)
            async with gate:
                try:
                    _, listener = await ws_connect(
                        lambda: cls(self.state, channel, token),
                        cfg.url,
                        websocket_handshake_timeout=30,
                        **kwargs,
                    )
                    conn = cast(JsonConn, listener)
                    # hold the slot until subscribed: the subscribe is part of the opening
                    ok = await asyncio.wait_for(conn.ready, 30)
                except Exception as exc:
                    failures.append(f"{type(exc).__name__}: {exc}")
                    return
                self.conns.append(conn)
                if not ok:
                    failures.append(f"subscribe failed: {conn.error}")

        tasks = [asyncio.ensure_future(one(cfg.first_index + i)) for i in range(cfg.count)]
        try:
            await asyncio.wait_for(asyncio.gather(*tasks), cfg.connect_timeout)
        except TimeoutError:
            failures.append("timed out opening or subscribing")
            for task in tasks:
                task.cancel()
        return {
            "connected": len(self.conns),
            "subscribed": sum(1 for c in self.conns if c.subscribed),
            "failures": len(failures),
            "first_failure": failures[0] if failures else None,
            "seconds": time.monotonic() - started,
        }

    def arm(self, base: int, m: int) -> None:
        """Reset the counters for a round of events ``base .. base+m-1``."""
        st = self.state
        live = [c for c in self.conns if c.subscribed and c.transport is not None]
        for conn in self.conns:
            conn.counts = bytearray(m)
        st.base, st.m, st.received, st.errors, st.done_ns = base, m, 0, 0, 0
        st.latencies = array("q")
        st.expected = m * len(live)
        self.cpu0, self.wall0 = time.process_time(), time.monotonic()

    def collect(self) -> dict[str, Any]:
        """Return this round's counts (lost, duplicates, latencies) and client CPU."""
        st = self.state
        lost = dups = 0
        live = 0
        for conn in self.conns:
            if not conn.subscribed:
                continue
            live += 1
            counts = conn.counts
            lost += counts.count(0)
            dups += sum(c - 1 for c in counts if c > 1) if max(counts, default=0) > 1 else 0
        result = {
            "connections": live,
            "received": st.received,
            "expected": st.expected,
            "lost": lost,
            "duplicates": dups,
            "errors": st.errors,
            "done_ns": st.done_ns,
            "latencies": st.latencies.tobytes(),
            "cpu_s": time.process_time() - self.cpu0,
            "wall_s": time.monotonic() - self.wall0,
        }
        st.expected = -1
        return result

    async def close(self) -> None:
        for conn in self.conns:
            if conn.transport is not None:
                conn.transport.disconnect()
        await asyncio.sleep(0)


def worker_main(config: ClientConfig, pipe: Connection) -> None:
    """Entry point of a client process."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is optional, only cheaper
        pass
    asyncio.run(Worker(config, pipe).run())
