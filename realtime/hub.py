"""Channel -> local subscribers, and the non-blocking fan-out.

The hub knows no broker and no Tornado. An event's frame is built once and handed to each
subscriber's ``push``, which only queues bytes (it never awaits a client). Channels whose
namespace sets ``coalesce_ms`` send at most one frame per window: the latest event wins, or
with ``merge_max`` the window's events (up to that many, the newest) go out together.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from realtime.config import Namespace
from realtime.envelope import Event
from realtime.frames import text_frame


class Subscriber(Protocol):
    """A local recipient of channel events (a WebSocket connection)."""

    def push(self, channel: str, offset: int, frame: bytes, coalesced: bool) -> None:
        """Queue an event frame; drop it if ``offset`` was already delivered."""

    def push_resync(self, channel: str, offset: int, frame: bytes) -> None:
        """Queue an unasked ``subscribed`` (recovered false) and continue from ``offset``."""

    def push_epoch(self, channel: str, frame: bytes) -> None:
        """Queue an unasked ``subscribed`` naming the epoch the channel's first event starts,
        if this subscriber is still at offset 0 (it subscribed before any event)."""


Schedule = Callable[[float, Callable[[], None]], Any]
Clock = Callable[[], float]


@dataclass(slots=True)
class _Coalesce:
    window: float
    last_sent: float = float("-inf")
    pending: Event | None = None
    timer: Any = None
    merge_max: int = 0  # > 0: keep the window's events, not only the latest
    merged: list[Event] | None = None


class Hub:
    """Local subscriptions and fan-out; event loop only."""

    def __init__(
        self,
        namespaces: Mapping[str, Namespace],
        schedule: Schedule,
        clock: Clock,
        on_fanout: Callable[[Event, int], None] | None = None,
    ) -> None:
        self._namespaces = namespaces
        self._schedule = schedule
        self._clock = clock
        self._on_fanout = on_fanout
        self._channels: dict[str, dict[int, Subscriber]] = {}
        self._coalesce: dict[str, _Coalesce] = {}
        self.subscription_count = 0

    def add(self, channel: str, subscriber: Subscriber) -> bool:
        """Add a subscriber; return True when it is the channel's first."""
        subs = self._channels.get(channel)
        first = subs is None
        if subs is None:
            subs = self._channels[channel] = {}
            namespace = self._namespaces.get(channel.split(":", 1)[0])
            if namespace is not None and namespace.coalesce_ms > 0:
                self._coalesce[channel] = _Coalesce(
                    window=namespace.coalesce_ms / 1000.0, merge_max=namespace.merge_max
                )
        if id(subscriber) not in subs:
            subs[id(subscriber)] = subscriber
            self.subscription_count += 1
        return first

    def remove(self, channel: str, subscriber: Subscriber) -> bool:
        """Remove a subscriber; return True when the channel has none left."""
        subs = self._channels.get(channel)
        if subs is None:
            return False
        if subs.pop(id(subscriber), None) is not None:
            self.subscription_count -= 1
        if subs:
            return False
        del self._channels[channel]
        co = self._coalesce.pop(channel, None)
        if co is not None and co.timer is not None:
            co.timer.cancel()
        return True

    def has_subscribers(self, channel: str) -> bool:
        """True when the channel has at least one local subscriber."""
        return channel in self._channels

    @property
    def channel_count(self) -> int:
        """Channels with local subscribers."""
        return len(self._channels)

    def counts(self, keep: Callable[[str], bool]) -> dict[str, int]:
        """Return the local subscriber count of each channel that ``keep`` accepts."""
        return {ch: len(subs) for ch, subs in self._channels.items() if keep(ch)}

    def subscribers(self, channel: str) -> list[Subscriber]:
        """Return a snapshot list of the channel's subscribers."""
        return list(self._channels.get(channel, {}).values())

    def publish(self, event: Event) -> None:
        """Fan an event out to the channel's subscribers (coalescing where configured)."""
        co = self._coalesce.get(event.channel)
        if co is None:
            self._fanout(event, False)
            return
        if co.timer is not None:
            co.pending = event  # a send is already scheduled: it will carry the latest
            if co.merge_max:
                self._merge(co, event)
            return
        now = self._clock()
        due = co.last_sent + co.window
        if now >= due:
            co.last_sent = now
            self._fanout(event, True)
        else:
            co.pending = event
            if co.merge_max:
                self._merge(co, event)
            co.timer = self._schedule(due - now, lambda: self._flush_coalesced(event.channel))

    def _merge(self, co: _Coalesce, event: Event) -> None:
        if co.merged is None:
            co.merged = []
        co.merged.append(event)
        if len(co.merged) > co.merge_max:
            del co.merged[0]  # capped: the client sees the offset gap and re-reads

    def _flush_coalesced(self, channel: str) -> None:
        co = self._coalesce.get(channel)
        if co is None or co.pending is None:
            return
        event, co.pending, co.timer = co.pending, None, None
        co.last_sent = self._clock()
        merged, co.merged = co.merged, None
        if merged and len(merged) > 1:
            self._fanout_merged(merged)
        else:
            self._fanout(event, True)

    def _fanout_merged(self, events: list[Event]) -> None:
        """Send a window's events as one frame of newline-separated events.

        The frame goes with its first offset: a subscriber that has it already (it joined
        within the window) skips the whole frame rather than get duplicates, and sees the
        gap in the offsets.
        """
        subs = self._channels.get(events[0].channel)
        if not subs:
            return
        frame = text_frame(b"\n".join(e.json for e in events))
        channel, offset = events[0].channel, events[0].offset
        for sub in list(subs.values()):
            sub.push(channel, offset, frame, True)
        if self._on_fanout is not None:
            for event in events:
                self._on_fanout(event, len(subs))

    def _fanout(self, event: Event, coalesced: bool) -> None:
        subs = self._channels.get(event.channel)
        if not subs:
            return
        frame = text_frame(event.json)
        channel, offset = event.channel, event.offset
        for sub in list(subs.values()):
            sub.push(channel, offset, frame, coalesced)
        if self._on_fanout is not None:
            self._on_fanout(event, len(subs))

    def resync(self, channel: str, offset: int, message: bytes) -> None:
        """Tell every subscriber of a channel to resync (history could not cover a gap).

        A coalesced event still waiting for its window belongs to the old position (often
        an old epoch): sent after the resync it would move every subscriber back.
        """
        co = self._coalesce.get(channel)
        if co is not None:
            co.pending = None
            co.merged = None
            if co.timer is not None:
                co.timer.cancel()
                co.timer = None
        frame = text_frame(message)
        for sub in self.subscribers(channel):
            sub.push_resync(channel, offset, frame)

    def epoch_started(self, channel: str, message: bytes) -> None:
        """Tell subscribers still at offset 0 the epoch the channel's first event starts."""
        frame = text_frame(message)
        for sub in self.subscribers(channel):
            sub.push_epoch(channel, frame)
