"""Pure parts of the benchmark: percentiles, frames, peer message parsing, event regex."""

from __future__ import annotations

import orjson

from bench.client import EVENT_RE
from bench.peers.common import split_redis_message
from bench.peers.floor import unmask, ws_frame
from bench.publishers import event_data
from bench.stats import percentile
from realtime.envelope import encode_event


def test_percentile_uses_nearest_rank() -> None:
    """p50 of 1..100 is 50, p99 is 99, p100 is 100 and an empty list gives 0."""
    values = list(range(1, 101))
    assert (percentile(values, 50), percentile(values, 99), percentile(values, 100)) == (
        50,
        99,
        100,
    )
    assert percentile([], 50) == 0


def test_ws_frame_uses_extended_length_past_125_bytes() -> None:
    """Frames carry a 7-bit, 16-bit or 64-bit length as RFC 6455 requires."""
    assert ws_frame(b"x" * 5)[:2] == b"\x81\x05"
    assert ws_frame(b"x" * 200)[:4] == b"\x81\x7e\x00\xc8"
    assert ws_frame(b"x" * 70000)[1] == 127


def test_unmask_round_trips() -> None:
    """Unmasking twice with the same key gives the original payload."""
    data, mask = b'{"op":"subscribe","channel":"contest:1"}', b"\x01\x02\x03\xff"
    assert unmask(unmask(data, mask), mask) == data


def test_split_redis_message_finds_the_event_json() -> None:
    """The event JSON is found after any number of leading fields."""
    event = b'{"op":"event","channel":"contest:1","offset":3}'
    assert split_redis_message("p:", b"p:{contest:1}", b"e1 3 " + event) == ("contest:1", event)
    assert split_redis_message("p:", b"p:{contest:1}", b"e1 3 99 " + event)[1] == event


def test_event_regex_reads_every_event_of_a_batched_frame() -> None:
    """A frame of several events separated by newlines yields every (seq, time) pair."""
    events = [
        encode_event("contest:1", i, "bench.tick", orjson.dumps(event_data(i))) for i in (7, 8)
    ]
    found = EVENT_RE.findall(b"\n".join(events))
    assert [int(seq) for seq, _ in found] == [7, 8]


def test_event_is_about_the_requested_size() -> None:
    """The padded benchmark event is close to 200 bytes on the wire."""
    size = len(encode_event("contest:bench", 12, "bench.tick", orjson.dumps(event_data(12))))
    assert 190 <= size <= 210


def test_fanout_micro_measures_every_run() -> None:
    """bench.fanout_micro runs the real hub/connection code and reports each run."""
    import asyncio

    from bench.fanout_micro import measure

    runs = asyncio.run(measure(connections=50, events=3, repeat=2))
    assert len(runs) == 2 and all(0 < r < 1000 for r in runs)
