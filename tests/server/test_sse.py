"""``GET /sse`` against real server processes: the WebSocket's rules over Server-Sent Events."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from realtime.frames import text_frame
from realtime.messages import Since
from realtime.sse import _Channel, format_positions, frame_payload, parse_positions, sse_message
from tests.client import raw_ws
from tests.conftest import ServerProcess, make_token
from tests.sse_client import SseClosed, SseStream


def _channel(namespace: str = "contest") -> str:
    return f"{namespace}:sse-{uuid.uuid4().hex[:8]}"


def _publish(server: ServerProcess, channel: str, first: int, last: int, **extra: Any) -> None:
    server.publish(
        *[
            {"channel": channel, "type": "seq", "data": {"i": i}, **extra}
            for i in range(first, last + 1)
        ]
    )


def _subscribed(stream: SseStream, count: int) -> dict[str, dict[str, Any]]:
    """Read until ``count`` subscribed messages arrived; return them by channel."""
    replies: dict[str, dict[str, Any]] = {}
    while len(replies) < count:
        message = stream.until(lambda d: d["op"] == "subscribed")
        replies[message.data["channel"]] = message.data
    return replies


def _events(stream: SseStream, count: int) -> list[Any]:
    return [stream.until(lambda d: d["op"] == "event") for _ in range(count)]


# -- the id format (pure) ------------------------------------------------------------------

positions = st.lists(
    st.one_of(
        st.none(),
        st.builds(
            Since,
            epoch=st.text("0123456789abcdef:", min_size=1, max_size=16),
            offset=st.integers(0, 2**63 - 1),
        ),
    ),
    max_size=20,
)


@given(positions)
def test_positions_round_trip(values: list[Since | None]) -> None:
    """What an event's id encodes, Last-Event-ID decodes: every channel, in order."""
    channels = []
    for value in values:
        channel = _Channel("contest:x")
        if value is not None:
            channel.epoch, channel.offset = value.epoch, value.offset
        channels.append(channel)
    encoded = format_positions(channels).decode()
    assert parse_positions(encoded, len(values)) == values


@given(st.text(max_size=200), st.integers(0, 10))
def test_any_last_event_id_parses_to_positions_or_none(text: str, count: int) -> None:
    """A forged or damaged header never fails: entries it cannot read resync."""
    parsed = parse_positions(text, count)
    assert len(parsed) == count
    assert all(p is None or (p.offset >= 0 and 0 < len(p.epoch) <= 64) for p in parsed)


@given(st.binary(max_size=70000))
def test_frame_payload_inverts_text_frame(payload: bytes) -> None:
    assert frame_payload(text_frame(payload)) == payload


def test_message_with_newlines_keeps_one_data_value() -> None:
    assert sse_message(b'{"a":\n1}', b"e:1") == b'id: e:1\ndata: {"a":\ndata: 1}\n\n'


# -- real servers --------------------------------------------------------------------------


def test_stream_carries_welcome_subscribed_and_events(memory_server: ServerProcess) -> None:
    """The stream's messages are the WebSocket's JSON objects, with positions as ids."""
    a, b = _channel(), _channel()
    _publish(memory_server, b, 1, 1, state=True)
    stream = SseStream(memory_server.port, [a, b])
    try:
        assert stream.status == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        assert stream.headers["x-accel-buffering"] == "no"
        assert stream.headers["cache-control"] == "no-store"
        welcome = stream.next()
        assert welcome.data["op"] == "welcome" and welcome.data["heartbeat"] == 25
        replies = _subscribed(stream, 2)
        assert replies[a]["offset"] == 0 and replies[a]["state"] is None
        assert replies[b]["offset"] == 1 and replies[b]["state"]["data"] == {"i": 1}
        _publish(memory_server, a, 1, 30)
        events = _events(stream, 30)
        assert [e.data["offset"] for e in events] == list(range(1, 31))
        assert [e.data["data"]["i"] for e in events] == list(range(1, 31))
        epoch_b = replies[b]["epoch"]
        # a subscribed before its first event (epoch "0"): the notice moved it to the real one
        assert replies[a]["epoch"] == "0"
        epoch_a = events[-1].id.split(",")[0].split(":")[0]
        assert epoch_a not in ("", "0") and events[-1].id == f"{epoch_a}:30,{epoch_b}:1"
    finally:
        stream.close()


def test_access_rules_are_the_websockets(memory_server: ServerProcess) -> None:
    """Token and channel checks as on /ws; a refused channel does not end the stream."""
    own, other, granted = "user:7", "user:8", f"submission:{uuid.uuid4().hex[:6]}"
    public = _channel()
    names = [own, other, granted, public, "nope:1", "contest:"]

    def errors_and_subscribed(stream: SseStream) -> tuple[dict[str, str], set[str]]:
        errors: dict[str, str] = {}
        subscribed: set[str] = set()
        while len(errors) + len(subscribed) < len(names):
            data = stream.next().data
            if data["op"] == "error":
                errors[data.get("channel", "")] = data["code"]
            elif data["op"] == "subscribed":
                subscribed.add(data["channel"])
        return errors, subscribed

    anonymous = SseStream(memory_server.port, names)
    try:
        errors, subscribed = errors_and_subscribed(anonymous)
        assert subscribed == {public}
        assert errors == {
            own: "unauthorized",
            other: "unauthorized",
            granted: "unauthorized",
            "nope:1": "unknown_channel",
            "contest:": "bad_request",
        }
    finally:
        anonymous.close()

    token = make_token("7", channels=["submission:*"])
    authed = SseStream(memory_server.port, names, token=token)
    try:
        assert authed.next().data["op"] == "welcome"
        assert authed.next().data == {"op": "authed", "user": "7"}
        errors, subscribed = errors_and_subscribed(authed)
        assert subscribed == {own, granted, public}
        assert errors == {
            other: "forbidden",
            "nope:1": "unknown_channel",
            "contest:": "bad_request",
        }
        _publish(memory_server, own, 1, 1)
        assert authed.until(lambda d: d["op"] == "event").data["channel"] == own
    finally:
        authed.close()

    forged = SseStream(memory_server.port, [own], token=token[:-4] + "AAAA")
    try:
        assert forged.next().data["op"] == "welcome"
        assert forged.next().data["code"] == "unauthorized"  # the token: anonymous from here
        assert forged.next().data == {
            "op": "error",
            "code": "unauthorized",
            "message": "this channel needs a token",
            "channel": own,
        }
    finally:
        forged.close()


@pytest.mark.parametrize("via", ["header", "query"])
def test_last_event_id_recovers_every_channel(memory_server: ServerProcess, via: str) -> None:
    """A reconnect with the last id gets each channel's missed events, nothing twice."""
    a, b, c = _channel(), _channel(), _channel()
    first = SseStream(memory_server.port, [a, b, c])
    _subscribed(first, 3)
    _publish(memory_server, a, 1, 3)
    _publish(memory_server, b, 1, 2)
    _events(first, 5)
    last_id = first.last_id
    first.close()
    # missed while away: a gets 4..6, b gets 3, c gets its first two
    _publish(memory_server, a, 4, 6)
    _publish(memory_server, b, 3, 3)
    _publish(memory_server, c, 1, 2)
    kwargs = {"last_event_id": last_id} if via == "header" else {"query_last_event_id": last_id}
    second = SseStream(memory_server.port, [a, b, c], **kwargs)
    try:
        replies = _subscribed(second, 3)
        assert all(r["recovered"] for r in replies.values())
        assert [e["data"]["i"] for e in replies[a]["missed"]] == [4, 5, 6]
        assert [e["data"]["i"] for e in replies[b]["missed"]] == [3]
        assert [e["data"]["i"] for e in replies[c]["missed"]] == [1, 2]
        _publish(memory_server, a, 7, 7)
        event = second.until(lambda d: d["op"] == "event")
        assert event.data["offset"] == 7
    finally:
        second.close()


def test_header_wins_over_the_query(memory_server: ServerProcess) -> None:
    """EventSource reconnects to the same URL: its newer Last-Event-ID must win."""
    channel = _channel()
    _publish(memory_server, channel, 1, 4)
    epoch = memory_server.publish({"channel": channel, "type": "seq", "data": {"i": 5}})["results"][
        0
    ]["epoch"]
    stream = SseStream(
        memory_server.port,
        [channel],
        last_event_id=f"{epoch}:3",
        query_last_event_id=f"{epoch}:1",
    )
    try:
        reply = _subscribed(stream, 1)[channel]
        assert [e["offset"] for e in reply["missed"]] == [4, 5]
    finally:
        stream.close()


def test_lost_epoch_resyncs_from_state(memory_server: ServerProcess) -> None:
    """A position from another epoch cannot be recovered: recovered false, with the state."""
    channel = _channel()
    _publish(memory_server, channel, 1, 2, state=True)
    stream = SseStream(memory_server.port, [channel], last_event_id="gone:1")
    try:
        reply = _subscribed(stream, 1)[channel]
        assert reply["recovered"] is False and reply["missed"] == []
        assert reply["state"]["data"] == {"i": 2} and reply["offset"] == 2
    finally:
        stream.close()


@pytest.mark.broker
def test_any_node_serves_the_stream(server_factory: Any, redis_url: str, prefix: str) -> None:
    """A stream left on one node resumes on another from the same Last-Event-ID."""
    one = server_factory(broker_url=redis_url, redis_prefix=prefix)
    two = server_factory(broker_url=redis_url, redis_prefix=prefix)
    a, b = _channel(), _channel()
    first = SseStream(one.port, [a, b])
    _subscribed(first, 2)
    _publish(one, a, 1, 2)
    _events(first, 2)
    last_id = first.last_id
    first.close()
    _publish(one, a, 3, 4)
    _publish(two, b, 1, 1)
    second = SseStream(two.port, [a, b], last_event_id=last_id)
    try:
        replies = _subscribed(second, 2)
        assert [e["offset"] for e in replies[a]["missed"]] == [3, 4]
        assert [e["offset"] for e in replies[b]["missed"]] == [1]
        _publish(one, b, 2, 2)  # published through the other node: arrives via Redis
        assert second.until(lambda d: d["op"] == "event").data["offset"] == 2
    finally:
        second.close()


def test_heartbeat_comments(server_factory: Any) -> None:
    server = server_factory(heartbeat="1")
    stream = SseStream(server.port, [_channel()])
    try:
        seen = []
        deadline = time.monotonic() + 5
        while len(seen) < 2 and time.monotonic() < deadline:
            message = stream.next(timeout=3, comments=True)
            if message.comment is not None:
                seen.append(message.comment)
        assert seen == ["ping", "ping"]
    finally:
        stream.close()


def test_connections_per_address_count_both_transports(server_factory: Any) -> None:
    """One WebSocket and one stream fill a limit of two: the next of either gets 503."""
    server = server_factory(max_connections_per_ip="2")
    ws = raw_ws(server.port)
    stream = SseStream(server.port, [_channel()])
    try:
        assert stream.status == 200
        refused = SseStream(server.port, [_channel()])
        assert refused.status == 503 and "retry-after" in refused.headers
        refused.close()
        status, _ = server.get("/ws")
        assert status == 503
        stream.close()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            again = SseStream(server.port, [_channel()])
            again.close()
            if again.status == 200:
                break
            time.sleep(0.05)
        assert again.status == 200  # the closed stream gave its place back
    finally:
        ws.close()
        stream.close()


def test_slow_reader_is_cut_off(server_factory: Any) -> None:
    """A stream that is not read is cut off at the send-buffer limit; others go on."""
    server = server_factory(max_send_buffer="65536")
    channel = _channel()
    slow = SseStream(server.port, [channel], rcvbuf=4096)
    reader = SseStream(server.port, [channel])
    try:
        _subscribed(reader, 1)
        blob = "x" * 16000
        for start in range(1, 601, 20):
            server.publish(
                *[
                    {"channel": channel, "type": "big", "data": {"i": i, "blob": blob}}
                    for i in range(start, start + 20)
                ]
            )
            assert [e.data["offset"] for e in _events(reader, 20)] == list(range(start, start + 20))
        status, body = server.get("/metrics")
        assert status == 200
        dropped = [
            line
            for line in body.decode().splitlines()
            if line.startswith("realtime_slow_consumers_dropped_total ")
        ]
        assert dropped and float(dropped[0].split()[-1]) >= 1
        with pytest.raises(SseClosed):
            while True:  # what the kernel held, then the end
                slow.next(timeout=5)
    finally:
        slow.close()
        reader.close()


def test_origin_rules(server_factory: Any) -> None:
    server = server_factory(allowed_origins="https://judge.example")
    ok = SseStream(server.port, [_channel()], headers={"Origin": "https://judge.example"})
    bad = SseStream(server.port, [_channel()], headers={"Origin": "https://evil.example"})
    try:
        assert ok.status == 200
        assert ok.headers["access-control-allow-origin"] == "https://judge.example"
        assert bad.status == 403
    finally:
        ok.close()
        bad.close()


def test_token_expiry_drops_private_channels(server_factory: Any) -> None:
    """At exp: token_expired; one heartbeat later the private channels end, public ones stay."""
    server = server_factory(heartbeat="1")
    public = _channel()
    token = make_token("5", ttl=2.5)  # exp is whole seconds: valid for 1.5 s at least
    stream = SseStream(server.port, ["user:5", public], token=token)
    try:
        _subscribed(stream, 2)
        expired = stream.until(lambda d: d["op"] == "error", timeout=5)
        assert expired.data["code"] == "token_expired"
        dropped = stream.until(lambda d: d["op"] == "unsubscribed", timeout=5)
        assert dropped.data == {
            "op": "unsubscribed",
            "channel": "user:5",
            "reason": "token_expired",
        }
        _publish(server, public, 1, 1)
        assert stream.until(lambda d: d["op"] == "event").data["channel"] == public
    finally:
        stream.close()


def test_sigterm_ends_the_stream(memory_server: ServerProcess) -> None:
    stream = SseStream(memory_server.port, [_channel()])
    try:
        _subscribed(stream, 1)
        assert memory_server.stop() == 0
        with pytest.raises(SseClosed):
            stream.next(timeout=10)
    finally:
        stream.close()


def test_slow_leaderboard_watcher_skips_to_latest(server_factory: Any, tmp_path: Any) -> None:
    """As on the WebSocket: a stream behind on a coalesced channel is not cut off; it skips
    to the latest event and gets it once it reads again."""
    from tests.server.test_coalescing import metric, server_with_coalesce

    server = server_with_coalesce(server_factory, tmp_path, 1, max_send_buffer="65536")
    channel = "leaderboard:sse-slow"
    slow = SseStream(server.port, [channel], rcvbuf=4096)
    blob = "z" * 16000
    published = 0
    while published < 600 and metric(server, "realtime_frames_skipped_total") < 5:
        for _ in range(10):
            published += 1
            server.publish({"channel": channel, "type": "t", "data": {"pad": blob}})
        time.sleep(0.05)
    try:
        assert metric(server, "realtime_frames_skipped_total") >= 5, published
        offsets: list[int] = []
        while not offsets or offsets[-1] < published:
            offsets.append(slow.until(lambda d: d["op"] == "event", timeout=5).data["offset"])
        assert offsets[-1] == published
        assert offsets == sorted(set(offsets)) and len(offsets) < published
        assert metric(server, "realtime_slow_consumers_dropped_total") == 0
    finally:
        slow.close()
