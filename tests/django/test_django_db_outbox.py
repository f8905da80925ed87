"""The outbox and its relay on real PostgreSQL and MariaDB databases.

Each test creates its own ``rt_test_<random>`` database (tests/django/databases.py) and drops
it afterwards. Relays run as real ``realtime_relay`` processes (tests/django/relay_process.py)
against that database, sending to the session's realtime server on Redis.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from bridge_helpers import (
    RealtimeOverride,
    RealtimeServer,
    WsClient,
    free_port,
    start_server,
    unique_channel,
)
from databases import VENDORS, django_alias, django_config, scratch_database
from django.db import connections, transaction

from django_bridge import publish
from django_bridge.models import OutboxEvent, RelayLease
from django_bridge.relay import LEASE_NAME, pending_count, relay_batch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
# the compressed "minutes" of the broker-outage test: seconds the broker stays down (the
# slow-marked variant takes three real minutes)
OUTAGE = float(os.environ.get("RT_TEST_OUTAGE", "12"))


class Db:
    """One scratch database: its vendor, name and Django alias in this process."""

    def __init__(self, vendor: str, name: str, alias: str) -> None:
        self.vendor, self.name, self.alias = vendor, name, alias

    @property
    def config(self) -> dict[str, Any]:
        return django_config(self.vendor, self.name)


@pytest.fixture(params=VENDORS)
def db(request: pytest.FixtureRequest, django_db_blocker: Any) -> Iterator[Db]:
    """A fresh, migrated database on PostgreSQL or MariaDB, dropped after the test."""
    vendor = request.param
    with (
        scratch_database(vendor) as name,
        django_db_blocker.unblock(),
        django_alias(vendor, name) as alias,
    ):
        yield Db(vendor, name, alias)


@pytest.fixture
def outbox(realtime_settings: RealtimeOverride) -> RealtimeOverride:
    realtime_settings.update(OUTBOX=True, OUTBOX_BATCH=10, OUTBOX_POLL=0.05)
    return realtime_settings


class Relays:
    """Relay processes of one test, stopped by PID when it ends."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(
        self, db: Db, realtime: dict[str, Any], *args: str, die_after: int | None = None
    ) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "RT_TEST_DATABASE": json.dumps(db.config),
            "RT_TEST_REALTIME": json.dumps(realtime),
            "PYTHONUNBUFFERED": "1",
        }
        if die_after is not None:
            env["RT_TEST_DIE_AFTER_SENDS"] = str(die_after)
        log = self.tmp / f"relay-{len(self.procs)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, str(HERE / "relay_process.py"), "-v", "2", *args],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(proc)
        return proc

    def log(self, index: int) -> str:
        return (self.tmp / f"relay-{index}.log").read_text(errors="replace")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@pytest.fixture
def relays(tmp_path: Path) -> Iterator[Relays]:
    started = Relays(tmp_path)
    yield started
    started.stop()


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s: {what}")
        time.sleep(0.05)


def numbers(events: list[dict[str, Any]]) -> list[int]:
    return [e["data"]["n"] for e in events]


def assert_no_more(ws: WsClient, channel: str) -> None:
    with pytest.raises(TimeoutError):
        ws.next(lambda m: m["op"] == "event" and m["channel"] == channel, timeout=0.5)


def test_standby_relay_skips_the_locked_lease(db: Db, outbox: RealtimeOverride) -> None:
    """While one relay holds the lease, another returns at once (SKIP LOCKED), not queued."""
    assert connections[db.alias].features.has_select_for_update_skip_locked
    publish(unique_channel(), "t", {"n": 1}, using=db.alias)
    RelayLease.objects.using(db.alias).get_or_create(name=LEASE_NAME)
    result: list[int] = []

    def standby() -> None:
        try:
            result.append(relay_batch(db.alias))
        finally:
            connections[db.alias].close()

    with transaction.atomic(using=db.alias):
        RelayLease.objects.using(db.alias).select_for_update().get(name=LEASE_NAME)
        thread = threading.Thread(target=standby)
        thread.start()
        thread.join(20)  # a relay that queued on the lock would still be waiting here
        assert not thread.is_alive(), "the standby relay waited for the lease"
    assert result == [0]
    assert pending_count(db.alias) == 1


def test_several_relays_send_every_event_once_in_order(
    db: Db, outbox: RealtimeOverride, bridge_server: RealtimeServer, relays: Relays
) -> None:
    """Three relay processes at once, while events keep coming: each once, in order."""
    channels = [unique_channel() for _ in range(3)]
    ws = WsClient(bridge_server.ws_url)
    try:
        for channel in channels:
            ws.subscribe(channel)
        for _ in range(3):
            relays.start(db, outbox._settings.REALTIME, "--batch", "7")
        for n in range(40):
            with transaction.atomic(using=db.alias):
                for channel in channels:
                    publish(channel, "contest.tick", {"n": n}, using=db.alias)
            if n % 10 == 9:
                time.sleep(0.1)  # let the relays take turns mid-stream
        for channel in channels:
            events = ws.events(channel, 40, timeout=30)
            assert numbers(events) == list(range(40))
            assert [e["offset"] for e in events] == list(range(1, 41))
        for channel in channels:
            assert_no_more(ws, channel)
    finally:
        ws.close()
    wait_until(lambda: pending_count(db.alias) == 0, 10, "outbox drained")
    assert all(proc.poll() is None for proc in relays.procs), "a relay died"


def test_relay_killed_mid_batch_resends_it_once(
    db: Db, outbox: RealtimeOverride, bridge_server: RealtimeServer, relays: Relays
) -> None:
    """A relay SIGKILLed after the broker took a batch but before its commit: sent once."""
    channel = unique_channel()
    for n in range(30):
        publish(channel, "contest.tick", {"n": n}, using=db.alias)
    ws = WsClient(bridge_server.ws_url)
    try:
        ws.subscribe(channel)
        doomed = relays.start(db, outbox._settings.REALTIME, "--batch", "10", die_after=2)
        doomed.wait(30)
        assert doomed.returncode == -signal.SIGKILL, relays.log(0)
        first = ws.events(channel, 20)
        # the second batch reached the broker, but its rows were rolled back with the relay
        assert pending_count(db.alias) == 20
        relays.start(db, outbox._settings.REALTIME, "--batch", "10")
        rest = ws.events(channel, 10, timeout=30)
        assert_no_more(ws, channel)
    finally:
        ws.close()
    events = first + rest
    assert numbers(events) == list(range(30))
    assert [e["offset"] for e in events] == list(range(1, 31))
    wait_until(lambda: pending_count(db.alias) == 0, 10, "outbox drained")


class PrivateRedis:
    """A redis-server of this test only, with an append-only file so a restart keeps data."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.dir = tmp
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                str(self.dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        client = redis.Redis.from_url(self.url)
        wait_until(lambda: _pings(client), 10, "private redis up")
        client.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _pings(client: Any) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    if subprocess.run(["which", "redis-server"], capture_output=True).returncode != 0:
        pytest.fail("redis-server is not installed (scripts/test installs it)")
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


def _outage(
    db: Db,
    outbox: RealtimeOverride,
    relays: Relays,
    redis: PrivateRedis,
    outage: float,
    max_backoff: float,
) -> None:
    server = start_server({"REALTIME_BROKER_URL": redis.url, "REALTIME_REDIS_PREFIX": "rt:"})
    try:
        outbox.update(BROKER_URL=redis.url, PREFIX="rt:")
        channel = unique_channel()
        ws = WsClient(server.ws_url)
        try:
            ws.subscribe(channel)
            relay = relays.start(db, outbox._settings.REALTIME, "--max-backoff", str(max_backoff))
            for n in range(10):
                publish(channel, "contest.tick", {"n": n}, using=db.alias)
            before = ws.events(channel, 10, timeout=20)
            redis.stop()  # the outage
            started = time.monotonic()
            for n in range(10, 40):
                with transaction.atomic(using=db.alias):
                    publish(channel, "contest.tick", {"n": n}, using=db.alias)
            time.sleep(max(0.0, outage - (time.monotonic() - started)))
            assert pending_count(db.alias) == 30
            assert relay.poll() is None, relays.log(0)
            redis.start()  # back, with its data (append-only file)
            after = ws.events(channel, 30, timeout=60)
            assert_no_more(ws, channel)
        finally:
            ws.close()
    finally:
        server.stop()
    events = before + after
    assert numbers(events) == list(range(40))
    assert [e["offset"] for e in events] == list(range(1, 41))
    retries = relays.log(0).count("retrying")
    assert retries >= 3, relays.log(0)  # it kept trying through the whole outage


def test_relay_outlasts_a_broker_outage(
    db: Db, outbox: RealtimeOverride, relays: Relays, private_redis: PrivateRedis
) -> None:
    """Events published while the broker is down for a while arrive once, in order, after.

    "Minutes" compressed: OUTAGE seconds (12) with the relay's back-off capped at 1 s, so it
    fails and retries about as many times as in several minutes at the default 30 s cap.
    """
    _outage(db, outbox, relays, private_redis, OUTAGE, 1.0)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_relay_outlasts_a_three_minute_broker_outage(
    db: Db, outbox: RealtimeOverride, relays: Relays, private_redis: PrivateRedis
) -> None:
    """The same with a real three-minute outage and the default 30 s back-off cap."""
    _outage(db, outbox, relays, private_redis, 180.0, 30.0)


class Rollback(Exception):
    pass


def _nested_blocks(rng: random.Random, alias: str, channel: str) -> list[int]:
    """Publish from random nested atomic blocks, some rolled back; return what must arrive."""
    counter = iter(range(10_000))

    def block(depth: int) -> list[int]:
        survivors: list[int] = []
        with transaction.atomic(using=alias):
            for _ in range(rng.randint(1, 4)):
                if depth < 3 and rng.random() < 0.4:
                    # a savepoint rolled back: its events must never be sent
                    with contextlib.suppress(Rollback):
                        survivors += block(depth + 1)
                else:
                    n = next(counter)
                    publish(channel, "contest.tick", {"n": n}, using=alias)
                    survivors.append(n)
            if rng.random() < 0.25:
                raise Rollback
        return survivors

    expected: list[int] = []
    for _ in range(4):
        with contextlib.suppress(Rollback):
            expected += block(0)
    return expected


@pytest.mark.parametrize("mode", ["on_commit", "outbox"])
def test_nested_atomic_and_savepoint_rollbacks(
    db: Db, realtime_settings: RealtimeOverride, bridge_server: RealtimeServer, mode: str
) -> None:
    """Seeded random trees of atomic blocks: exactly the committed events arrive, in order."""
    if mode == "outbox":
        realtime_settings.update(OUTBOX=True, OUTBOX_BATCH=10)
    for seed in range(4):
        rng = random.Random(seed)
        channel = unique_channel()
        ws = WsClient(bridge_server.ws_url)
        try:
            ws.subscribe(channel)
            expected = _nested_blocks(rng, db.alias, channel)
            if mode == "outbox":
                assert OutboxEvent.objects.using(db.alias).filter(channel=channel).count() == len(
                    expected
                ), f"seed {seed}"
                while pending_count(db.alias):
                    relay_batch(db.alias)
            events = ws.events(channel, len(expected))
            assert_no_more(ws, channel)
        finally:
            ws.close()
        assert numbers(events) == expected, f"seed {seed}"
