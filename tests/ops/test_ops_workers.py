"""``--workers 2`` on the shared Redis: one port, restarts, drain, merged metrics."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from tests.client import Client
from tests.conftest import ROOT, ServerProcess, free_port, server_env
from tests.ops.conftest import pid_alive, scrape, wait_for, worker_pids


@pytest.fixture
def workers2(server_factory: Any, redis_url: str, prefix: str) -> ServerProcess:
    """A two-worker server on the shared Redis, both workers answering."""
    server: ServerProcess = server_factory(
        broker_url=redis_url, redis_prefix=prefix, workers="2", shutdown_timeout="5"
    )
    pids = wait_for(lambda: worker_pids(server) if len(worker_pids(server)) == 2 else None)
    wait_for(lambda: answering(server) >= set(pids.values()), what="both workers answering")
    return server


def health(server: ServerProcess) -> dict[str, Any]:
    """GET /healthz, expecting 200."""
    status, body = server.get("/healthz")
    assert status == 200, body
    result: dict[str, Any] = json.loads(body)
    return result


def answering(server: ServerProcess, tries: int = 20) -> set[int]:
    """PIDs of the workers that answered 200 to ``tries`` /healthz requests (new connections).

    A worker that has just started may answer 503 until its broker link is up.
    """
    pids = set()
    for _ in range(tries):
        status, body = server.get("/healthz")
        if status == 200:
            pids.add(json.loads(body)["pid"])
    return pids


def test_workers_share_one_port(workers2: ServerProcess) -> None:
    """Both worker processes accept on the one port, and neither is the supervisor."""
    pids = set(worker_pids(workers2).values())
    assert len(pids) == 2 and workers2.pid not in pids
    assert answering(workers2, 40) == pids


def test_killed_worker_is_restarted_and_the_server_keeps_serving(workers2: ServerProcess) -> None:
    """SIGKILL one worker: the other keeps serving, the supervisor starts a new one."""
    old = worker_pids(workers2)
    os.kill(old[0], signal.SIGKILL)

    def restarted() -> int | None:
        # every request meanwhile is served; only a brand-new worker may not be ready yet
        status, body = workers2.get("/healthz")
        assert status == 200 or json.loads(body)["pid"] not in old.values(), body
        new = worker_pids(workers2)[0]
        return new if new != old[0] else None

    new_pid = wait_for(restarted, timeout=15, what="worker 0 restarted")
    assert "(signal SIGKILL); restarting in" in workers2.log()
    wait_for(lambda: new_pid in answering(workers2), what="the new worker answering")
    assert old[0] not in answering(workers2, 40)
    assert worker_pids(workers2)[1] == old[1]
    assert scrape(workers2)["realtime_worker_restarts_total"] == 1

    async def round_trip() -> None:
        async with await Client.open(workers2.ws_url) as c:
            await c.subscribe("contest:1")
            workers2.publish({"channel": "contest:1", "type": "t", "data": {}})
            assert (await c.events(1))[0]["offset"] == 1

    asyncio.run(round_trip())


def test_sigterm_drains_every_worker(workers2: ServerProcess) -> None:
    """SIGTERM to the supervisor: every client gets 1012, workers exit, the parent exits 0."""
    pids = list(worker_pids(workers2).values())

    async def scenario() -> list[int | None]:
        clients = [await Client.open(workers2.ws_url) for _ in range(6)]
        for c in clients:
            await c.subscribe("contest:1")
        started = time.monotonic()
        workers2.signal(signal.SIGTERM)
        codes = await asyncio.gather(*(c.closed_code(timeout=8) for c in clients))
        assert time.monotonic() - started < 5
        return list(codes)

    assert asyncio.run(scenario()) == [1012] * 6
    assert workers2.proc is not None
    assert workers2.proc.wait(6) == 0
    assert not any(pid_alive(pid) for pid in pids)
    assert "stopped (exit code 0)" in workers2.log()


def test_metrics_add_up_across_workers(workers2: ServerProcess) -> None:
    """Whichever worker answers /metrics, it reports the totals of both."""

    async def scenario() -> None:
        clients: list[Client] = []
        try:
            # open connections until both workers hold some (the kernel picks the worker)
            for _ in range(60):
                clients.append(await Client.open(workers2.ws_url))
                counts = {h["pid"]: h["connections"] for h in map(health_of, range(10))}
                if len(counts) == 2 and all(counts.values()):
                    break
            counts = wait_for(lambda: per_worker_connections(workers2), what="both counts")
            assert sum(counts.values()) == len(clients) and all(counts.values()), counts
            for i in range(4):
                workers2.publish({"channel": "contest:3", "type": "t", "data": {"i": i}})
            for _ in range(10):  # scrapes land on both workers
                metrics = scrape(workers2)
                assert metrics["realtime_connections"] == len(clients)
                assert metrics["realtime_published_total"] == 4
                assert metrics["realtime_workers"] == 2
                assert metrics["realtime_broker_up"] == 1
        finally:
            for c in clients:
                await c.ws.close()

    def health_of(_: int) -> dict[str, Any]:
        return health(workers2)

    asyncio.run(scenario())


def per_worker_connections(server: ServerProcess) -> dict[int, int] | None:
    """{pid: open connections} once /healthz was answered by both workers."""
    counts = {h["pid"]: h["connections"] for h in (health(server) for _ in range(20))}
    return counts if len(counts) == 2 else None


def test_workers_refuse_the_memory_broker() -> None:
    """memory:// is per process: ``--workers 2`` on it exits 2 with one line."""
    proc = subprocess.run(
        [sys.executable, "-m", "realtime", "serve", "--workers", "2", "--port", str(free_port())],
        env=server_env(broker_url="memory://"),
        cwd=str(ROOT),
        capture_output=True,
        timeout=20,
    )
    assert proc.returncode == 2
    lines = proc.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "redis:// or amqp://" in lines[0], lines
