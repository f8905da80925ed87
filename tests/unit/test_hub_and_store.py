"""Hub fan-out and coalescing, history recovery, the in-memory store, frames."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest

from realtime.brokers.base import Snapshot
from realtime.brokers.memory_store import MemoryStore
from realtime.config import default_namespaces
from realtime.envelope import Envelope, Event, envelopes_from_body
from realtime.errors import PublishError
from realtime.frames import text_frame
from realtime.hub import Hub
from realtime.messages import Since
from realtime.node import recover


class Recorder:
    def __init__(self) -> None:
        self.frames: list[tuple[str, int, bytes, bool]] = []

    def push(self, channel: str, offset: int, frame: bytes, coalesced: bool) -> None:
        self.frames.append((channel, offset, frame, coalesced))

    def push_resync(self, channel: str, offset: int, frame: bytes) -> None:
        self.frames.append((channel, offset, frame, False))

    def push_epoch(self, channel: str, frame: bytes) -> None:
        self.frames.append((channel, 0, frame, False))


class Timers:
    """A manual clock and scheduler."""

    def __init__(self) -> None:
        self.now = 0.0
        self.pending: list[tuple[float, Callable[[], None]]] = []

    def schedule(self, delay: float, fn: Callable[[], None]) -> Any:
        entry = (self.now + delay, fn)
        self.pending.append(entry)
        timers = self

        class Handle:
            def cancel(self) -> None:
                timers.pending.remove(entry)

        return Handle()

    def advance(self, dt: float) -> None:
        self.now += dt
        due = [e for e in self.pending if e[0] <= self.now]
        for entry in due:
            self.pending.remove(entry)
            entry[1]()


def event(channel: str, offset: int) -> Event:
    return Event(channel, "e", offset, b'{"offset":%d}' % offset)


def test_frame_built_once_for_all_subscribers() -> None:
    """Every subscriber receives the very same frame object."""
    timers = Timers()
    hub = Hub(default_namespaces(), timers.schedule, lambda: timers.now)
    subs = [Recorder() for _ in range(3)]
    for s in subs:
        hub.add("contest:1", s)
    hub.publish(event("contest:1", 1))
    frames = [s.frames[0][2] for s in subs]
    assert frames[0] == text_frame(b'{"offset":1}')
    assert all(f is frames[0] for f in frames)


def test_first_and_last_subscriber_signals() -> None:
    """add() says first, remove() says last."""
    hub = Hub(default_namespaces(), Timers().schedule, lambda: 0.0)
    a, b = Recorder(), Recorder()
    assert hub.add("contest:1", a) is True
    assert hub.add("contest:1", b) is False
    assert hub.remove("contest:1", a) is False
    assert hub.remove("contest:1", b) is True
    assert hub.subscription_count == 0 and hub.channel_count == 0


def test_leaderboard_coalesces_latest_wins() -> None:
    """Within the 500 ms window a leaderboard subscriber gets one frame: the latest."""
    timers = Timers()
    hub = Hub(default_namespaces(), timers.schedule, lambda: timers.now)
    sub = Recorder()
    hub.add("leaderboard:1", sub)
    for offset in range(1, 1001):
        hub.publish(event("leaderboard:1", offset))
        timers.advance(0.001)  # 1,000 events in one second
    timers.advance(1.0)
    offsets = [f[1] for f in sub.frames]
    assert offsets[0] == 1 and offsets[-1] == 1000
    assert len(offsets) <= 1.0 / 0.5 + 2
    assert offsets == sorted(offsets)


def test_contest_channel_never_coalesces() -> None:
    """Non-coalescing namespaces deliver every event."""
    timers = Timers()
    hub = Hub(default_namespaces(), timers.schedule, lambda: timers.now)
    sub = Recorder()
    hub.add("contest:1", sub)
    for offset in range(1, 101):
        hub.publish(event("contest:1", offset))
    assert [f[1] for f in sub.frames] == list(range(1, 101))


def snap(offset: int, history: range, epoch: str = "e") -> Snapshot:
    return Snapshot(epoch, offset, None, [Event("c:1", epoch, o, b"%d" % o) for o in history])


@pytest.mark.parametrize(
    ("snapshot", "since", "expected"),
    [
        (snap(10, range(1, 11)), Since("e", 10), []),
        (snap(10, range(1, 11)), Since("e", 7), [8, 9, 10]),
        (snap(10, range(6, 11)), Since("e", 5), [6, 7, 8, 9, 10]),
        (snap(10, range(6, 11)), Since("e", 4), None),  # history no longer covers 5
        (snap(10, range(1, 11)), Since("old", 7), None),  # epoch changed
        (snap(3, range(1, 4)), Since("old", 0), [1, 2, 3]),  # from the start: epoch moot
        (snap(3, range(1, 4)), Since("e", 9), None),  # ahead of the store
    ],
)
def test_recover(snapshot: Snapshot, since: Since, expected: list[int] | None) -> None:
    """Missed events are returned only when history covers the whole gap."""
    result = recover(snapshot, since)
    assert (None if result is None else [e.offset for e in result]) == expected


def test_memory_store_offsets_history_state_dedup() -> None:
    """Offsets grow by one; history is capped; state is the latest state event; ids dedup."""
    now = [0.0]
    store = MemoryStore(history_size=3, history_ttl=10, clock=lambda: now[0])
    for i in range(5):
        published, ev = store.publish(Envelope("c:1", "t", b"%d" % i, state=(i == 2)))
        assert published.offset == i + 1 and ev is not None
    dup, ev = store.publish(Envelope("c:1", "t", b"9", id="x"))
    again, ev2 = store.publish(Envelope("c:1", "t", b"9", id="x"))
    assert again.duplicate and ev2 is None and again.offset == dup.offset == 6
    s = store.snapshot("c:1", 10)
    assert s.offset == 6 and [e.offset for e in s.history] == [4, 5, 6]
    assert orjson.loads(s.state or b"")["offset"] == 3
    now[0] = 11.0  # past the history TTL
    assert store.snapshot("c:1", 10).history == []


def test_envelope_validation() -> None:
    """Bad publish bodies are refused with a message naming the field."""
    for body, needle in [
        (b"{", "JSON"),
        (b"[]", "empty"),
        (b'{"channel":"bad","type":"t","data":1}', "channel"),
        (b'{"channel":"a:b","type":"","data":1}', "type"),
        (b'{"channel":"a:b","type":"t"}', "data"),
        (b'{"channel":"a:b","type":"t","data":1,"state":"yes"}', "state"),
        (b'{"channel":"a:b","type":"t","data":123456789012345678901234567890}', "data"),
    ]:
        with pytest.raises(PublishError, match=needle):
            envelopes_from_body(body)
    [env] = envelopes_from_body(b'{"channel":"a:b","type":"t","data":{"x":[1]},"state":true}')
    assert env.data_json == b'{"x":[1]}' and env.state


def test_text_frame_lengths() -> None:
    """Frames use the 7-bit, 16-bit and 64-bit length forms."""
    assert text_frame(b"x")[:2] == b"\x81\x01"
    assert text_frame(b"x" * 200)[:4] == b"\x81\x7e\x00\xc8"
    assert text_frame(b"x" * 70000)[:2] == b"\x81\x7f"
