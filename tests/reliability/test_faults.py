"""Faults while events flow: Redis restarted, stopped, its clients killed; the server killed
or terminated. Every client ends at the last published event, having seen each event that
history still held exactly once and in order, or a resync where history was lost."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import pytest

from tests.conftest import ServerProcess
from tests.reliability.conftest import PrivateRabbit, PrivateRedis, metric, wait_for
from tests.reliability.flow import Publisher, Tracker, follow
from tests.reliability.rawws import AsyncRaw

pytestmark = pytest.mark.broker
CLIENTS = 4


def _healthz(server: ServerProcess) -> int:
    try:
        return server.get("/healthz")[0]
    except OSError:
        return 0


async def _run_flow(
    watched: ServerProcess,
    front: ServerProcess,
    fault: Any,
    channel: str = "contest:faults",
    reconnect: bool = False,
) -> tuple[list[Tracker], tuple[str, int]]:
    """Clients follow ``watched``; ``front`` takes publishes; ``fault()`` runs mid-flow."""
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    trackers = [Tracker(channel) for _ in range(CLIENTS)]
    tasks = [loop.create_task(follow(watched.ws_url, t, done, reconnect)) for t in trackers]
    await asyncio.sleep(0.3)  # everyone subscribed before the flow starts
    publisher = Publisher(front, channel)
    publisher.start()
    await asyncio.sleep(1.0)
    await loop.run_in_executor(None, fault)
    await asyncio.sleep(1.5)  # the flow goes on after the fault
    last = await loop.run_in_executor(None, publisher.stop)
    deadline = loop.time() + 20
    # trackers are plain data fed by the follow tasks: poll them
    while loop.time() < deadline and any((t.epoch, t.offset) != last for t in trackers):  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    done.set()
    await asyncio.gather(*tasks)
    assert publisher.ok > 50, "the flow did not go on"
    return trackers, last


def _check(trackers: list[Tracker], last: tuple[str, int]) -> None:
    for tracker in trackers:
        assert tracker.violations == [], tracker.violations[:5]
        assert (tracker.epoch, tracker.offset) == last, (tracker, last)


@pytest.mark.parametrize(
    "down_for", [pytest.param(5.0, id="5s"), pytest.param(30.0, id="30s", marks=pytest.mark.slow)]
)
def test_redis_stopped_for_a_while(
    server_factory: Any, private_redis: PrivateRedis, down_for: float
) -> None:
    """Redis down (and its data lost): /healthz 503, then 200; clients resync, no silent gap."""
    server = server_factory(broker_url=private_redis.url, history_size="1000")
    seen_down: list[int] = []

    def fault() -> None:
        private_redis.stop()
        wait_for(lambda: _healthz(server) == 503, 5)
        end = time.monotonic() + down_for
        while time.monotonic() < end:
            seen_down.append(_healthz(server))
            time.sleep(0.2)
        private_redis.start()
        wait_for(lambda: _healthz(server) == 200, 40)

    trackers, last = asyncio.run(_run_flow(server, server, fault))
    _check(trackers, last)
    assert set(seen_down) == {503}
    assert all(t.resyncs == 1 for t in trackers), [t.resyncs for t in trackers]
    assert metric(server, "realtime_broker_reconnects_total") >= 1


def test_redis_restarted(server_factory: Any, private_redis: PrivateRedis) -> None:
    """Redis restarted (history lost) while events flow: one resync each, then every event."""
    server = server_factory(broker_url=private_redis.url, history_size="1000")

    def fault() -> None:
        private_redis.restart()
        wait_for(lambda: _healthz(server) == 200, 40)

    trackers, last = asyncio.run(_run_flow(server, server, fault))
    _check(trackers, last)
    assert all(t.resyncs == 1 for t in trackers), [t.resyncs for t in trackers]


def test_redis_clients_killed(server_factory: Any, private_redis: PrivateRedis) -> None:
    """Redis drops the server's connections (history kept): gaps filled, exactly once, no resync."""
    server = server_factory(broker_url=private_redis.url, history_size="1000")

    def fault() -> None:
        assert private_redis.command("CLIENT", "KILL", "TYPE", "pubsub") not in (None, ":0")
        private_redis.command("CLIENT", "KILL", "TYPE", "normal")
        wait_for(lambda: _healthz(server) == 200, 20)

    trackers, last = asyncio.run(_run_flow(server, server, fault))
    _check(trackers, last)
    assert all(t.resyncs == 0 for t in trackers), [t.resyncs for t in trackers]
    assert metric(server, "realtime_broker_reconnects_total") >= 1


def test_server_killed_and_restarted(server_factory: Any, private_redis: PrivateRedis) -> None:
    """SIGKILL the server clients are on; they reconnect with `since` and recover everything."""
    settings = {"broker_url": private_redis.url, "history_size": "1000"}
    front = server_factory(**settings)
    victim = server_factory(**settings)

    def fault() -> None:
        victim.kill()
        time.sleep(0.5)  # events keep flowing through `front` while the victim is gone
        victim.start()

    trackers, last = asyncio.run(_run_flow(victim, front, fault, reconnect=True))
    _check(trackers, last)
    assert all(t.resyncs == 0 for t in trackers), [t.resyncs for t in trackers]
    assert all(t.recoveries >= 1 for t in trackers), [t.recoveries for t in trackers]


def test_sigterm_with_thousands_of_connections(server_factory: Any) -> None:
    """SIGTERM with 2,000 connections: every one gets 1012, the process exits 0 in time."""
    server = server_factory(shutdown_timeout="10")
    count = 2000

    async def run() -> tuple[list[int], float]:
        sem = asyncio.Semaphore(200)

        async def one() -> AsyncRaw:
            async with sem:
                return await AsyncRaw.connect(server.port)

        conns = await asyncio.gather(*(one() for _ in range(count)))
        assert all(c.status == 101 for c in conns)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(
            None, lambda: wait_for(lambda: metric(server, "realtime_connections") == count, 10)
        )
        started = time.monotonic()
        server.signal(signal.SIGTERM)
        codes = await asyncio.gather(*(c.close_code() for c in conns))
        await loop.run_in_executor(None, lambda: server.proc.wait(12))
        return list(codes), time.monotonic() - started

    codes, took = asyncio.run(run())
    assert codes.count(1012) == count, {c: codes.count(c) for c in set(codes)}
    assert server.proc is not None and server.proc.returncode == 0
    assert took < 10.0


@pytest.mark.parametrize(
    "down_for",
    [pytest.param(0.0, id="restart"), pytest.param(30.0, id="30s", marks=pytest.mark.slow)],
)
def test_rabbitmq_restarted_or_stopped(
    server_factory: Any,
    private_redis: PrivateRedis,
    private_rabbit: PrivateRabbit,
    down_for: float,
) -> None:
    """RabbitMQ killed and back (history in Redis kept): gaps filled, no resync, nothing lost."""
    server = server_factory(
        broker_url=private_rabbit.url, redis_url=private_redis.url, history_size="1000"
    )

    def fault() -> None:
        private_rabbit.stop()
        wait_for(lambda: _healthz(server) == 503, 10)
        time.sleep(down_for)
        private_rabbit.start()
        wait_for(lambda: _healthz(server) == 200, 60)

    trackers, last = asyncio.run(_run_flow(server, server, fault))
    _check(trackers, last)
    assert all(t.resyncs == 0 for t in trackers), [t.resyncs for t in trackers]


def test_rabbitmq_connections_force_closed(
    server_factory: Any, private_redis: PrivateRedis, private_rabbit: PrivateRabbit
) -> None:
    """RabbitMQ closes the server's connection while events flow: every event, exactly once."""
    server = server_factory(
        broker_url=private_rabbit.url, redis_url=private_redis.url, history_size="1000"
    )

    def fault() -> None:
        out = private_rabbit.close_connections()
        assert "rror" not in out, out
        wait_for(lambda: _healthz(server) == 200, 30)

    trackers, last = asyncio.run(_run_flow(server, server, fault))
    _check(trackers, last)
    assert all(t.resyncs == 0 for t in trackers), [t.resyncs for t in trackers]
    assert metric(server, "realtime_broker_reconnects_total") >= 1
