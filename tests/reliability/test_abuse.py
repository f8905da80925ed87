"""Hostile and broken clients: each gets the contract's error or close code; the server stays up."""

from __future__ import annotations

import asyncio
import functools
import json
import socket
import time
from typing import Any

import pytest
import websockets

from tests.client import Client
from tests.conftest import ServerProcess
from tests.reliability.conftest import metric, rss_bytes, wait_for
from tests.reliability.rawws import RawClient, frame, handshake_request


async def _still_up(server: ServerProcess) -> None:
    async with await Client.open(server.ws_url) as probe:
        assert (await probe.request({"op": "ping"}))["op"] == "pong"


def test_flood_is_rate_limited_then_closed_with_1008(memory_server: ServerProcess) -> None:
    """A client that floods commands gets rate_limited, then a 1008 close."""

    async def run() -> tuple[list[dict[str, Any]], int | None]:
        client = await Client.open(memory_server.ws_url)
        for _ in range(600):
            await client.ws.send('{"op":"ping"}')
        seen: list[dict[str, Any]] = []
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                seen.append(await client.recv(5.0))
        rcvd = closed.value.rcvd
        await _still_up(memory_server)
        return seen, rcvd.code if rcvd else None

    seen, code = asyncio.run(run())
    codes = [m.get("code") for m in seen if m["op"] == "error"]
    assert "rate_limited" in codes
    assert code == 1008


def test_subscribe_churn_leaves_no_subscription_behind(server_factory: Any) -> None:
    """Thousands of subscribe/unsubscribe cycles end with exactly one live subscription."""
    server = server_factory(rate_limit="100000", rate_burst="100000")

    async def run() -> None:
        async with await Client.open(server.ws_url) as churner:
            for _ in range(1500):
                await churner.send({"op": "subscribe", "channel": "contest:churn"})
                await churner.send({"op": "unsubscribe", "channel": "contest:churn"})
            reply = await churner.subscribe("contest:churn")
            assert reply["op"] == "subscribed", reply
            server.publish({"channel": "contest:churn", "type": "t", "data": {"n": 1}})
            got = await churner.events(1)
            assert got[0]["data"] == {"n": 1}
            with pytest.raises(TimeoutError):
                await churner.events(1, timeout=0.5)  # exactly once
            assert metric(server, "realtime_subscriptions") == 1.0

    asyncio.run(run())


def test_oversize_message_closes_with_1009(memory_server: ServerProcess) -> None:
    """A message over 64 KiB closes the connection with 1009."""

    async def run() -> int | None:
        client = await Client.open(memory_server.ws_url)
        await client.ws.send(json.dumps({"op": "ping", "pad": "x" * 70000}))
        code = await client.closed_code()
        await _still_up(memory_server)
        return code

    assert asyncio.run(run()) == 1009


def test_invalid_utf8_closes_with_1007(memory_server: ServerProcess) -> None:
    """A text frame with invalid UTF-8 closes with 1007."""
    raw = RawClient(memory_server.port)
    raw.next_text()  # welcome
    raw.send(frame(0x1, b'{"op":"ping","x":"\xff\xfe"}'))
    _, code = raw.messages_until_close()
    raw.close()
    assert code == 1007
    asyncio.run(_still_up(memory_server))


@pytest.mark.parametrize(
    "data",
    [
        bytes((0x81, 0x04)) + b"ping",  # not masked
        frame(0x1, b'{"op":"ping"}', rsv=4),  # RSV1: no extension was negotiated
        frame(0x3, b"x"),  # reserved opcode
        frame(0x9, b"x", fin=False),  # fragmented ping
        frame(0x0, b"x"),  # continuation of nothing
    ],
    ids=["unmasked", "rsv1", "opcode-3", "fragmented-ping", "lone-continuation"],
)
def test_protocol_violations_close_with_1002(memory_server: ServerProcess, data: bytes) -> None:
    """A frame that breaks RFC 6455 gets a 1002 close frame, not just a dropped socket."""
    raw = RawClient(memory_server.port)
    raw.next_text()  # welcome
    raw.send(data)
    _, code = raw.messages_until_close()
    raw.close()
    assert code == 1002
    asyncio.run(_still_up(memory_server))


def test_a_peer_that_closes_but_stops_reading_is_dropped(server_factory: Any) -> None:
    """Our close answer queued behind unread data must not keep the socket open forever."""
    server = server_factory(max_send_buffer=str(64 << 20))  # no slow-consumer cut here
    raw = RawClient(server.port, rcvbuf=4096)
    raw.next_text()  # welcome
    raw.send_text('{"op":"subscribe","channel":"contest:stall"}')
    assert b"subscribed" in raw.next_text()
    pad = "x" * 4000  # 12 MB in all: more than the kernel's socket buffers take
    for _ in range(15):  # 200 events a request: under the 1 MiB publish limit
        server.publish(
            *[{"channel": "contest:stall", "type": "t", "data": {"pad": pad}} for _ in range(200)]
        )
    wait_for(lambda: metric(server, "realtime_messages_out_total") >= 3000, timeout=10)
    raw.send(frame(0x8, (1000).to_bytes(2, "big")))  # close, then never read again
    started = time.monotonic()
    wait_for(lambda: metric(server, "realtime_connections") == 0, timeout=12)
    assert time.monotonic() - started >= 3  # it waited for the close timeout, not sooner
    raw.close()


def test_a_command_sent_with_the_handshake_is_answered(memory_server: ServerProcess) -> None:
    """Bytes that arrive with the upgrade request are not lost in the hand-over."""
    sock = socket.create_connection(("127.0.0.1", memory_server.port), timeout=5)
    try:
        ping = frame(0x1, b'{"op":"ping","id":7}')
        sock.sendall(handshake_request(memory_server.port) + ping)
        got = b""
        deadline = time.monotonic() + 5
        while b'"pong"' not in got and time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
    finally:
        sock.close()
    assert b" 101 " in got.split(b"\r\n", 1)[0]
    assert b'"op":"pong"' in got and b'"id":7' in got, got


def test_ping_is_answered_with_its_payload_and_close_is_echoed(
    memory_server: ServerProcess,
) -> None:
    """Control frames from the client: pong echoes the ping, the close code comes back."""
    raw = RawClient(memory_server.port)
    raw.next_text()  # welcome
    raw.send(frame(0x9, b"are you there"))
    assert raw.read_frame() == (0xA, b"are you there")
    raw.send(frame(0x8, (4001).to_bytes(2, "big") + b"bye"))
    assert raw.read_frame() == (0x8, (4001).to_bytes(2, "big"))
    assert raw.read_frame() is None  # and the server closes the TCP connection
    raw.close()


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        '{"op":"dance"}',
        "[1,2,3]",
        '"ping"',
        '{"op":"ping","id":1e400}',
        '{"op":"ping","id":123456789012345678901234567890}',
        '{"op":"subscribe","channel":"contest:1","since":{"epoch":"e","offset":1e308}}',
        '{"op":"subscribe","channel":"contest:1","since":{"epoch":"e","offset":-1}}',
        "[" * 5000 + "]" * 5000,
        '{"op":' + '{"a":' * 3000 + "1" + "}" * 3000 + "}",
        '{"op":"subscribe","channel":{"x":1}}',
        '{"op":"auth","token":""}',
        '{"op":[]}',
        '{"op":{"a":1},"id":"x"}',
    ],
    ids=[
        "malformed",
        "unknown-op",
        "array",
        "string",
        "huge-float-id",
        "huge-int-id",
        "huge-offset",
        "negative-offset",
        "deep-array",
        "deep-object",
        "object-channel",
        "empty-token",
        "list-op",
        "object-op",
    ],
)
def test_bad_command_gets_bad_request_and_connection_stays_up(
    memory_server: ServerProcess, text: str
) -> None:
    """Malformed JSON, unknown ops, huge numbers, deep nesting: bad_request, still connected."""

    async def run() -> dict[str, Any]:
        async with await Client.open(memory_server.ws_url) as client:
            await client.ws.send(text)
            reply = await client.recv()
            assert (await client.request({"op": "ping"}))["op"] == "pong"
            return reply

    reply = asyncio.run(run())
    assert reply["op"] == "error" and reply["code"] == "bad_request", reply


def test_fragmented_frames_are_reassembled(memory_server: ServerProcess) -> None:
    """A command split over continuation frames, with a ping in between, is answered."""
    raw = RawClient(memory_server.port)
    raw.next_text()
    text = b'{"op":"ping","id":"frag"}'
    raw.send(frame(0x1, text[:5], fin=False))
    raw.send(frame(0x9, b"hi"))  # a control frame may come between fragments
    raw.send(frame(0x0, text[5:12], fin=False))
    raw.send(frame(0x0, text[12:], fin=True))
    reply = json.loads(raw.next_text())
    raw.close()
    assert reply == {"op": "pong", "id": "frag"}


def test_plain_get_without_upgrade_gets_400(memory_server: ServerProcess) -> None:
    """GET /ws without the Upgrade handshake is answered 400."""
    status, _ = memory_server.get("/ws")
    assert status == 400


def test_slow_loris_handshakes_do_not_block_others(memory_server: ServerProcess) -> None:
    """200 sockets sending a handshake byte by byte do not stop a normal client."""
    lorises: list[socket.socket] = []
    try:
        request = handshake_request(memory_server.port)
        for _ in range(200):
            sock = socket.create_connection(("127.0.0.1", memory_server.port), timeout=5)
            sock.sendall(request[:20])  # headers never finish
            lorises.append(sock)
        started = time.monotonic()
        asyncio.run(_still_up(memory_server))
        assert time.monotonic() - started < 2.0
        status, _ = memory_server.get("/healthz")
        assert status == 200
    finally:
        for sock in lorises:
            sock.close()


def test_slow_consumer_is_cut_off_with_1013(server_factory: Any) -> None:
    """A client that stops reading is closed with 1013; RSS stays bounded; others keep pace."""
    server = server_factory(max_send_buffer="262144")
    rss_before = rss_bytes(server.pid)
    slow = RawClient(server.port, rcvbuf=4096)
    slow.next_text()
    slow.send_text('{"op":"subscribe","channel":"contest:fast","id":1}')
    slow.next_text()  # subscribed; from here on the slow client reads nothing
    payload = "y" * 4000
    latencies: list[float] = []

    async def run() -> int:
        async with await Client.open(server.ws_url) as fast:
            await fast.subscribe("contest:fast")
            loop = asyncio.get_running_loop()
            received = 0
            for batch in range(40):
                envelopes = [
                    {"channel": "contest:fast", "type": "t", "data": {"b": batch, "p": payload}}
                    for _ in range(25)
                ]
                await loop.run_in_executor(None, functools.partial(server.publish, *envelopes))
                received += len(await fast.events(25))
                sent = time.monotonic()
                await fast.request({"op": "ping"})
                latencies.append(time.monotonic() - sent)
            return received

    received = asyncio.run(run())
    assert received == 1000  # the fast subscriber got every event
    assert max(latencies) < 0.5
    wait_for(lambda: metric(server, "realtime_slow_consumers_dropped_total") == 1.0, 5)
    # 1000 x 4 KB went out; a buffer held without limit would show as ~4 MB more RSS
    assert rss_bytes(server.pid) - rss_before < 16 * 1048576
    slow.sock.settimeout(5)
    _, code = slow.messages_until_close()
    slow.close()
    assert code in (1013, -1)  # 1013, or dropped when not even the close frame fit
