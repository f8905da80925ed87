"""One simulated world: real nodes and connections, simulated store, links and clients.

``generate(seed)`` draws a world configuration and a list of timed operations; ``run``
plays them on a fresh ``SimLoop``, heals every fault, publishes once more on every channel,
lets the world settle, and checks every client's history. The same seed and operation list
always give the same run, so a failing list can be shrunk (``tests.sim.shrink``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from types import SimpleNamespace
from typing import Any

import jwt
import jwt.api_jwt
import orjson

import realtime.connection
from realtime.config import Namespace, Settings, default_namespaces
from realtime.connection import Connection
from realtime.context import ServerContext
from realtime.envelope import Envelope
from realtime.heartbeat import HeartbeatWheel
from realtime.metrics import Metrics
from realtime.node import Node
from realtime.protocol import Session
from tests.guarantee.checker import IS_PRIVATE, Violation, check
from tests.sim.client import SimClient, Token
from tests.sim.loop import Pipe, SimLoop, SimSocket
from tests.sim.store import SimBroker, SimBus, SimStore

SECRET = "sim-secret-0123456789abcdef0123456789"
WALL_BASE = 4_000_000_000.0  # virtual wall clock: tokens stay valid for PyJWT's real clock
DURATION = 12.0  # seconds of operations
SETTLE = 40.0  # after the final publishes: back-offs, grace periods, recoveries
CHANNELS = (
    "contest:a",
    "contest:b",
    "leaderboard:x",
    "user:u0",
    "user:u1",
    "submission:s1",
    "jury:j",
)


@dataclass(frozen=True, slots=True)
class Op:
    """One scheduled operation: at virtual time ``t``, do ``kind`` with ``args``."""

    t: float
    kind: str
    args: tuple[Any, ...] = ()

    def __str__(self) -> str:
        return f"t={self.t:7.3f} {self.kind} {' '.join(map(str, self.args))}"


@dataclass(frozen=True, slots=True)
class Config:
    """The shape of a world (drawn from the seed)."""

    nodes: int = 1
    clients: int = 3
    history_size: int = 100
    max_send_buffer: int = 1 << 20
    capacity: int = 65536  # each connection's kernel buffers
    unsubscribe_grace: float = 1.0
    coalesce_ms: int = 200
    heartbeat: int = 5
    big_events: bool = False
    # per client: token lifetime with a getToken that renews it; 0: an hour and no getToken;
    # negative: that lifetime and no getToken
    token_life: tuple[float, ...] = ()

    def settings(self) -> Settings:
        namespaces = dict(default_namespaces())
        for name in ("leaderboard", "jury"):
            namespaces[name] = dataclasses.replace(namespaces[name], coalesce_ms=self.coalesce_ms)
        return Settings(
            secret=SECRET,
            heartbeat=self.heartbeat,
            history_size=self.history_size,
            unsubscribe_grace=self.unsubscribe_grace,
            max_send_buffer=self.max_send_buffer,
            max_connect_rate=0,
            namespaces={k: Namespace(v.access, v.coalesce_ms) for k, v in namespaces.items()},
        )


@dataclass(slots=True)
class Result:
    """What a run produced."""

    violations: list[Violation]
    histories: dict[str, list[dict[str, Any]]]
    published: list[dict[str, Any]]
    trace: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.violations)


def generate(seed: int, without: frozenset[str] = frozenset()) -> tuple[Config, list[Op]]:
    """Draw a world and its operations from ``seed`` (leaving out the kinds ``without``)."""
    rng = random.Random(seed)
    clients = rng.randint(2, 4)
    config = Config(
        nodes=rng.choice((1, 1, 2)),
        clients=clients,
        history_size=rng.choice((100, 100, 6, 3, 0)),
        max_send_buffer=rng.choice((1 << 20, 1 << 20, 65536, 16384)),
        capacity=rng.choice((65536, 16384, 4096)),
        unsubscribe_grace=rng.choice((0.3, 1.0, 2.0)),
        coalesce_ms=rng.choice((50, 200, 500)),
        big_events=rng.random() < 0.15,
        token_life=tuple(rng.choice((0.0, 0.0, 4.0, 8.0, 30.0)) for _ in range(clients)),
    )
    ops: list[Op] = []
    cids = [f"c{i}" for i in range(clients)]
    for cid in cids:  # every page starts with a few subscriptions
        for channel in rng.sample(CHANNELS, rng.randint(1, 4)):
            ops.append(Op(rng.uniform(0, 0.5), "subscribe", (cid, channel)))
    count = rng.randint(20, 60)
    kinds = [
        ("publish", 40),
        ("republish", 3),
        ("subscribe", 5),
        ("unsubscribe", 3),
        ("resubscribe", 3),
        ("strict", 3),
        ("drop", 3),
        ("slow", 2),
        ("reauth", 3),
        ("link_drop", 2),
        ("loss", 2),
        ("store_loss", 1),
        ("store_save", 2),
        ("rollback", 2),
        ("store_outage", 1),
        ("slow_reads", 2),
        ("slow_subscribes", 2),
    ]
    names = [k for k, _ in kinds]
    weights = [w for _, w in kinds]
    nodes = range(config.nodes)
    for _ in range(count):
        t = round(rng.uniform(0.1, DURATION), 4)
        kind = rng.choices(names, weights)[0]
        channel = rng.choice(CHANNELS)
        cid = rng.choice(cids)
        args: tuple[Any, ...]
        if kind == "publish":
            args = (rng.randrange(3), channel, rng.random() < 0.25)
        elif kind == "republish":
            args = (channel,)
        elif kind in ("subscribe", "unsubscribe", "resubscribe", "strict"):
            args = (cid, channel)
        elif kind == "drop":
            args = (cid,)
        elif kind == "slow":
            args = (cid, rng.choice((64, 512, 4096)), round(rng.uniform(0.2, 4.0), 3))
        elif kind == "reauth":
            args = (cid, rng.choice(("short", "long", "other")))
        elif kind in ("link_drop", "store_outage"):
            args = (rng.choice(nodes), round(rng.uniform(0.01, 2.0), 3))
        elif kind == "loss":
            args = (rng.choice(nodes), rng.choice((0.2, 0.5, 1.0)), round(rng.uniform(0.1, 2), 3))
        elif kind in ("store_loss", "store_save", "rollback"):
            args = (channel,)
        elif kind == "slow_reads":
            args = (rng.choice(nodes), rng.choice((0.05, 0.3, 1.0)), round(rng.uniform(0.5, 3), 3))
        else:  # slow_subscribes
            args = (rng.choice(nodes), rng.choice((0.05, 0.3, 1.0)), round(rng.uniform(0.5, 3), 3))
        if kind not in without:
            ops.append(Op(t, kind, args))
    ops.sort(key=lambda op: op.t)
    return config, ops


@contextlib.contextmanager
def _virtual_time(loop: SimLoop, wall: Any) -> Iterator[None]:
    """Make connection.py's token timers read the virtual clocks (a test-side seam)."""
    shim = SimpleNamespace(time=wall, monotonic=loop.time)

    class VirtualDatetime(datetime):
        """PyJWT checks ``exp`` against ``datetime.now``: the virtual wall clock here."""

        @classmethod
        def now(cls, tz: tzinfo | None = None) -> VirtualDatetime:
            real = datetime.fromtimestamp(wall(), tz)
            return cls.fromtimestamp(real.timestamp(), tz)

    saved = getattr(realtime.connection, "time"), getattr(jwt.api_jwt, "datetime")  # noqa: B009
    setattr(realtime.connection, "time", shim)  # noqa: B010
    setattr(jwt.api_jwt, "datetime", VirtualDatetime)  # noqa: B010
    try:
        yield
    finally:
        setattr(realtime.connection, "time", saved[0])  # noqa: B010
        setattr(jwt.api_jwt, "datetime", saved[1])  # noqa: B010


class _ErrorLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.errors: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.errors.append(f"{record.name}: {record.getMessage()} {record.exc_info or ''}")


class World:
    """Everything one run needs; build with a config, then ``run(ops)``."""

    def __init__(self, config: Config, seed: int, trace: bool = False) -> None:
        self.config = config
        self.seed = seed
        self.rng = random.Random(seed * 7919 + 1)
        self.loop = SimLoop()
        self.settings = config.settings()
        self.grace = float(self.settings.heartbeat)
        self.store = SimStore(config.history_size)
        self.bus = SimBus()
        self.nodes: list[Node] = []
        self.ctxs: list[ServerContext] = []
        self.brokers: list[SimBroker] = []
        self.clients: dict[str, SimClient] = {}
        self.trace: list[str] | None = [] if trace else None
        self._fd = 100
        self._seq = 0
        self._ids: dict[str, str] = {}  # channel -> last envelope id (for republish)

    # -- clocks and helpers ------------------------------------------------------------

    def wall(self) -> float:
        return WALL_BASE + self.loop.time()

    def is_private(self, channel: str) -> bool:
        return IS_PRIVATE(channel)

    def issue(self, user: str, lifetime: float) -> Token:
        exp = self.wall() + lifetime
        channels = ("submission:s1", "jury:j") if user in ("u0", "u2") else ()
        exp = int(exp * 1000) / 1000
        claims = {"sub": user, "exp": exp, "channels": list(channels)}
        return Token(jwt.encode(claims, SECRET, "HS256"), user, channels, exp)

    def log(self, text: str) -> None:
        if self.trace is not None:
            self.trace.append(f"{self.loop.time():8.3f} {text}")

    def accept(self, client: SimClient) -> Pipe:
        """A new WebSocket connection from ``client`` to one of the nodes."""
        index = self.rng.randrange(len(self.nodes))
        ctx = self.ctxs[index]
        self._fd += 1
        pipe = Pipe(self.loop, self._fd, self.config.capacity, client.on_down)
        conn = Connection(ctx, f"10.0.0.{self._fd % 250}")
        conn.session = Session(self.settings, clock=self.loop.time, wall_clock=self.wall)
        conn.open()
        conn.attach(SimSocket(pipe), b"")  # type: ignore[arg-type]
        self.log(f"{client.cid} connects to node {index} (fd {self._fd})")
        return pipe

    # -- the run -------------------------------------------------------------------------

    def run(self, ops: Sequence[Op]) -> Result:
        errors = _ErrorLog()
        realtime_log = logging.getLogger("realtime")
        saved_level = realtime_log.level
        realtime_log.setLevel(logging.ERROR)
        realtime_log.addHandler(errors)
        try:
            with _virtual_time(self.loop, self.wall):
                self.loop.run_until_complete(self._main(ops))
                self._cancel_everything()
        finally:
            realtime_log.removeHandler(errors)
            realtime_log.setLevel(saved_level)
            self.loop.close()
        histories = {cid: c.history for cid, c in self.clients.items()}
        rights = {
            cid: (lambda channel, index, c=c: c.allowed[index]) for cid, c in self.clients.items()
        }
        violations = check(self.store.log, histories, rights)
        violations += self._liveness()
        for text in self.loop.errors + errors.errors:
            violations.append(Violation("-", None, 0, f"error: {text}", 0))
        return Result(violations, histories, self.store.log, self.trace or [])

    async def _main(self, ops: Sequence[Op]) -> None:
        for i in range(self.config.nodes):
            broker = SimBroker(f"n{i}", self.loop, self.store, self.bus, self.seed * 31 + i)
            node = Node(self.settings, broker, Metrics())
            await node.start()
            # one group, ticked once per interval: the same pings, far fewer loop iterations
            wheel = HeartbeatWheel(self.settings.heartbeat, tick=self.settings.heartbeat)
            self.brokers.append(broker)
            self.nodes.append(node)
            self.ctxs.append(
                ServerContext(
                    settings=self.settings, node=node, metrics=node.metrics, heartbeat=wheel
                )
            )
            self._tick(wheel)
        await asyncio.sleep(0.01)
        for i in range(self.config.clients):
            cid = f"c{i}"
            life = self.config.token_life[i] if i < len(self.config.token_life) else 0.0
            user = f"u{i}"
            token = self.issue(user, abs(life) or 3600.0)
            get_token = (lambda u=user, life=life: self.issue(u, life)) if life > 0 else None
            client = SimClient(self, cid, self.seed * 1009 + i, token, get_token)
            self.clients[cid] = client
            client.start()
        start = self.loop.time()
        for op in ops:
            self.loop.call_at(start + op.t, self._apply, op)
        await asyncio.sleep(DURATION + 0.1)
        self._heal()
        await asyncio.sleep(0.5)
        for channel in CHANNELS:
            self._publish(0, channel, False)
        await asyncio.sleep(SETTLE)

    def _tick(self, wheel: HeartbeatWheel) -> None:
        wheel.tick()
        self.loop.call_later(wheel.tick_seconds, self._tick, wheel)

    def _cancel_everything(self) -> None:
        tasks = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))

    def _heal(self) -> None:
        self.log("heal every fault")
        self.store.reachable = True
        for broker in self.brokers:
            broker.faults.loss = 0.0
            broker.faults.read_delay = 0.002
            broker.faults.subscribe_delay = 0.002
            broker.connect()
        for client in self.clients.values():
            client.set_slow(0)

    def _liveness(self) -> list[Violation]:
        """A page whose subscription is not live after the settle period is a violation too."""
        out = []
        for cid, client in sorted(self.clients.items()):
            if client.closed:
                continue  # stopped on purpose (1008, a refused token): nothing is promised
            stuck = client.get_token is None and (
                client.token is None or client.token.exp <= self.wall()
            )
            for sub in sorted(client.subs.values(), key=lambda sub: sub.channel):
                if stuck and sub.status == "pending" and self.is_private(sub.channel):
                    continue  # announced (token_expired) and nothing can renew the token
                if sub.status != "live":
                    detail = f"the page's subscription is {sub.status} at the end, not live"
                    out.append(Violation(cid, sub.channel, 6, detail, len(client.history)))
        return out

    # -- operations ----------------------------------------------------------------------

    def _publish(self, publisher: int, channel: str, state: bool, size: int = 0) -> None:
        self._seq += 1
        data: dict[str, Any] = {"p": publisher, "n": self._seq}
        if size:
            data["pad"] = "x" * size
        envelope_id = f"p{publisher}-{self._seq}"
        self._ids[channel] = envelope_id
        envelope = Envelope(channel, "t", orjson.dumps(data), state, envelope_id)
        # publisher 2 writes no history (HISTORY_SIZE=0): it leaves holes for the others
        published, event = self.store.publish(envelope, keep_history=publisher != 2)
        self.log(f"publish {channel} -> {published.epoch}/{published.offset}")
        if event is not None:
            self.bus.send(event)

    def _apply(self, op: Op) -> None:
        self.log(str(op))
        kind, args = op.kind, op.args
        if kind == "publish":
            size = self.rng.choice((2000, 11000)) if self.config.big_events else 0
            self._publish(args[0], args[1], args[2], args[3] if len(args) > 3 else size)
        elif kind == "republish":
            # a relay retry: the store answers `duplicate`, the event goes out again anyway
            envelope_id = self._ids.get(args[0])
            if envelope_id is None:
                return
            envelope = Envelope(args[0], "t", b"null", False, envelope_id)
            published, event = self.store.publish(envelope)
            if event is not None and published.epoch == event.epoch:
                self.bus.send(event)
        elif kind in ("subscribe", "unsubscribe", "resubscribe", "strict"):
            client = self.clients.get(args[0])
            if client is not None:
                getattr(client, kind if kind != "strict" else "strict_mode")(args[1])
        elif kind == "drop":
            client = self.clients.get(args[0])
            if client is not None:
                client.drop()
        elif kind == "slow":
            client = self.clients.get(args[0])
            if client is not None:
                client.set_slow(args[1])
                self.loop.call_later(args[2], client.set_slow, 0)
        elif kind == "reauth":
            self._reauth(args[0], args[1])
        elif kind == "link_drop":
            broker = self._broker(args[0])
            if broker is not None:
                broker.drop()
                self.loop.call_later(args[1], broker.connect)
        elif kind == "loss":
            broker = self._broker(args[0])
            if broker is not None:
                broker.faults.loss = args[1]
                self.loop.call_later(args[2], setattr, broker.faults, "loss", 0.0)
        elif kind == "store_loss":
            self.store.lose(args[0])
        elif kind == "store_save":
            self.store.save(args[0])
        elif kind == "rollback":
            # the store restarts from an older snapshot: every link and read fails meanwhile
            down = self.rng.uniform(0.05, 0.5)
            self.store.reachable = False
            for broker in self.brokers:
                broker.drop()
                self.loop.call_later(down, broker.connect)
            self.store.rollback(args[0])
            self.loop.call_later(down, setattr, self.store, "reachable", True)
        elif kind == "rollback_live":
            # a rollback nobody's connection notices (reads from a lagging replica)
            self.store.rollback(args[0])
        elif kind == "store_outage":
            self.store.reachable = False
            self.loop.call_later(args[1], setattr, self.store, "reachable", True)
        elif kind in ("slow_reads", "slow_subscribes"):
            broker = self._broker(args[0])
            if broker is not None:
                name = "read_delay" if kind == "slow_reads" else "subscribe_delay"
                setattr(broker.faults, name, args[1])
                self.loop.call_later(args[2], setattr, broker.faults, name, 0.002)

        elif kind == "read_time":
            broker = self._broker(args[0])
            if broker is not None:
                broker.faults.fixed_read = None if args[1] is None else (args[1], args[2])
        elif kind == "binary":
            client = self.clients.get(args[0])
            if client is not None:
                client.send_binary(args[1])

    def _broker(self, index: int) -> SimBroker | None:
        return self.brokers[index] if index < len(self.brokers) else None

    def _reauth(self, cid: str, variant: str) -> None:
        client = self.clients.get(cid)
        if client is None or client.token is None:
            return
        user = client.token.user
        if variant == "short":
            token = self.issue(user, 1.5)
        elif variant == "long":
            token = self.issue(user, 3600.0)
        else:  # as another user: the private channels of the first are no longer allowed
            token = self.issue(user + "x" if not user.endswith("x") else user[:-1], 3600.0)
        client.set_token(token)


def run_seed(
    seed: int,
    ops: Sequence[Op] | None = None,
    trace: bool = False,
    without: frozenset[str] = frozenset(),
) -> Result:
    """Run one seed (optionally with a subset of its operations)."""
    config, generated = generate(seed, without)
    world = World(config, seed, trace)
    return world.run(generated if ops is None else ops)


def run_scenario(config: Config, ops: Sequence[Op], seed: int = 0, trace: bool = True) -> Result:
    """Run hand-written operations in a hand-chosen world (the named defect scenarios)."""
    return World(config, seed, trace).run(sorted(ops, key=lambda op: op.t))
