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

import orjson

from realtime import messages
from realtime.brokers.base import EMPTY_EPOCH, Broker, Snapshot
from realtime.config import Settings
from realtime.envelope import Envelope, Event, Published
from realtime.errors import BrokerUnavailable
from realtime.hub import Hub, Subscriber
from realtime.messages import Since
from realtime.metrics import Metrics

logger = logging.getLogger(__name__)

MAX_QUEUED_WHILE_FILLING = 10_000
# a subscribe whose store read disagrees with what the node delivers (the store changed
# epoch or rolled back meanwhile) waits for the node to recover and reads again, this often
MAX_SUBSCRIBE_ATTEMPTS = 5
# recoveries reading the store at once: a broker reconnect re-checks every live channel, and
# thousands of reads at once would time out in the store's bounded pool
RECOVER_CONCURRENCY = 16


@dataclass(slots=True)
class _Track:
    """What the node knows about one channel it receives."""

    epoch: str | None = None  # None: not known yet; the next snapshot or event sets it
    offset: int = 0  # the last offset fanned out (0: nothing yet, in any epoch)
    busy: bool = True  # initialising or filling a gap: events queue up meanwhile
    queue: deque[Event] = field(default_factory=deque)
    release: Any = None  # the grace-period timer after the last subscriber left
    subscribed: asyncio.Future[None] | None = None  # done when the broker confirmed
    idle: asyncio.Future[None] | None = None  # done when the current recovery is over
    checking: bool = False  # a check for a store rollback is under way
    # the last event fanned out (None: not known, e.g. after a resync): a re-sent copy of
    # it must be the same event (publishers may re-encode it: compared as JSON on mismatch)
    last_json: bytes | None = None
    forked: bool = False  # an offset came back with other content: renew the epoch
    moved: bool = False  # has delivered or resynced: offset 0 no longer means "nothing yet"


@dataclass(slots=True)
class _Read:
    """One store read shared by every subscriber that joined before it started."""

    future: asyncio.Future[Snapshot]
    want: int
    starters: list[Callable[[], None]] = field(default_factory=list)
    seen: tuple[str | None, int] = (None, 0)  # the node's position when the read was sent


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
        self._reads: dict[str, _Read] = {}  # the next read of a channel, not started yet
        self._reading: set[str] = set()  # channels with a read under way
        self._recover_slots = asyncio.Semaphore(RECOVER_CONCURRENCY)
        # the bytes of events a `subscribed` reply may carry in `missed`
        self._missed_budget = settings.max_send_buffer // 2
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
        self,
        subscriber: Subscriber,
        channel: str,
        since: Since | None,
        on_read: Callable[[], None] | None = None,
    ) -> SubscribeResult:
        """Subscribe a local subscriber and build its ``subscribed`` reply.

        Call order: the subscriber is added to the hub at once and must hold back what the
        hub pushes for ``channel`` (events and resyncs, in order). ``on_read`` is called
        right before each store read is sent: what the subscriber held until then is
        covered by that read, so it drops it. After this returns, the caller sends
        ``reply`` and then applies the frames it still holds that are newer than
        ``offset`` (a held resync replaces everything held before it).

        On failure the subscriber stays in the hub: the caller calls ``unsubscribe`` if the
        subscription is still its current one (a newer subscribe of the same channel by
        the same subscriber may already use the hub entry).

        Raises:
            BrokerUnavailable: the store could not be read, or kept changing.
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
        # every subscriber waits for the broker subscription: a store read taken before it
        # could miss an event that pub/sub never brings
        assert track.subscribed is not None
        await asyncio.shield(track.subscribed)
        want = self.settings.history_size if since is not None else 0
        for _ in range(MAX_SUBSCRIBE_ATTEMPTS):
            read = self._join_read(channel, want, on_read)
            snap = await asyncio.shield(read.future)
            if self._tracks.get(channel) is not track:
                raise BrokerUnavailable(f"subscribe {channel}: released meanwhile")
            if self._agrees(channel, track, read.seen, snap):
                break
            await self._settled(track)
        else:
            raise BrokerUnavailable(f"subscribe {channel}: the store kept changing")
        reply, offset = self._subscribed_reply(channel, snap, since)
        return SubscribeResult(reply, offset)

    def _agrees(
        self, channel: str, track: _Track, seen: tuple[str | None, int], snap: Snapshot
    ) -> bool:
        """Whether a subscriber's snapshot fits what the node delivers to the hub.

        When it does not (the store changed epoch or rolled back, and the node has not
        caught up yet) the node starts a recovery and the subscriber reads again after it:
        the events it holds would be numbered in another timeline than its reply.
        """
        if track.epoch is None:
            # the first reading of this channel: the baseline for gap detection
            track.epoch, track.offset = snap.epoch, snap.offset
            self._drain(channel, track)
            return True
        if snap.epoch == track.epoch:
            if seen[0] == snap.epoch and snap.offset < seen[1]:
                self._start_recover(channel, track)  # below what we had seen: rolled back
                return False
            return True
        if track.offset == 0 and not track.moved:
            # nothing delivered yet: the reply may continue in any epoch. But a store ahead
            # of us means this node missed the channel's first events (or they are on the
            # way): catch up now, or a later epoch would look like this channel's first
            # one while the new subscriber is already past it
            if snap.offset > 0 and snap.epoch != EMPTY_EPOCH:
                self._start_recover(channel, track)
            return True
        self._start_recover(channel, track)
        return False

    async def _settled(self, track: _Track) -> None:
        if not track.busy:
            return
        if track.idle is None:
            track.idle = self._loop.create_future()
        await asyncio.shield(track.idle)

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

    def _join_read(self, channel: str, want: int, on_read: Callable[[], None] | None) -> _Read:
        """Join the channel's next store read (one read at a time per channel).

        A join storm (a contest page opened by thousands at once) costs one store read per
        channel at a time instead of one per subscriber. Joining a read already sent would
        be wrong: events between its reply and the join would be missed; so joiners wait
        for the next one, which starts when the current one is answered.
        """
        read = self._reads.get(channel)
        if read is None:
            read = self._reads[channel] = _Read(self._loop.create_future(), want)
            if channel not in self._reading:
                self._loop.call_soon(self._start_read, channel)
        read.want = max(read.want, want)
        if on_read is not None:
            read.starters.append(on_read)
        return read

    def _start_read(self, channel: str) -> None:
        read = self._reads.pop(channel, None)
        if read is None or channel in self._reading:
            if read is not None:
                self._reads[channel] = read
            return
        self._reading.add(channel)
        track = self._tracks.get(channel)
        read.seen = (track.epoch, track.offset) if track is not None else (None, 0)
        for started in read.starters:
            started()

        async def run() -> None:
            try:
                read.future.set_result(await self.broker.snapshot(channel, read.want))
            except Exception as exc:
                read.future.set_exception(exc)
                read.future.exception()
            finally:
                self._reading.discard(channel)
                if channel in self._reads:
                    self._start_read(channel)

        self._spawn(run())

    def _subscribed_reply(
        self, channel: str, snap: Snapshot, since: Since | None
    ) -> tuple[bytes, int]:
        if since is None:
            return messages.subscribed(
                channel, snap.epoch, snap.offset, snap.state, None, False
            ), snap.offset
        missed = recover(snap, since)
        if missed is not None and sum(len(e.json) for e in missed) > self._missed_budget:
            missed = None  # a reply that size would be most of a send buffer: resync instead
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
        self._wake(track)
        self._update_gauges()
        self._spawn(self.broker.unsubscribe(channel))

    def _update_gauges(self) -> None:
        self.metrics.subscriptions.set(self.hub.subscription_count)
        self.metrics.channels.set(self.hub.channel_count)
        self.metrics.tracked_channels.set(len(self._tracks))
        stored = getattr(self.broker, "stored_channels", None)  # brokers with a local store
        if isinstance(stored, int):
            self.metrics.stored_channels.set(stored)

    @property
    def tracked_channels(self) -> int:
        """Channels this node receives (with subscribers, or in their grace period)."""
        return len(self._tracks)

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
        if track.offset == 0 and event.epoch != track.epoch and event.offset == 1:
            self._epoch_started(channel, track, event.epoch)
        if event.epoch != track.epoch or event.offset > track.offset + 1:
            # a gap or a lost store: hold this event and recover before going on
            track.queue.appendleft(event)
            self._start_recover(channel, track)
            return
        if event.offset <= track.offset:
            # a transport re-send (a publisher's retry), or the store came back older under
            # the same epoch and reuses offsets. A copy of the last event must be the same
            # bytes; otherwise only the store can tell
            if event.offset == track.offset and _other_event(track.last_json, event.json):
                track.forked = True
                self._start_recover(channel, track)
            elif not track.checking:
                track.checking = True
                self._spawn(self._check_rollback(channel, track))
            return
        track.offset = event.offset
        track.last_json = event.json
        track.moved = True
        self.hub.publish(event)

    async def _check_rollback(self, channel: str, track: _Track) -> None:
        try:
            snap = await self.broker.snapshot(channel, 0)
        except BrokerUnavailable:
            return  # the next event or reconnect checks again
        finally:
            track.checking = False
        if self._tracks.get(channel) is not track or track.busy:
            return
        if snap.epoch == track.epoch and snap.offset < track.offset:
            self._start_recover(channel, track)

    def _start_recover(self, channel: str, track: _Track) -> None:
        if track.busy and track.epoch is not None:
            return  # a recovery is already under way and re-reads the store
        track.busy = True
        self._spawn(self._recover(channel, track))

    def _drain(self, channel: str, track: _Track) -> None:
        track.busy = False
        while track.queue and not track.busy:
            self._accept(channel, track, track.queue.popleft())
        if not track.busy:
            self._wake(track)

    @staticmethod
    def _wake(track: _Track) -> None:
        idle, track.idle = track.idle, None
        if idle is not None and not idle.done():
            idle.set_result(None)

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
                    self._start_recover(channel, track)
        self._was_healthy = healthy

    async def _read_for_recovery(self, channel: str, track: _Track) -> Snapshot | None:
        """Read offsets first and history only where the channel moved; None: released."""
        delay = 0.2
        while True:
            if self._tracks.get(channel) is not track:
                return None
            try:
                async with self._recover_slots:
                    snap = await self.broker.snapshot(channel, 0)
                    if snap.offset > track.offset and (
                        snap.epoch == track.epoch or track.offset == 0
                    ):
                        snap = await self.broker.snapshot(channel, self.settings.history_size)
                    return snap
            except BrokerUnavailable as exc:
                logger.warning("cannot read history of %s yet: %s", channel, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _recover(self, channel: str, track: _Track) -> None:
        """Bring a channel up to date from the store, then release queued events."""
        snap = await self._read_for_recovery(channel, track)
        if snap is None:
            self._wake(track)
            return
        before = track.epoch
        forked, track.forked = track.forked, False
        if snap.epoch == track.epoch and (snap.offset < track.offset or forked):
            # the store came back older under the same epoch (an old RDB/AOF, a lagging
            # replica promoted): its offsets will be reused, so it gets a new epoch
            logger.warning(
                "channel %s: the store went back from offset %d to %d; new epoch",
                channel,
                track.offset,
                snap.offset,
            )
            self.metrics.store_rollbacks.inc()
            try:
                snap = await self.broker.renew_epoch(channel, snap.epoch)
            except BrokerUnavailable as exc:
                logger.warning("cannot renew the epoch of %s yet: %s", channel, exc)
                await asyncio.sleep(0.5)
                self._spawn(self._recover(channel, track))
                return
            if self._tracks.get(channel) is not track:
                self._wake(track)
                return
            self._resync(channel, track, snap)
        elif snap.epoch == track.epoch or track.offset == 0:
            newer = [e for e in snap.history if e.offset > track.offset]
            if snap.offset == track.offset:
                pass  # nothing missed (at offset 0 the epoch starts with the next event)
            elif consecutive(newer, track.offset, snap.offset):
                if snap.epoch != track.epoch:
                    self._epoch_started(channel, track, snap.epoch)
                self.metrics.gaps_filled.inc()
                for event in newer:
                    track.offset = event.offset
                    track.last_json = event.json
                    self.hub.publish(event)
                track.moved = True
            else:
                self._resync(channel, track, snap)
        else:
            self._resync(channel, track, snap)
        # queued events of a lost epoch are dropped; those not newer than the store are
        # dropped by _accept. At offset 0 (nothing delivered: the channel's first events, or
        # a store that came back empty) events of an epoch the read did not see yet are kept:
        # they were published after it, and _accept starts their epoch or recovers again.
        if track.offset > 0:
            track.queue = deque(e for e in track.queue if e.epoch == track.epoch)
        elif before != track.epoch:
            track.queue = deque(e for e in track.queue if e.epoch != before)
        self._drain(channel, track)

    def _epoch_started(self, channel: str, track: _Track, epoch: str) -> None:
        """The channel's first event starts ``epoch``: subscribers still at offset 0 (their
        reply said the empty epoch) learn it, so that they can recover with ``since`` later."""
        track.epoch = epoch
        message = messages.subscribed(channel, epoch, 0, None, (), True)
        self.hub.epoch_started(channel, message)

    def _resync(self, channel: str, track: _Track, snap: Snapshot) -> None:
        logger.warning(
            "channel %s: history cannot cover the gap after offset %d; subscribers resync",
            channel,
            track.offset,
        )
        self.metrics.resyncs.inc()
        track.epoch, track.offset, track.last_json = snap.epoch, snap.offset, None
        track.moved = True
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


def _other_event(last: bytes | None, copy: bytes) -> bool:
    """True when ``copy`` is provably not the event ``last`` (same offset, other content)."""
    if last is None or copy == last:
        return False
    try:
        return bool(orjson.loads(copy) != orjson.loads(last))
    except orjson.JSONDecodeError:
        return True


def consecutive(events: list[Event], after: int, last: int) -> bool:
    """True when ``events`` are exactly the offsets ``after + 1 .. last``, in order.

    History may have holes (a publisher that keeps no history for some events), so each
    entry's own offset counts, never its position.
    """
    expected = after + 1
    for event in events:
        if event.offset != expected:
            return False
        expected += 1
    return expected == last + 1


def recover(snap: Snapshot, since: Since) -> list[Event] | None:
    """Return the events a client at ``since`` missed, or None when they are not all kept."""
    if since.offset == snap.offset and since.epoch == snap.epoch:
        return []
    if since.epoch != snap.epoch and since.offset != 0:
        return None
    if since.offset > snap.offset:
        return None
    missed = [e for e in snap.history if e.offset > since.offset]
    if not consecutive(missed, since.offset, snap.offset):
        return None
    return missed
