"""The light standings watcher of bench/standings_scale.py counts frames by channel kind."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from picows import WSMsgType

from bench.standings_scale import KINDS, Counters, Light
from realtime.envelope import encode_event
from realtime.messages import subscribed


@dataclass
class Frame:
    payload: bytes
    msg_type: WSMsgType = WSMsgType.TEXT

    def get_payload_as_bytes(self) -> bytes:
        return self.payload


def test_light_watcher_counts_each_kind_and_only_real_resyncs() -> None:
    """Events count under their channel's namespace (a merged frame under its first event);
    the three replies make it ready; an epoch notice is no resync, a resync is."""

    async def feed() -> tuple[Counters, bool]:
        counters = Counters()
        channels = ["leaderboard:c1", "standings:c1", "presence:standings:c1"]
        light = Light(counters, channels)
        frames = [subscribed(c, "e1", 0, None, (), False) for c in channels]
        frames += [
            encode_event("leaderboard:c1", 1, "leaderboard.delta", b'{"v":1}'),
            encode_event("standings:c1", 1, "leaderboard.move", b'{"v":1}')
            + b"\n"
            + encode_event("standings:c1", 2, "leaderboard.move", b'{"v":2}'),
            encode_event("presence:standings:c1", 1, "presence.count", b'{"count":3}'),
            subscribed("standings:c1", "e1", 0, None, (), True),  # the epoch's first event
            subscribed("standings:c1", "e2", 5, None, (), False),  # a resync
        ]
        for payload in frames:
            transport: Any = None
            light.on_ws_frame(transport, Frame(payload))  # type: ignore[arg-type]
        return counters, light.ready.done() and light.ready.result()

    counters, ready = asyncio.run(feed())
    assert ready
    assert counters.frames == dict.fromkeys(KINDS, 1)
    assert counters.bytes["standings"] > counters.bytes["leaderboard"]
    assert (counters.subscribed, counters.resubscribed) == (3, 1)
