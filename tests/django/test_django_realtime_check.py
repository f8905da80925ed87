"""``realtime_check`` end to end: a real server per case, the real command, one line per mistake.

Each case starts a server configured the way the mistake needs, points ``REALTIME`` at it,
and runs the command in-process: the probe really connects, authenticates, subscribes,
publishes through the configured transport and waits for the event.
"""

from __future__ import annotations

import io
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import bridge_sample_settings as sample
import pytest
import redis
from bridge_helpers import RealtimeOverride, RealtimeServer, start_server
from django.core.management import call_command
from django.core.management.base import CommandError

from tests.conftest import AMQP_URL, require_service

StartServer = Callable[..., RealtimeServer]


@pytest.fixture
def servers() -> Iterator[StartServer]:
    """Start servers with extra environment; every one is stopped after the test."""
    started: list[RealtimeServer] = []

    def start(**env: str) -> RealtimeServer:
        server = start_server({f"REALTIME_{k.upper()}": v for k, v in env.items()})
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def site(settings: Any) -> Callable[..., RealtimeOverride]:
    """Point REALTIME at a server: ``site(server, **overrides)``."""

    def point(server: RealtimeServer, **overrides: Any) -> RealtimeOverride:
        return RealtimeOverride(settings, {**sample.REALTIME, "URL": server.ws_url, **overrides})

    return point


def check(*args: str, **options: Any) -> tuple[str, str]:
    """Run realtime_check; return (stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    call_command("realtime_check", *args, stdout=out, stderr=err, **options)
    return out.getvalue(), err.getvalue()


def failure(*args: str, **options: Any) -> str:
    """Run realtime_check expecting a failure; return its one line."""
    with pytest.raises(CommandError) as info:
        check(*args, **options)
    line = str(info.value)
    assert "\n" not in line, line
    return line


@pytest.fixture
def redis_ok() -> str:
    return require_service(sample.REDIS_URL, 6379)


def test_sound_setup_passes(redis_ok: str, servers: StartServer, site: Any) -> None:
    """Server and site agree (redis, --dev for the local origin): every link ok, exit 0."""
    server = servers(broker_url=sample.REDIS_URL, redis_prefix=sample.REDIS_PREFIX, dev="1")
    site(server)
    out, err = check("--channel", "submission:1", "--channel", "contest:2")
    assert "realtime_check: ok" in out
    for link in ("server:", "namespaces:", "origin: http://localhost:8000", "secret:", "probe:"):
        assert link in out, out
    assert err == ""


def test_refused_origin_named(redis_ok: str, servers: StartServer, site: Any) -> None:
    """A server without the site's Origin in its allow-list: the origin link fails."""
    server = servers(broker_url=sample.REDIS_URL, redis_prefix=sample.REDIS_PREFIX)
    site(server)
    line = failure("--origin", "http://127.0.0.1:8000")
    assert line.startswith("origin: the server refused Origin http://127.0.0.1:8000 (403)")
    assert "REALTIME_ALLOWED_ORIGINS" in line


def test_allowed_origin_passes(redis_ok: str, servers: StartServer, site: Any) -> None:
    """The same server with the Origin allowed: ok (the origin link really was the cause)."""
    server = servers(
        broker_url=sample.REDIS_URL,
        redis_prefix=sample.REDIS_PREFIX,
        allowed_origins="https://judge.example.com",
    )
    site(server)
    assert "realtime_check: ok" in check("--origin", "https://judge.example.com")[0]


def test_wrong_secret_named(redis_ok: str, servers: StartServer, site: Any) -> None:
    """A SECRET of valid length that is not the server's: the secret link fails."""
    server = servers(broker_url=sample.REDIS_URL, redis_prefix=sample.REDIS_PREFIX, dev="1")
    site(server, SECRET="another-secret-of-valid-length-0123456789")
    line = failure()
    assert line.startswith("secret: the server rejected a token signed with REALTIME['SECRET']")
    assert "REALTIME_SECRET" in line


def test_memory_server_with_redis_site_named(
    redis_ok: str, servers: StartServer, site: Any
) -> None:
    """Server on memory://, Django publishing to Redis: a broker mismatch, not "ok"."""
    server = servers(broker_url="memory://", dev="1")
    site(server)
    line = failure("--wait", "2")
    assert line.startswith("broker mismatch: the server runs on memory://")


def test_prefix_mismatch_named(redis_ok: str, servers: StartServer, site: Any) -> None:
    """Same Redis, another key prefix: the event never reaches the server; PREFIX named."""
    server = servers(broker_url=sample.REDIS_URL, redis_prefix=sample.REDIS_PREFIX, dev="1")
    site(server, PREFIX=sample.REDIS_PREFIX + "other:")
    line = failure("--wait", "2")
    assert line.startswith("broker mismatch: REALTIME['PREFIX']")


def test_other_redis_database_named(redis_ok: str, servers: StartServer, site: Any) -> None:
    """Same prefix, another Redis database: no kind differs, the missing event is named."""
    server = servers(broker_url=sample.REDIS_URL, redis_prefix=sample.REDIS_PREFIX, dev="1")
    other_db = sample.REDIS_URL.rsplit("/", 1)[0] + "/1"
    site(server, BROKER_URL=other_db)
    try:
        line = failure("--wait", "1.5")
    finally:
        client = redis.Redis.from_url(other_db)
        keys = list(client.scan_iter(match=f"{sample.REDIS_PREFIX}*"))
        if keys:
            client.delete(*keys)
        client.close()
    assert line.startswith("broker mismatch: the probe event was published through redis")
    assert "REALTIME_BROKER_URL" in line


def test_unknown_namespace_named(redis_ok: str, servers: StartServer, site: Any) -> None:
    """A channel the site publishes to in a namespace the server lacks: the namespace link."""
    server = servers(broker_url=sample.REDIS_URL, redis_prefix=sample.REDIS_PREFIX, dev="1")
    site(server)
    line = failure("--channel", "submission:1", "--channel", "notify:1")
    assert line.startswith("namespace: the realtime server at")
    assert "no namespace 'notify'" in line and "[namespaces.notify]" in line


@pytest.fixture
def amqp_exchange() -> Iterator[str]:
    url = require_service(AMQP_URL, 5672)
    name = f"rt-check-{uuid.uuid4().hex[:10]}"
    yield name
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        connection.channel().exchange_delete(name)
    finally:
        connection.close()


def test_amqp_without_redis_url_named(
    redis_ok: str, amqp_exchange: str, servers: StartServer, site: Any
) -> None:
    """Issue 13 defect 15: the server numbers in Redis, the site sends raw AMQP envelopes."""
    server = servers(
        broker_url=AMQP_URL,
        redis_url=sample.REDIS_URL,
        redis_prefix=sample.REDIS_PREFIX,
        amqp_exchange=amqp_exchange,
        dev="1",
    )
    site(server, BROKER_URL=AMQP_URL, EXCHANGE=amqp_exchange)
    try:
        out, err = check("--wait", "2")
    except CommandError as exc:
        line = str(exc)  # the server drops raw envelopes: the probe fails, naming why
        assert line.startswith("broker mismatch: the server numbers events in Redis")
        assert "REALTIME['REDIS_URL'] is unset" in line
    else:
        # a server that numbers raw envelopes itself delivers; the mismatch is still named
        assert "realtime_check: ok" in out
        assert "REALTIME['REDIS_URL'] is unset" in err


def test_amqp_with_redis_url_passes(
    redis_ok: str, amqp_exchange: str, servers: StartServer, site: Any
) -> None:
    """The same server with REDIS_URL set on the site: ok."""
    server = servers(
        broker_url=AMQP_URL,
        redis_url=sample.REDIS_URL,
        redis_prefix=sample.REDIS_PREFIX,
        amqp_exchange=amqp_exchange,
        dev="1",
    )
    site(server, BROKER_URL=AMQP_URL, EXCHANGE=amqp_exchange, REDIS_URL=sample.REDIS_URL)
    out, err = check()
    assert "realtime_check: ok" in out and err == ""


def test_server_down_named(site: Any) -> None:
    """Nothing listens at URL: the server link fails with the address."""
    from bridge_helpers import free_port

    port = free_port()

    class Down:
        ws_url = f"ws://127.0.0.1:{port}/ws"

    site(Down)
    line = failure()
    assert line.startswith(f"server: cannot reach http://127.0.0.1:{port}")


def test_unhealthy_server_named(server_factory: Any, site: Any) -> None:
    """The server answers but its broker is down: the server link fails with the reason."""
    from bridge_helpers import free_port

    server = server_factory(broker_url=f"redis://127.0.0.1:{free_port()}/0", start=False)
    server.start(wait_healthy=False)
    site(server)
    line = failure()
    assert line.startswith("server: unhealthy (503)") and "broker not connected" in line


def test_publish_warns_once_about_unknown_namespace(
    redis_ok: str, servers: StartServer, site: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """publish("notify:1") goes out, and the bridge warns once that the server lacks it."""
    from django_bridge import publish

    server = servers(broker_url=sample.REDIS_URL, redis_prefix=sample.REDIS_PREFIX)
    site(server)
    caplog.set_level(logging.WARNING, logger="django_bridge.serverinfo")
    for i in range(3):
        publish("notify:1", "note", {"i": i})
        publish("contest:1", "note", {"i": i})
    deadline = time.monotonic() + 10
    while not caplog.records and time.monotonic() < deadline:
        time.sleep(0.05)
    publish("notify:2", "note", {})
    time.sleep(0.2)  # a second warning, if one were due, has had its chance
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1, messages
    assert "no namespace 'notify'" in messages[0] and "unknown_channel" in messages[0]
