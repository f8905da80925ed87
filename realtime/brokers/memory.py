"""The embedded ``memory://`` broker: one node, events arrive over ``POST /api/publish``."""

from __future__ import annotations

from realtime.brokers.base import EventCallback, HealthCallback, Snapshot
from realtime.brokers.memory_store import MemoryStore
from realtime.envelope import Envelope, Published


class MemoryBroker:
    """Delivers published events straight back to this process's node."""

    def __init__(self, history_size: int, history_ttl: float, meta_ttl: float = 0) -> None:
        self._store = MemoryStore(history_size, history_ttl, meta_ttl)
        self._on_event: EventCallback | None = None
        self._subscribed: set[str] = set()

    async def start(self, on_event: EventCallback, on_health: HealthCallback) -> None:
        """Remember the callback; the memory broker is always connected."""
        self._on_event = on_event
        on_health(True)

    async def subscribe(self, channel: str) -> None:
        """Deliver this channel's events to the node (idempotent)."""
        self._subscribed.add(channel)

    async def unsubscribe(self, channel: str) -> None:
        """Stop delivering this channel's events (idempotent)."""
        self._subscribed.discard(channel)

    async def publish(self, envelope: Envelope) -> Published:
        """Number and store the event, then hand it to the node if anyone listens."""
        published, event = self._store.publish(envelope)
        if event is not None and self._on_event is not None and event.channel in self._subscribed:
            self._on_event(event)
        return published

    async def snapshot(self, channel: str, history: int) -> Snapshot:
        """Read the channel from the in-process store."""
        return self._store.snapshot(channel, history)

    async def renew_epoch(self, channel: str, epoch: str) -> Snapshot:
        """Give the channel a new epoch if it still has ``epoch``."""
        return self._store.renew_epoch(channel, epoch)

    async def close(self) -> None:
        """Nothing to release."""
        self._on_event = None

    @property
    def healthy(self) -> bool:
        """Always true."""
        return True

    @property
    def status(self) -> str:
        """Always "connected"."""
        return "connected"
