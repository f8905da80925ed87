"""The broker interface: how events get from publishers to every server node.

A broker does two jobs for the node: transport (subscribe to a channel's events, publish an
envelope) and the channel store (offsets, epoch, history, state). Implementations:
``memory`` (one process), ``redis`` (pub/sub + keys, one atomic script per publish) and
``rabbitmq`` (AMQP topic exchange; store in Redis or in process memory).

Contracts, for every implementation:

* ``on_event`` is called on the event loop, once per received event, in the order the
  broker delivered them. Offsets within a channel may skip (a lost pub/sub message); the
  node detects that and calls ``fetch_range``.
* ``subscribe``/``unsubscribe`` are idempotent and are called by the node only for a
  channel's first local subscriber / after its last one left.
* ``snapshot`` is consistent: ``offset`` is the latest offset, ``state`` the latest state
  event, ``history`` the newest events ending at ``offset`` (oldest first).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from realtime.envelope import Envelope, Event, Published

# The epoch of a channel nobody has published on yet. Reading such a channel creates no
# state (anonymous subscribes to made-up names must not grow the store); its first event
# starts the real epoch, and a client at {EMPTY_EPOCH, 0} continues into it.
EMPTY_EPOCH = "0"

EventCallback = Callable[[Event], None]
HealthCallback = Callable[[bool], None]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A channel's store as seen at one instant.

    ``history`` holds up to the requested number of newest events still retained (those
    older than the history TTL are already left out), oldest first, ending at ``offset``.
    """

    epoch: str
    offset: int
    state: bytes | None
    history: list[Event]


class Broker(Protocol):
    """What the node needs from a broker (see the module docstring for contracts)."""

    async def start(self, on_event: EventCallback, on_health: HealthCallback) -> None:
        """Begin connecting in the background; returns at once even if the broker is down."""

    async def subscribe(self, channel: str) -> None:
        """Receive this channel's events from now on (idempotent)."""

    async def unsubscribe(self, channel: str) -> None:
        """Stop receiving this channel's events (idempotent)."""

    async def publish(self, envelope: Envelope) -> Published:
        """Assign the next offset, store, and deliver to every node.

        Raises:
            BrokerUnavailable: the broker or store cannot be reached.
        """

    async def snapshot(self, channel: str, history: int) -> Snapshot:
        """Read offset, epoch, state and up to ``history`` newest events.

        Raises:
            BrokerUnavailable: the store cannot be reached.
        """

    async def renew_epoch(self, channel: str, epoch: str) -> Snapshot:
        """Give the channel a new epoch if it is still ``epoch``; return it (no history).

        The node calls this when the store went back to an older offset under the same
        epoch (a restart from an old RDB/AOF, a lagging replica promoted): its offsets would
        be reused, and every client would drop the new events as already seen.

        Raises:
            BrokerUnavailable: the store cannot be reached.
        """

    async def close(self) -> None:
        """Disconnect and stop background tasks."""

    @property
    def healthy(self) -> bool:
        """True while connected (publishes and subscriptions work)."""

    @property
    def status(self) -> str:
        """A short human-readable state for /healthz ("connected", "connecting: ...")."""
