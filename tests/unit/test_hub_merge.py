"""The hub's merge mode: a window's events go out together in one frame, capped."""

from __future__ import annotations

import random

import pytest

from realtime.config import Namespace, default_namespaces
from realtime.frames import text_frame
from realtime.hub import Hub
from tests.unit.test_hub_and_store import Recorder, Timers, event


@pytest.mark.parametrize("seed", range(5))
def test_standings_windows_deliver_every_event_in_order(seed: int) -> None:
    """Random arrivals: at most one frame per window, and together every event once, in order."""
    rng = random.Random(seed)
    timers = Timers()
    hub = Hub(default_namespaces(), timers.schedule, lambda: timers.now)
    sub = Recorder()
    hub.add("standings:1", sub)
    for offset in range(1, 400):
        hub.publish(event("standings:1", offset))
        timers.advance(rng.choice([0.0, 0.001, 0.01, 0.2, 0.7]))
    timers.advance(1.0)
    seen = []
    for channel, first, frame, coalesced in sub.frames:
        lines = [
            int(x.split(b":")[1].rstrip(b"}")) for x in frame[frame.index(b"{") :].split(b"\n")
        ]
        assert channel == "standings:1" and coalesced and lines[0] == first
        seen += lines
    assert seen == list(range(1, 400))
    assert len(sub.frames) <= timers.now / 0.5 + 2


def test_merge_cap_keeps_the_newest_events() -> None:
    """Past merge_max events in a window only the newest go out: the gap is visible."""
    timers = Timers()
    hub = Hub({"m": Namespace(coalesce_ms=500, merge_max=3)}, timers.schedule, lambda: timers.now)
    sub = Recorder()
    hub.add("m:1", sub)
    for offset in range(1, 8):
        hub.publish(event("m:1", offset))
    timers.advance(0.6)
    assert [f[1] for f in sub.frames] == [1, 5]
    assert sub.frames[1][2] == text_frame(b'{"offset":5}\n{"offset":6}\n{"offset":7}')
