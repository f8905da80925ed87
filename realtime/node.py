"""The node: owns the hub and the broker; subscribe, unsubscribe, publish, recover.

Per channel with local subscribers the node tracks the epoch and the last offset it fanned
out. Events must arrive from the broker as offset+1; a skip (a pub/sub message lost while a
link was down) is filled from history before anything newer is delivered, and when history
cannot cover it every subscriber is told to resync from state. A broker that comes back
after an outage makes the node check every channel the same way. No gap passes silently.

Event loop only. No Tornado and no broker client here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from realtime import messages
from realtime.brokers.base import Broker, Snapshot
from realtime.config import Settings
from realtime.envelope import Envelope, Event, Published
from realtime.errors import BrokerUnavailable
from realtime.hub import Hub, Subscriber
from realtime.messages import Since
from realtime.metrics import Metrics

logger = logging.getLogger(__name__)

MAX_QUEUED_WHILE_FILLING = 10_000


@dataclass(slots=True)
class _Track:
    """What the node knows about one channel it receives."""

    epoch: str | None = None  # None: not known yet; the next snapshot or event sets it
    offset: int = 0
    busy: bool = True  # initialising or filling a gap: events queue up meanwhile
    queue: deque[Event] = field(default_factory=deque)
    release: Any = None  # the grace-period timer after the last subscriber left
    subscribed: asyncio.Future[None] | None = None  # done when the broker confirmed


@dataclass(frozen=True, slots=True)
class SubscribeResult:
    """The ``subscribed`` reply and the offset the subscriber continues after."""

    reply: bytes
    offset: int


class Node:
    """Glue between local subscribers (hub) and every other node (broker)."""

    def __init__(self, settings: Settings, broker: Broker, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.broker = broker
        self.metrics = metrics or Metrics()
        self._loop = asyncio.get_running_loop()
        self.hub = Hub(
            settings.namespaces,
            schedule=self._loop.call_later,
            clock=self._loop.time,
            on_fanout=self._on_fanout,
        )
        self._tracks: dict[str, _Track] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._batches: dict[tuple[str, int], asyncio.Future[Snapshot]] = {}
        self._was_healthy = False
        self._ever_healthy = False
        self._healthy_event = asyncio.Event()
        # server-internal channels (realtime.admin): their events go to a callback, not the hub
        self._taps: dict[str, Callable[[Event], None]] = {}

    async def start(self) -> None:
        """Start the broker (it connects in the background)."""
        await self.broker.start(self._on_event, self._on_health)

    async def close(self) -> None:
        """Cancel background work and close the broker."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.broker.close()

    @property
    def healthy(self) -> bool:
        """True while the broker is connected."""
        return self.broker.healthy

    # -- publishing -----------------------------------------------------------------

    async def publish(self, envelope: Envelope) -> Published:
        """Publish through the broker (offset assigned, stored, sent to every node).

        Raises:
            BrokerUnavailable: the broker cannot take it now.
        """
        published = await self.broker.publish(envelope)
        self.metrics.published.inc()
        return published

    # -- subscriptions --------------------------------------------------------------

    async def subscribe(
        self, subscriber: Subscriber, channel: str, since: Since | None
    ) -> SubscribeResult:
        """Subscribe a local subscriber and build its ``subscribed`` reply.

        The subscriber must hold back events for ``channel`` (it is added to the hub
        first so nothing published meanwhile is lost) until the caller has sent
        ``reply``; then it continues after ``offset``.

        Raises:
            BrokerUnavailable: the store could not be read; the subscriber was removed.
        """
        track = self._tracks.get(channel)
        if track is None:
            track = self._tracks[channel] = _Track(subscribed=self._loop.create_future())
            self._spawn(self._subscribe_broker(channel, track))
        elif track.release is not None:
            track.release.cancel()
            track.release = None
        self.hub.add(channel, subscriber)
        self._update_gauges()
        try:
            # every subscriber waits for the broker subscription: a store read taken before
            # it could miss an event that pub/sub never brings
            assert track.subscribed is not None
            await asyncio.shield(track.subscribed)
            want = self.settings.history_size if since is not None else 0
            snap = await self._snapshot(channel, want)
        except BaseException:
            self.unsubscribe(subscriber, channel)
            raise
        if track.epoch is None:
            # first reading of this channel: it is the baseline for gap detection
            track.epoch, track.offset = snap.epoch, snap.offset
            self._drain(channel, track)
        reply, offset = self._subscribed_reply(channel, snap, since)
        return SubscribeResult(reply, offset)

    async def _subscribe_broker(self, channel: str, track: _Track) -> None:
        try:
            await self.broker.subscribe(channel)
        except Exception as exc:
            if self._tracks.get(channel) is track:
                del self._tracks[channel]
            assert track.subscribed is not None
            track.subscribed.set_exception(BrokerUnavailable(f"subscribe {channel}: {exc}"))
            track.subscribed.exception()  # retrieved: waiting subscribers get it via shield
            return
        assert track.subscribed is not None
        track.subscribed.set_result(None)

    def _snapshot(self, channel: str, want: int) -> asyncio.Future[Snapshot]:
        """Read the store once for every subscriber that joined before the read starts.

        A join storm (a contest page opened by hundreds at once) costs one store read per
        channel per loop tick instead of one per subscriber. Joining an already started
        read would be wrong: events between its reply and the join would be missed.
        """
        key = (channel, want)
        batch = self._batches.get(key)
        if batch is None:
            batch = self._batches[key] = self._loop.create_future()
            self._loop.call_soon(self._start_snapshot, key, batch)
        return batch

    def _start_snapshot(self, key: tuple[str, int], batch: asyncio.Future[Snapshot]) -> None:
        if self._batches.get(key) is batch:
            del self._batches[key]  # later joiners start a new read

        async def read() -> None:
            try:
                batch.set_result(await self.broker.snapshot(*key))
            except Exception as exc:
                batch.set_exception(exc)
                batch.exception()

        self._spawn(read())

    def _subscribed_reply(
        self, channel: str, snap: Snapshot, since: Since | None
    ) -> tuple[bytes, int]:
        if since is None:
            return messages.subscribed(
                channel, snap.epoch, snap.offset, snap.state, None, False
            ), snap.offset
        missed = recover(snap, since)
        if missed is None:
            return messages.subscribed(
                channel, snap.epoch, snap.offset, snap.state, (), False
            ), snap.offset
        return messages.subscribed(
            channel, snap.epoch, snap.offset, snap.state, [e.json for e in missed], True
        ), snap.offset

    def unsubscribe(self, subscriber: Subscriber, channel: str) -> None:
        """Remove a local subscriber; the broker subscription ends after a grace period."""
        if self.hub.remove(channel, subscriber):
            track = self._tracks.get(channel)
            if track is not None and track.release is None:
                # grace period: a page reload must not cost UNSUBSCRIBE + SUBSCRIBE
                track.release = self._loop.call_later(
                    self.settings.unsubscribe_grace, self._release, channel
                )
        self._update_gauges()

    def _release(self, channel: str) -> None:
        track = self._tracks.get(channel)
        if track is None or self.hub.has_subscribers(channel):
            return
        del self._tracks[channel]
        self._spawn(self.broker.unsubscribe(channel))

    def _update_gauges(self) -> None:
        self.metrics.subscriptions.set(self.hub.subscription_count)
        self.metrics.channels.set(self.hub.channel_count)

    def listen(self, channel: str, callback: Callable[[Event], None]) -> None:
        """Deliver every event of a server-internal channel to ``callback`` (event loop only).

        For control messages between workers and nodes: no hub, no offsets check and no
        recovery (at most once per node; an event published while a link is down is lost),
        not counted in the metrics. Clients cannot subscribe (no such namespace).
        """
        self._taps[channel] = callback
        self._spawn(self.broker.subscribe(channel))

    # -- events from the broker -----------------------------------------------------

    def _on_event(self, event: Event) -> None:
        if self._taps and event.channel in self._taps:
            self._taps[event.channel](event)
            return
        self.metrics.events_in.inc()
        track = self._tracks.get(event.channel)
        if track is None:
            return
        if track.busy:
            if len(track.queue) < MAX_QUEUED_WHILE_FILLING:
                track.queue.append(event)
            return
        self._accept(event.channel, track, event)

    def _accept(self, channel: str, track: _Track, event: Event) -> None:
        if track.epoch is None:
            track.epoch, track.offset = event.epoch, event.offset - 1
        if event.epoch != track.epoch or event.offset > track.offset + 1:
            # a gap or a lost store: hold this event and recover before going on
            track.busy = True
            track.queue.appendleft(event)
            self._spawn(self._recover(channel, track))
            return
        if event.offset <= track.offset:
            return  # already delivered (e.g. filled from history)
        track.offset = event.offset
        self.hub.publish(event)

    def _drain(self, channel: str, track: _Track) -> None:
        track.busy = False
        while track.queue and not track.busy:
            self._accept(channel, track, track.queue.popleft())

    async def wait_healthy(self, within: float) -> bool:
        """Wait up to ``within`` seconds for the broker; return whether it is connected."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._healthy_event.wait(), within)
        return self.healthy

    def _on_health(self, healthy: bool) -> None:
        self.metrics.broker_up.set(1 if healthy else 0)
        if healthy:
            self._healthy_event.set()
        else:
            self._healthy_event.clear()
        if healthy and not self._was_healthy:
            if self._ever_healthy:
                self.metrics.broker_reconnects.inc()
            self._ever_healthy = True
            # back after an outage: events published meanwhile never reached us
            for channel, track in self._tracks.items():
                if not track.busy:
                    track.busy = True
                    self._spawn(self._recover(channel, track))
        self._was_healthy = healthy

    async def _recover(self, channel: str, track: _Track) -> None:
        """Bring a channel up to date from the store, then release queued events."""
        delay = 0.2
        while True:
            if self._tracks.get(channel) is not track:
                return
            try:
                snap = await self.broker.snapshot(channel, self.settings.history_size)
                break
            except BrokerUnavailable as exc:
                logger.warning("cannot read history of %s yet: %s", channel, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        if snap.epoch == track.epoch:
            newer = [e for e in snap.history if e.offset > track.offset]
            complete = (
                (newer[0].offset == track.offset + 1) if newer else (snap.offset <= track.offset)
            )
            if not complete:
                self._resync(channel, track, snap)
            elif newer:
                self.metrics.gaps_filled.inc()
                for event in newer:
                    track.offset = event.offset
                    self.hub.publish(event)
        else:
            self._resync(channel, track, snap)
        # queued events from a lost epoch, or not newer than the store, are dropped by _accept
        track.queue = deque(e for e in track.queue if e.epoch == track.epoch)
        self._drain(channel, track)

    def _resync(self, channel: str, track: _Track, snap: Snapshot) -> None:
        logger.warning(
            "channel %s: history cannot cover the gap after offset %d; subscribers resync",
            channel,
            track.offset,
        )
        self.metrics.resyncs.inc()
        track.epoch, track.offset = snap.epoch, snap.offset
        message = messages.subscribed(channel, snap.epoch, snap.offset, snap.state, (), False)
        self.hub.resync(channel, snap.offset, message)

    def _on_fanout(self, event: Event, count: int) -> None:
        if event.published:
            self.metrics.latency.observe(max(0.0, time.time() - event.published))

    def _spawn(self, coro: Any) -> None:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("node task failed", exc_info=task.exception())


def recover(snap: Snapshot, since: Since) -> list[Event] | None:
    """Return the events a client at ``since`` missed, or None when they are not all kept."""
    if since.offset == snap.offset and since.epoch == snap.epoch:
        return []
    if since.epoch != snap.epoch and since.offset != 0:
        return None
    if since.offset > snap.offset:
        return None
    missed = [e for e in snap.history if e.offset > since.offset]
    if len(missed) != snap.offset - since.offset:
        return None
    return missed
