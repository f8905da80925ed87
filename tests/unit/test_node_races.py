"""Interleavings of the node and a connection that only a controlled broker can produce.

The real ``Node``, ``Hub`` and ``Connection`` run on a real event loop; the connection owns
one end of a socketpair and the test reads the other. The broker is a fake around the real
``MemoryStore`` (pure logic): its store reads can be held open, and its pub/sub can lose
messages, so each test forces exactly the order of events that broke the guarantee.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from realtime.brokers.base import EventCallback, HealthCallback, Snapshot
from realtime.brokers.memory_store import MemoryStore
from realtime.config import Namespace, Settings, default_namespaces
from realtime.connection import Connection
from realtime.context import ServerContext
from realtime.envelope import Envelope, Event, Published
from realtime.heartbeat import HeartbeatWheel
from realtime.metrics import Metrics
from realtime.node import Node


class GatedBroker:
    """A broker over ``MemoryStore`` whose reads and deliveries the test controls."""

    def __init__(self, history_size: int = 100) -> None:
        self.store = MemoryStore(history_size, 600.0)
        self.on_event: EventCallback | None = None
        self.deliver = True  # False: pub/sub loses what is published
        self.gates: list[asyncio.Future[None]] = []  # each read waits for the next gate
        self.gate_reads = False
        self.reads: list[tuple[str, int]] = []
        self.stale: Snapshot | None = None  # the next gated read answers this instead

    async def start(self, on_event: EventCallback, on_health: HealthCallback) -> None:
        self.on_event = on_event
        on_health(True)

    async def subscribe(self, channel: str) -> None:
        return None

    async def unsubscribe(self, channel: str) -> None:
        return None

    async def publish(self, envelope: Envelope) -> Published:
        published, event = self.store.publish(envelope)
        if event is not None and self.deliver and self.on_event is not None:
            self.on_event(event)
        return published

    async def snapshot(self, channel: str, history: int) -> Snapshot:
        self.reads.append((channel, history))
        snap = self.store.snapshot(channel, history)  # read when sent, answered later
        if self.gate_reads:
            gate = asyncio.get_running_loop().create_future()
            self.gates.append(gate)
            await gate
        return snap

    async def renew_epoch(self, channel: str, epoch: str) -> Snapshot:
        return self.store.renew_epoch(channel, epoch)

    async def close(self) -> None:
        return None

    @property
    def healthy(self) -> bool:
        return True

    @property
    def status(self) -> str:
        return "connected"

    def open_gate(self, index: int = 0) -> None:
        self.gates.pop(index).set_result(None)


def _settings(**changes: Any) -> Settings:
    namespaces = dict(default_namespaces())
    namespaces["leaderboard"] = Namespace(access="public", coalesce_ms=200)
    return replace(Settings(secret="s" * 32), namespaces=namespaces, **changes)


class Peer:
    """The client end of a socketpair: reads the server's (unmasked) frames."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        sock.setblocking(False)
        self.buffer = b""

    def messages(self) -> list[dict[str, Any]]:
        while True:
            try:
                data = self.sock.recv(1 << 20)
            except BlockingIOError:
                break
            if not data:
                break
            self.buffer += data
        out = []
        while len(self.buffer) >= 2:
            length, at = self.buffer[1] & 0x7F, 2
            if length == 126:
                length, at = int.from_bytes(self.buffer[2:4], "big"), 4
            elif length == 127:
                length, at = int.from_bytes(self.buffer[2:10], "big"), 10
            if len(self.buffer) < at + length:
                break
            payload, self.buffer = self.buffer[at : at + length], self.buffer[at + length :]
            out.extend(json.loads(line) for line in payload.decode().split("\n") if line)
        return out

    def send(self, obj: dict[str, Any]) -> None:
        payload = json.dumps(obj).encode()
        assert len(payload) < 126
        self.sock.send(bytes([0x81, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)


def _tcp_pair() -> tuple[socket.socket, socket.socket]:
    """A connected loopback TCP pair (the connection sets TCP options on its end)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    return server, client


async def _setup(broker: GatedBroker, **changes: Any) -> tuple[Node, Callable[[], Peer]]:
    settings = _settings(**changes)
    metrics = Metrics()
    node = Node(settings, broker, metrics)  # type: ignore[arg-type]
    await node.start()
    ctx = ServerContext(settings, node, metrics, HeartbeatWheel(settings.heartbeat))

    def connect() -> Peer:
        ours, theirs = _tcp_pair()
        conn = Connection(ctx, "127.0.0.1")
        conn.open()
        conn.attach(ours, b"")
        return Peer(theirs)

    return node, connect


async def _settle(rounds: int = 20) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


async def _publish_now(broker: GatedBroker, channel: str, n: int, state: bool = False) -> None:
    for i in range(n):
        await broker.publish(Envelope(channel, "t", json.dumps(i).encode(), state, None))


def _trail(messages: list[dict[str, Any]], channel: str) -> list[tuple[str, int]]:
    out = []
    for msg in messages:
        if msg.get("channel") != channel:
            continue
        if msg["op"] == "event":
            out.append(("event", msg["offset"]))
        elif msg["op"] == "subscribed":
            out.append(("recovered" if msg["recovered"] else "resync", msg["offset"]))
    return out


def test_resync_reaches_a_subscriber_whose_reply_is_older() -> None:
    """Defect 4: the reply from an older read is followed by the resync, then new events."""

    async def scenario() -> list[tuple[str, int]]:
        broker = GatedBroker(history_size=5)
        node, connect = await _setup(broker)
        channel = "contest:d4"
        live = connect()
        live.send({"op": "subscribe", "channel": channel, "id": 1})
        await _settle()
        await _publish_now(broker, channel, 20)
        await _settle()
        # the late subscriber's read is sent at offset 20 and answered much later
        broker.gate_reads = True
        late = connect()
        late.send({"op": "subscribe", "channel": channel, "id": 2})
        await _settle()
        assert len(broker.gates) == 1
        # meanwhile pub/sub loses 21..50; event 51 reveals the gap; history (5) cannot cover
        broker.deliver = False
        await _publish_now(broker, channel, 30)
        broker.deliver = True
        await _publish_now(broker, channel, 1)
        await _settle()
        late_read = broker.gates[0]
        while len(broker.gates) > 1:  # the node's recovery reads (offsets, then history)
            broker.open_gate(1)
            await _settle()
        assert broker.gates == [late_read]
        broker.open_gate()  # the late subscriber's read (offset 20) is answered last
        await _settle()
        broker.gate_reads = False
        await _publish_now(broker, channel, 1)
        await _settle()
        assert _trail(live.messages(), channel)[-2:] == [("resync", 51), ("event", 52)]
        await node.close()
        return _trail(late.messages(), channel)

    trail = asyncio.run(scenario())
    assert trail == [("resync", 20), ("resync", 51), ("event", 52)], trail


def test_deferred_coalesced_frame_never_follows_a_newer_one() -> None:
    """Defect 9: offsets 6 then 5 on the wire when a deferred frame was not dropped."""
    five, six = b"\x81\x015", b"\x81\x016"

    async def scenario() -> list[bytes]:
        broker = GatedBroker()
        node, connect = await _setup(broker)
        channel = "leaderboard:d9"
        peer = connect()
        peer.send({"op": "subscribe", "channel": channel, "id": 1})
        await _settle()
        conn = next(iter(node.hub.subscribers(channel)))
        assert isinstance(conn, Connection)
        # bytes the kernel has not taken yet, past the congestion mark: 5 is deferred
        conn._out = bytearray(conn._congested + 100)
        conn.push(channel, 5, five, True)
        # the buffer drains below the mark: 6 goes out directly
        del conn._out[:200]
        conn.push(channel, 6, six, True)
        conn._out.clear()
        conn._on_writable()
        queued = [f for f in (conn._first, *conn._more) if f in (five, six)]
        await node.close()
        return queued

    assert asyncio.run(scenario()) == [six]


def test_reconnect_reads_offsets_first_and_history_only_where_moved() -> None:
    """Defect 16: after a link drop, 40 quiet channels cost offset reads, not history reads."""

    async def scenario() -> tuple[int, int]:
        broker = GatedBroker()
        node, connect = await _setup(broker)
        peer = connect()
        for i in range(40):
            peer.send({"op": "subscribe", "channel": f"contest:q{i}", "id": i + 1})
        await _settle(50)
        await _publish_now(broker, "contest:q0", 3)
        broker.reads.clear()
        broker.deliver = False
        await _publish_now(broker, "contest:q1", 2)  # lost while the link was down
        broker.deliver = True
        node._on_health(False)
        node._on_health(True)
        await _settle(200)
        trail = _trail(peer.messages(), "contest:q1")
        assert trail[-2:] == [("event", 1), ("event", 2)], trail
        await node.close()
        history = sum(1 for _, want in broker.reads if want > 0)
        offsets = sum(1 for _, want in broker.reads if want == 0)
        return history, offsets

    history, offsets = asyncio.run(scenario())
    assert history == 1 and offsets == 40


def test_a_join_storm_shares_store_reads() -> None:
    """Defect 16: 300 subscribes to one channel arriving together cost at most two reads."""

    async def scenario() -> int:
        broker = GatedBroker()
        node, connect = await _setup(broker)
        await _publish_now(broker, "contest:herd", 5)
        peers = [connect() for _ in range(300)]
        broker.gate_reads = True  # a store read takes a while: joins arrive meanwhile
        for p in peers:
            p.send({"op": "subscribe", "channel": "contest:herd", "id": 1})
            await asyncio.sleep(0)
        await _settle(50)
        while broker.gates:
            broker.open_gate()
            await _settle(50)
        replies = [m for p in peers for m in p.messages() if m["op"] == "subscribed"]
        assert len(replies) == 300 and all(r["offset"] == 5 for r in replies)
        await node.close()
        return len(broker.reads)

    assert asyncio.run(scenario()) <= 2


def test_unused_helpers_are_consistent() -> None:
    """The fake broker answers like the store it wraps (guards the harness itself)."""

    async def scenario() -> tuple[Snapshot, Snapshot]:
        broker = GatedBroker()
        await broker.publish(Envelope("contest:h", "t", b"1", True, None))
        return await broker.snapshot("contest:h", 5), broker.store.snapshot("contest:h", 5)

    a, b = asyncio.run(scenario())
    assert (a.epoch, a.offset, a.state) == (b.epoch, b.offset, b.state)
    assert isinstance(a.history[0], Event)


def test_coalesced_event_of_the_old_epoch_does_not_follow_a_resync() -> None:
    """Defect 1: the pending coalesced event of a lost epoch moved clients back."""

    async def scenario() -> list[tuple[str, int, Any]]:
        broker = GatedBroker()
        node, connect = await _setup(broker)
        channel = "leaderboard:d1"
        peer = connect()
        peer.send({"op": "subscribe", "channel": channel, "id": 1})
        await _settle()
        await _publish_now(broker, channel, 5)  # 1 goes out, 5 waits for the window
        await _settle()
        broker.store._channels.clear()
        await broker.publish(Envelope(channel, "t", b"100", False, None))  # new epoch, 1
        await _settle()
        await asyncio.sleep(0.3)  # the window ends
        for i in range(101, 105):
            await broker.publish(Envelope(channel, "t", str(i).encode(), False, None))
        await asyncio.sleep(0.3)
        await _settle()
        await node.close()
        return [
            (m["op"], m["offset"], m.get("data"))
            for m in peer.messages()
            if m.get("channel") == channel and m.get("id") is None
        ]

    got = asyncio.run(scenario())
    resync = max(i for i, m in enumerate(got) if m[0] == "subscribed")
    assert all(data >= 100 for op, _, data in got[resync + 1 :]), got
    assert got[-1][1:] == (5, 104), got
