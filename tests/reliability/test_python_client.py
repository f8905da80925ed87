"""The Python client (``realtime.client``) against real servers, with faults."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

from realtime.client import RealtimeClient
from tests.conftest import make_token
from tests.reliability.conftest import PrivateRedis


async def _until(predicate: Any, timeout: float = 15.0) -> None:
    """Poll ``predicate`` every 50 ms until it holds or ``timeout`` passes."""
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)


async def _collect(sub: Any, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    async def run() -> None:
        async for item in sub.events():
            out.append(item)
            if sum(1 for i in out if i["op"] == "event") >= count:
                return

    await asyncio.wait_for(run(), timeout)
    return out


def test_subscribe_receive_and_state(memory_server: Any) -> None:
    """State on subscribe, then every event in order through the async iterator."""
    memory_server.publish({"channel": "contest:py", "type": "s", "data": 0, "state": True})

    async def scenario() -> list[dict[str, Any]]:
        async with RealtimeClient(memory_server.ws_url) as rt:
            sub = rt.subscribe("contest:py")
            await asyncio.wait_for(rt.wait_connected(), 10)
            await _until(lambda: sub.status == "live")
            for i in range(1, 6):
                memory_server.publish({"channel": "contest:py", "type": "t", "data": i})
            return await _collect(sub, 5)

    got = asyncio.run(scenario())
    assert got[0] == {"op": "state", "channel": "contest:py", "state": got[0]["state"]}
    assert got[0]["state"]["data"] == 0
    assert [(m["offset"], m["data"]) for m in got[1:]] == [(i + 1, i) for i in range(1, 6)]


def test_server_restart_loses_nothing(server_factory: Any, private_redis: PrivateRedis) -> None:
    """SIGTERM (1012) and SIGKILL: the client comes back with `since`; every event once."""
    server = server_factory(broker_url=private_redis.url)
    channel = "contest:pyrestart"

    async def scenario() -> tuple[list[int], list[Any], int]:
        got: list[int] = []
        states: list[Any] = []
        rt = RealtimeClient(server.ws_url, restart_delay=0.3, min_delay=0.1, max_delay=0.5)
        rt.subscribe(channel, on_event=lambda e: got.append(e["offset"]), on_state=states.append)
        rt.start()
        await asyncio.wait_for(rt.wait_connected(), 10)
        await asyncio.sleep(0.2)
        published = 0

        async def publish(n: int) -> None:
            nonlocal published
            for _ in range(n):
                await asyncio.to_thread(
                    server.publish, {"channel": channel, "type": "t", "data": published}
                )
                published += 1

        await publish(10)
        for stop in (signal.SIGTERM, signal.SIGKILL):
            if stop == signal.SIGTERM:
                await asyncio.to_thread(server.stop)
            else:
                await asyncio.to_thread(server.kill)
            await asyncio.to_thread(server.start)
            await publish(10)  # while the client is (maybe) still away
        await _until(lambda: len(got) >= published)
        await rt.close()
        return got, states, rt.connects

    got, states, connects = asyncio.run(scenario())
    assert got == list(range(1, 31)), got
    assert len(states) == 1  # the first subscribe only: every reconnect recovered
    assert connects >= 2  # it reconnected (once or twice: restarts can overlap)


def test_store_loss_resyncs_from_state(server_factory: Any, private_redis: PrivateRedis) -> None:
    """Redis restarted without its data: on_state is called, then new events arrive."""
    server = server_factory(broker_url=private_redis.url)
    channel = "contest:pyloss"

    async def scenario() -> tuple[list[int], list[Any]]:
        got: list[int] = []
        states: list[Any] = []
        async with RealtimeClient(server.ws_url) as rt:
            rt.subscribe(
                channel, on_event=lambda e: got.append(e["offset"]), on_state=states.append
            )
            await asyncio.wait_for(rt.wait_connected(), 10)
            await asyncio.sleep(0.2)
            for i in range(3):
                server.publish({"channel": channel, "type": "t", "data": i, "state": True})
            await asyncio.to_thread(private_redis.restart)
            await _until(lambda: server.get("/healthz")[0] == 200, 20)
            for i in range(2):
                server.publish({"channel": channel, "type": "t", "data": 10 + i, "state": True})
            await _until(lambda: bool(got) and got[-1] == 2)
        return got, states

    got, states = asyncio.run(scenario())
    assert got[:3] == [1, 2, 3] and got[-1] == 2, got
    assert len(states) >= 2  # the first subscribe, and the resync after the loss


def test_token_refresh_keeps_private_events_flowing(server_factory: Any) -> None:
    """Two-second tokens: the client re-authenticates with get_token and misses nothing."""
    server = server_factory(heartbeat="1")
    minted: list[float] = []

    async def get_token() -> str:
        minted.append(time.time())
        return make_token("alice", ttl=2)

    async def scenario() -> list[int]:
        got: list[int] = []
        async with RealtimeClient(server.ws_url, get_token=get_token) as rt:
            rt.subscribe("user:alice", on_event=lambda e: got.append(e["data"]))
            await asyncio.wait_for(rt.wait_connected(), 10)
            for i in range(12):
                await asyncio.sleep(0.5)
                await asyncio.to_thread(
                    server.publish, {"channel": "user:alice", "type": "t", "data": i}
                )
            await _until(lambda: len(got) >= 12, 10)
        return got

    got = asyncio.run(scenario())
    assert got == list(range(12)), got
    assert len(minted) >= 3  # the token was renewed while connected


def test_policy_violation_stops_the_client(memory_server: Any) -> None:
    """A 1008 close is final: the client does not hammer the server."""

    async def scenario() -> tuple[str, int]:
        rt = RealtimeClient(memory_server.ws_url)
        errors: list[dict[str, Any]] = []
        rt.on("error", errors.append)
        rt.start()
        await asyncio.wait_for(rt.wait_connected(), 10)
        ws = rt._ws  # flood through the client's own socket
        assert ws is not None
        for _ in range(400):
            ws.write_message('{"op":"ping"}')
        await _until(lambda: rt.state == "closed", 10)
        await asyncio.sleep(0.5)
        state, connects = rt.state, rt.connects
        await rt.close()
        assert any(e.get("code") == "policy_violation" for e in errors), errors
        return state, connects

    state, connects = asyncio.run(scenario())
    assert state == "closed" and connects == 1
