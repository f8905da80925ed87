"""A simulated channel store, pub/sub bus and broker links, with faults.

The store numbers events per channel and epoch, keeps a bounded history (a publish may skip
it, leaving holes, like a publisher with history size 0), the latest state event, and the
envelope ids it has seen. Faults: store loss (a new epoch), rollback to an older snapshot
under the same epoch, an unreachable store (reads fail).

``SimBroker`` implements ``realtime.brokers.base.Broker`` for one node, the way the Redis
broker behaves: a pub/sub link that can drop and reconnect (``on_health``), subscriptions
that take effect and are confirmed late, messages that can be lost, and store reads taken at
a random instant and returned late (so two reads can come back out of order).
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson

from realtime.brokers import base
from realtime.brokers.base import EventCallback, HealthCallback, Snapshot
from realtime.envelope import Envelope, Event, Published, encode_event
from realtime.errors import BrokerUnavailable
from tests.sim.loop import SimLoop

# the epoch of a channel nobody published on (None: a server from before issue 13, whose
# stores create the channel when it is first read)
EMPTY_EPOCH: str | None = getattr(base, "EMPTY_EPOCH", None)


@dataclass(slots=True)
class _Channel:
    epoch: str
    offset: int = 0
    state: bytes | None = None
    history: deque[Event] = field(default_factory=deque)
    ids: dict[str, Event] = field(default_factory=dict)

    def copy(self) -> _Channel:
        return _Channel(self.epoch, self.offset, self.state, deque(self.history), dict(self.ids))


class SimStore:
    """Channels with epochs, offsets, history, state; ``log`` is the checker's ``published``."""

    def __init__(self, history_size: int) -> None:
        self.history_size = history_size
        self._channels: dict[str, _Channel] = {}
        self._epochs = 0
        self._saved: dict[str, _Channel | None] = {}
        self.log: list[dict[str, Any]] = []
        self.reachable = True

    def _new_epoch(self) -> str:
        self._epochs += 1
        return f"E{self._epochs}"

    def _channel(self, name: str) -> _Channel:
        ch = self._channels.get(name)
        if ch is None:
            ch = self._channels[name] = _Channel(self._new_epoch())
        return ch

    def publish(
        self, envelope: Envelope, keep_history: bool = True
    ) -> tuple[Published, Event | None]:
        """Number and store an event; a seen id returns the stored event, marked duplicate."""
        ch = self._channel(envelope.channel)
        if envelope.id is not None and envelope.id in ch.ids:
            old = ch.ids[envelope.id]
            return Published(envelope.channel, ch.epoch, old.offset, duplicate=True), old
        ch.offset += 1
        data = encode_event(envelope.channel, ch.offset, envelope.type, envelope.data_json)
        event = Event(envelope.channel, ch.epoch, ch.offset, data)
        if keep_history and self.history_size > 0:
            ch.history.append(event)
            while len(ch.history) > self.history_size:
                ch.history.popleft()
        if envelope.state:
            ch.state = data
        if envelope.id is not None:
            ch.ids[envelope.id] = event
        self.log.append(
            {
                "channel": envelope.channel,
                "epoch": ch.epoch,
                "offset": ch.offset,
                "type": envelope.type,
                "data": orjson.loads(envelope.data_json),
                "state": envelope.state,
            }
        )
        return Published(envelope.channel, ch.epoch, ch.offset), event

    def snapshot(self, channel: str, history: int) -> Snapshot:
        """Read a channel at this instant (one nobody published on: the empty epoch, 0)."""
        ch = self._channels.get(channel)
        if ch is None:
            if EMPTY_EPOCH is not None:
                return Snapshot(EMPTY_EPOCH, 0, None, [])
            ch = self._channel(channel)
        events = list(ch.history)[-history:] if history > 0 else []
        return Snapshot(ch.epoch, ch.offset, ch.state, events)

    def renew_epoch(self, channel: str, epoch: str) -> Snapshot:
        """Give the channel a new epoch if it still has ``epoch`` (the node saw a rollback)."""
        ch = self._channels.get(channel)
        if ch is not None and ch.epoch == epoch:
            old, ch.epoch = ch.epoch, self._new_epoch()
            ch.history.clear()  # numbered in the old epoch
            self.log.append(
                {"channel": channel, "epoch": ch.epoch, "renewed_from": old, "offset": ch.offset}
            )
        return self.snapshot(channel, 0)

    def lose(self, channel: str) -> None:
        """Forget the channel (Redis restarted without persistence, keys evicted)."""
        self._channels.pop(channel, None)
        self._saved.pop(channel, None)

    def save(self, channel: str) -> None:
        """Remember the channel as it is now (an RDB snapshot, a lagging replica)."""
        ch = self._channels.get(channel)
        self._saved[channel] = ch.copy() if ch is not None else None

    def rollback(self, channel: str) -> bool:
        """Go back to the saved copy; False when there is none to use.

        A copy from before the channel existed loses it (a new epoch follows); one from
        another epoch is of no use.
        """
        if channel not in self._saved:
            return False
        saved = self._saved[channel]
        current = self._channels.get(channel)
        if saved is None:
            if current is None:
                return False
            self.lose(channel)
            return True
        if current is None or saved.epoch != current.epoch:
            return False
        if saved.offset == current.offset:
            return False
        self._channels[channel] = saved.copy()
        self.log.append({"channel": channel, "epoch": saved.epoch, "rollback_to": saved.offset})
        return True


@dataclass(slots=True)
class LinkFaults:
    """Fault knobs of one pub/sub link, changed by the scheduler."""

    loss: float = 0.0  # probability a pub/sub message is lost
    subscribe_delay: float = 0.002  # until a SUBSCRIBE takes effect; confirmation as long again
    read_delay: float = 0.002  # store reads: taken within, and returned after, up to this
    # scenarios: (taken after, returned after) exactly, instead of random delays
    fixed_read: tuple[float, float] | None = None


class SimBroker:
    """One node's broker: pub/sub link + store client, over the shared ``SimStore``."""

    def __init__(self, name: str, loop: SimLoop, store: SimStore, bus: SimBus, seed: int) -> None:
        self.name = name
        self._loop = loop
        self._store = store
        self._bus = bus
        self._rng = random.Random(seed)
        self.faults = LinkFaults()
        self._on_event: EventCallback | None = None
        self._on_health: HealthCallback | None = None
        self._up = False
        self._generation = 0  # bumps on every link loss: in-flight messages are lost
        self._channels: set[str] = set()  # what the node asked for
        self._live: set[str] = set()  # what the pub/sub connection receives
        self._last_delivery = 0.0
        self.reads: list[tuple[str, int]] = []  # every snapshot call: (channel, history)
        self.renewals: list[tuple[str, str]] = []
        bus.links.append(self)

    # -- the Broker interface ---------------------------------------------------------

    async def start(self, on_event: EventCallback, on_health: HealthCallback) -> None:
        self._on_event, self._on_health = on_event, on_health
        self._loop.call_later(0.001, self.connect)

    async def subscribe(self, channel: str) -> None:
        if channel in self._channels:
            return
        self._channels.add(channel)
        if not self._up:
            return  # subscribed on reconnect, like the Redis broker
        generation = self._generation
        await asyncio.sleep(self._rng.uniform(0, self.faults.subscribe_delay))
        if generation != self._generation or channel not in self._channels:
            return  # the link dropped meanwhile: the reconnect subscribes it
        self._live.add(channel)
        await asyncio.sleep(self._rng.uniform(0, self.faults.subscribe_delay))

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)
        self._live.discard(channel)

    async def publish(self, envelope: Envelope) -> Published:
        published, event = self._store.publish(envelope)
        if event is not None:
            self._bus.send(event)
        return published

    async def snapshot(self, channel: str, history: int) -> Snapshot:
        self.reads.append((channel, history))
        delay = self.faults.read_delay
        before, after = self.faults.fixed_read or (
            self._rng.uniform(0, delay),
            self._rng.uniform(0, delay),
        )
        await asyncio.sleep(before)
        if not self._store.reachable:
            raise BrokerUnavailable("store unreachable")
        snap = self._store.snapshot(channel, history)
        await asyncio.sleep(after)
        return snap

    async def renew_epoch(self, channel: str, epoch: str) -> Snapshot:
        self.renewals.append((channel, epoch))
        await asyncio.sleep(self._rng.uniform(0, self.faults.read_delay))
        if not self._store.reachable:
            raise BrokerUnavailable("store unreachable")
        return self._store.renew_epoch(channel, epoch)

    async def close(self) -> None:
        self._up = False

    @property
    def healthy(self) -> bool:
        return self._up

    @property
    def status(self) -> str:
        return "connected" if self._up else "connecting"

    # -- the simulation's side ---------------------------------------------------------

    def connect(self) -> None:
        """(Re)establish the link: every wanted channel is received from now on."""
        if self._up:
            return
        self._up = True
        self._live = set(self._channels)
        if self._on_health is not None:
            self._on_health(True)

    def drop(self) -> None:
        """Lose the link: messages in flight and until the reconnect are lost."""
        if not self._up:
            return
        self._up = False
        self._generation += 1
        self._live.clear()
        if self._on_health is not None:
            self._on_health(False)

    def receive(self, event: Event) -> None:
        """Called by the bus for every published event."""
        if not self._up or event.channel not in self._live:
            return
        if self.faults.loss and self._rng.random() < self.faults.loss:
            return
        # one connection: messages keep their order, each a little later
        when = max(self._loop.time() + self._rng.uniform(0, 0.002), self._last_delivery)
        self._last_delivery = when
        self._loop.call_at(when, self._deliver, self._generation, event)

    def _deliver(self, generation: int, event: Event) -> None:
        if generation == self._generation and self._on_event is not None:
            self._on_event(event)


class SimBus:
    """The pub/sub fan-out between publishers and every node's link."""

    def __init__(self) -> None:
        self.links: list[SimBroker] = []

    def send(self, event: Event) -> None:
        for link in self.links:
            link.receive(event)
