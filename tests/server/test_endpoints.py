"""A real server process (memory broker) and real WebSocket clients: endpoints and codes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from typing import Any

import pytest
import websockets

from tests.client import Client, masked_text, raw_ws
from tests.conftest import ROOT, TEST_API_KEY, ServerProcess, make_token, server_env


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_subscribe_publish_round_trip(memory_server: ServerProcess) -> None:
    """welcome, subscribed, then published events in offset order with state for late joiners."""

    async def scenario() -> None:
        async with await Client.open(memory_server.ws_url) as c:
            assert c.welcome["heartbeat"] == 25 and abs(c.welcome["time"] / 1000 - time.time()) < 5
            sub = await c.subscribe("contest:1")
            assert (sub["op"], sub["offset"], sub["state"]) == ("subscribed", 0, None)
            answer = memory_server.publish(
                *[
                    {"channel": "contest:1", "type": "t", "data": {"i": i}, "state": i == 1}
                    for i in range(3)
                ]
            )
            assert [r["offset"] for r in answer["results"]] == [1, 2, 3]
            events = await c.events(3)
            assert [(e["offset"], e["data"]["i"], e["type"]) for e in events] == [
                (1, 0, "t"),
                (2, 1, "t"),
                (3, 2, "t"),
            ]
        async with await Client.open(memory_server.ws_url) as late:
            sub = await late.subscribe("contest:1")
            assert sub["offset"] == 3 and sub["state"]["offset"] == 2
            assert sub["state"]["data"] == {"i": 1}

    run(scenario())


def test_private_channels_over_the_wire(memory_server: ServerProcess) -> None:
    """unauthorized without token, forbidden for another user, ok for the owner and grants."""

    async def scenario() -> None:
        async with await Client.open(memory_server.ws_url) as c:
            assert (await c.subscribe("user:1"))["code"] == "unauthorized"
            assert (await c.subscribe("chat:1"))["code"] == "unknown_channel"
            assert (await c.subscribe("bad name"))["code"] == "bad_request"
            authed = await c.auth(make_token("1", channels=["submission:9"]))
            assert authed == {"op": "authed", "user": "1", "id": authed["id"]}
            assert (await c.subscribe("user:2"))["code"] == "forbidden"
            assert (await c.subscribe("submission:10"))["code"] == "forbidden"
            assert (await c.subscribe("user:1"))["op"] == "subscribed"
            assert (await c.subscribe("submission:9"))["op"] == "subscribed"
            expired = await c.auth(make_token("1", ttl=-10))
            assert expired["code"] == "token_expired"
            bad = await c.auth(make_token("1").replace("e", "f", 3)[:-2] + "xx")
            assert bad["code"] == "unauthorized"
            assert (await c.request({"op": "ping"}))["op"] == "pong"
            memory_server.publish({"channel": "user:1", "type": "n", "data": 1})
            assert (await c.events(1))[0]["channel"] == "user:1"

    run(scenario())


def test_publish_api_statuses(server_factory: Any) -> None:
    """403 disabled, 401 bad key, 400 bad body, 413 too large, 200 with results."""
    disabled = server_factory(api_key="")
    status, body = _post(disabled.url, b"{}", TEST_API_KEY)
    assert status == 403 and b"REALTIME_API_KEY" in body
    server = server_factory(max_publish_body="2048")
    assert _post(server.url, b"{}", "wrong")[0] == 401
    assert _post(server.url, b"{}", None)[0] == 401
    status, body = _post(server.url, b'{"channel":"contest:1","type":"t"}', TEST_API_KEY)
    assert status == 400 and b"data" in body
    assert _post(server.url, b"x" * 5000, TEST_API_KEY)[0] == 413
    status, body = _post(
        server.url, b'{"channel":"contest:1","type":"t","data":null}', TEST_API_KEY
    )
    assert status == 200 and json.loads(body)["results"][0]["offset"] == 1


def _post(url: str, body: bytes, key: str | None) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    headers = {"Authorization": f"Bearer {key}"} if key else {}
    req = urllib.request.Request(url + "/api/publish", data=body, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_health_and_metrics(memory_server: ServerProcess) -> None:
    """/healthz is 200 with the broker status; /metrics speaks Prometheus."""
    status, body = memory_server.get("/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok"
    status, body = memory_server.get("/metrics")
    assert status == 200
    for name in (
        "realtime_connections",
        "realtime_messages_out_total",
        "realtime_bytes_out_total",
        "realtime_publish_to_send_seconds_bucket",
        "realtime_broker_reconnects_total",
        "realtime_slow_consumers_dropped_total",
        "realtime_channels",
    ):
        assert name.encode() in body
    status, body = memory_server.get("/static/realtime.js")
    assert status == 200 and b"RealtimeClient" in body


def test_oversize_message_closes_1009(memory_server: ServerProcess) -> None:
    """A client message over 64 KiB closes with 1009."""

    async def scenario() -> int | None:
        async with await Client.open(memory_server.ws_url) as c:
            await c.ws.send("x" * 70000)
            return await c.closed_code()

    assert run(scenario()) == 1009


def test_invalid_utf8_closes_1007(memory_server: ServerProcess) -> None:
    """Invalid UTF-8 in a text frame closes with 1007."""

    async def scenario() -> int | None:
        async with await Client.open(memory_server.ws_url) as c:
            await c.ws.send(b'{"op":"ping"}\xff', text=True)
            return await c.closed_code()

    assert run(scenario()) == 1007


def test_malformed_json_keeps_connection(memory_server: ServerProcess) -> None:
    """Malformed JSON and unknown ops get bad_request; the connection stays up."""

    async def scenario() -> None:
        async with await Client.open(memory_server.ws_url) as c:
            await c.ws.send("{nope")
            assert (await c.recv())["code"] == "bad_request"
            assert (await c.request({"op": "fly"}))["code"] == "bad_request"
            assert (await c.request({"op": "ping"}))["op"] == "pong"

    run(scenario())


def test_flooding_client_gets_rate_limited_then_1008(server_factory: Any) -> None:
    """Past the burst: rate_limited; keeps flooding: closed with 1008."""
    server = server_factory(rate_limit="5", rate_burst="10", flood_close_after="5")

    async def scenario() -> tuple[list[str], int | None]:
        async with await Client.open(server.ws_url) as c:
            for _ in range(30):
                await c.ws.send('{"op":"ping"}')
            codes = []
            try:
                while True:
                    msg = await c.recv(timeout=3)
                    codes.append(msg.get("code", msg["op"]))
            except websockets.ConnectionClosed as exc:
                return codes, exc.rcvd.code if exc.rcvd else None

    codes, close = run(scenario())
    assert codes[:10] == ["pong"] * 10 and "rate_limited" in codes
    assert close == 1008


def test_too_many_subscriptions(server_factory: Any) -> None:
    """The 3rd subscription with max_subscriptions=2 is refused."""
    server = server_factory(max_subscriptions="2")

    async def scenario() -> None:
        async with await Client.open(server.ws_url) as c:
            assert (await c.subscribe("contest:1"))["op"] == "subscribed"
            assert (await c.subscribe("contest:2"))["op"] == "subscribed"
            assert (await c.subscribe("contest:3"))["code"] == "too_many_subscriptions"

    run(scenario())


def test_handshake_refusals(server_factory: Any) -> None:
    """Plain GET /ws: 400; disallowed Origin: 403 (none is fine); over the limit: 503."""
    server = server_factory(max_connections="1", allowed_origins="https://judge.example")
    status, _ = server.get("/ws")
    assert status == 400

    async def scenario() -> None:
        with pytest.raises(websockets.InvalidStatus) as info:
            await websockets.connect(server.ws_url, origin="https://evil.example")  # type: ignore[arg-type]
        assert info.value.response.status_code == 403
        async with await Client.open(server.ws_url, origin="https://judge.example") as first:  # type: ignore[arg-type]
            with pytest.raises(websockets.InvalidStatus) as info:
                await websockets.connect(server.ws_url)
            assert info.value.response.status_code == 503
            assert info.value.response.headers.get("Retry-After")
            assert (await first.request({"op": "ping"}))["op"] == "pong"

    run(scenario())


def test_slow_consumer_cut_off(server_factory: Any) -> None:
    """A client that stops reading is cut off at the send buffer limit; others keep going."""
    server = server_factory(max_send_buffer="65536")
    raw = raw_ws(server.port)
    raw.sendall(masked_text(b'{"op":"subscribe","channel":"contest:9"}'))

    async def scenario() -> int:
        async with await Client.open(server.ws_url) as reader:
            await reader.subscribe("contest:9")
            blob = "y" * 16000
            for batch in range(30):
                server.publish(*[{"channel": "contest:9", "type": "t", "data": blob}] * 20)
                got = await reader.events(20)
                assert got[-1]["offset"] == (batch + 1) * 20
            return int(_metric(server, "realtime_slow_consumers_dropped_total"))

    assert run(scenario()) >= 1
    raw.close()


def _metric(server: ServerProcess, name: str) -> float:
    _, body = server.get("/metrics")
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(name)


def test_sigterm_closes_clients_with_1012_and_exits_0(memory_server: ServerProcess) -> None:
    """SIGTERM: every client gets 1012 and the process exits with 0."""

    async def scenario() -> list[int | None]:
        clients = [await Client.open(memory_server.ws_url) for _ in range(20)]
        memory_server.signal(15)
        return list(await asyncio.gather(*(c.closed_code(10) for c in clients)))

    assert run(scenario()) == [1012] * 20
    assert memory_server.proc is not None
    assert memory_server.proc.wait(10) == 0


def test_bad_config_exits_2_with_one_line(tmp_path: Any) -> None:
    """A bad setting stops start-up with one line naming it and exit code 2."""
    env = server_env(port="not-a-port")
    proc = subprocess.run(
        [sys.executable, "-m", "realtime", "serve"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "port" in proc.stderr
    assert "Traceback" not in proc.stderr
