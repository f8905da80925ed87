"""An in-process channel store: offsets, epoch, history and state (no I/O).

Used by the ``memory://`` broker and by the AMQP broker when no Redis store is configured.
Its epoch is per process: a restarted node has new epochs, so clients that come back with
``since`` get ``recovered: false`` and resync from state (which is also gone) — the
honest answer for a store that keeps nothing across restarts.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from realtime.brokers.base import EMPTY_EPOCH, Snapshot
from realtime.envelope import Envelope, Event, Published, encode_event

MAX_DEDUP_IDS = 100_000
SWEEP_EVERY = 1024  # operations between sweeps for expired channels


@dataclass(slots=True)
class _Channel:
    epoch: str
    offset: int = 0
    state: bytes | None = None
    state_version: int | None = None
    history: deque[tuple[float, Event]] = field(default_factory=deque)
    last_used: float = 0.0


class MemoryStore:
    """Channel store kept in this process; every method is synchronous and O(1) amortised."""

    def __init__(
        self,
        history_size: int,
        history_ttl: float,
        meta_ttl: float = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._history_size = history_size
        self._history_ttl = history_ttl
        self._meta_ttl = meta_ttl
        self._clock = clock
        self._channels: dict[str, _Channel] = {}
        self._dedup: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._ops = 0

    def _find(self, name: str) -> _Channel | None:
        ch = self._channels.get(name)
        now = self._clock()
        if ch is not None and self._expired(ch, now):
            del self._channels[name]  # expired like Redis meta: a new epoch tells clients
            ch = None
        self._ops += 1
        if self._ops >= SWEEP_EVERY:
            self._ops = 0
            self._sweep(now)
        return ch

    def _expired(self, ch: _Channel, now: float) -> bool:
        return bool(self._meta_ttl) and now - ch.last_used > self._meta_ttl

    def _sweep(self, now: float) -> None:
        """Free channels idle for longer than ``meta_ttl`` (amortised over operations)."""
        if not self._meta_ttl:
            return
        for name in [n for n, ch in self._channels.items() if self._expired(ch, now)]:
            del self._channels[name]

    @property
    def channel_count(self) -> int:
        """Channels with stored state (published on, not expired)."""
        return len(self._channels)

    def _channel(self, name: str) -> _Channel:
        ch = self._find(name)
        if ch is None:
            ch = self._channels[name] = _Channel(epoch=secrets.token_hex(4))
        ch.last_used = self._clock()
        return ch

    def publish(self, envelope: Envelope) -> tuple[Published, Event | None]:
        """Assign the next offset and store; return where it landed and the new event.

        The event is None when ``envelope.id`` was already published (a duplicate) or when
        it is a state whose ``version`` is not above the stored state's (an older board).
        """
        ch = self._channel(envelope.channel)
        if envelope.id is not None:
            seen = self._dedup.get((envelope.channel, envelope.id))
            if seen is not None:
                return Published(envelope.channel, ch.epoch, seen, duplicate=True), None
        if envelope.state and envelope.version is not None:
            if ch.state_version is not None and envelope.version <= ch.state_version:
                return Published(envelope.channel, ch.epoch, ch.offset, duplicate=True), None
            ch.state_version = envelope.version
        ch.offset += 1
        data = encode_event(envelope.channel, ch.offset, envelope.type, envelope.data_json)
        event = Event(envelope.channel, ch.epoch, ch.offset, data, time.time())
        if self._history_size > 0:
            ch.history.append((self._clock(), event))
            while len(ch.history) > self._history_size:
                ch.history.popleft()
        if envelope.state:
            ch.state = data
        if envelope.id is not None:
            self._dedup[(envelope.channel, envelope.id)] = ch.offset
            while len(self._dedup) > MAX_DEDUP_IDS:
                self._dedup.popitem(last=False)
        return Published(envelope.channel, ch.epoch, ch.offset), event

    def snapshot(self, channel: str, history: int) -> Snapshot:
        """Return the channel's epoch, offset, state and up to ``history`` newest events."""
        ch = self._find(channel)
        if ch is None:
            # nobody published here: reading creates nothing (see EMPTY_EPOCH)
            return Snapshot(epoch=EMPTY_EPOCH, offset=0, state=None, history=[])
        horizon = self._clock() - self._history_ttl
        events: list[Event] = []
        if history > 0:
            for stamp, event in reversed(ch.history):
                if len(events) >= history or stamp < horizon:
                    break
                events.append(event)
            events.reverse()
        return Snapshot(epoch=ch.epoch, offset=ch.offset, state=ch.state, history=events)

    def renew_epoch(self, channel: str, epoch: str) -> Snapshot:
        """Give the channel a new epoch if it still has ``epoch``; return the result."""
        ch = self._find(channel)
        if ch is not None and ch.epoch == epoch:
            ch.epoch = secrets.token_hex(4)
            ch.history.clear()  # numbered in the old epoch
        return self.snapshot(channel, 0)
