"""Where Django runs: gunicorn gevent workers, a pre-fork after import, a Celery worker.

Each test runs real processes (gunicorn, a forking script, ``celery worker``) with the
sample project and checks, from a WebSocket subscriber of the session's realtime server,
that every event arrived exactly once (and offsets have no gap): no connection was shared
across a fork or a greenlet.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bridge_helpers import RealtimeServer, WsClient, free_port, start_server, unique_channel

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def realtime_env(server: RealtimeServer, transport: str, sample: Any) -> dict[str, str]:
    """Environment of a Django process publishing to ``server`` over ``transport``."""
    settings = dict(sample.REALTIME)
    if transport == "http":
        settings["BROKER_URL"] = server.http_url
    settings["URL"] = server.ws_url
    return {**os.environ, "RT_TEST_REALTIME": json.dumps(settings), "PYTHONUNBUFFERED": "1"}


def stop(proc: subprocess.Popen[bytes], timeout: float = 15.0, sig: int = signal.SIGTERM) -> None:
    """Signal by PID (SIGTERM by default), then SIGKILL."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def exactly_once(events: list[dict[str, Any]], expected: set[tuple[Any, ...]], key: Any) -> None:
    seen = [key(e["data"]) for e in events]
    assert len(seen) == len(set(seen)), "duplicates"
    assert set(seen) == expected
    offsets = sorted(e["offset"] for e in events)
    assert offsets == list(range(offsets[0], offsets[0] + len(events))), "offset gap"


@pytest.fixture
def gunicorn(bridge_server: RealtimeServer, tmp_path: Path, request: Any) -> Iterator[str]:
    """gunicorn with two gevent workers serving the sample project; yields its base URL."""
    import bridge_sample_settings as sample

    port = free_port()
    log = tmp_path / "gunicorn.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--worker-class",
                "gevent",
                "--workers",
                "2",
                "--worker-connections",
                "200",
                "--bind",
                f"127.0.0.1:{port}",
                "--chdir",
                str(HERE),
                "--timeout",
                "60",
                "server_mode_wsgi:application",
            ],
            cwd=ROOT,
            env=realtime_env(bridge_server, request.param, sample),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url + "/nothing", timeout=2)
            except urllib.error.HTTPError:
                break  # 404 from Django: a worker is up
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"gunicorn did not start:\n{log.read_text()}") from None
                time.sleep(0.1)
        yield url
    finally:
        stop(proc)


@pytest.mark.parametrize("gunicorn", ["redis", "http"], indirect=True)
def test_gunicorn_gevent_workers_publish_from_many_greenlets(
    gunicorn: str, bridge_server: RealtimeServer, request: pytest.FixtureRequest
) -> None:
    """4 concurrent requests x 25 greenlets x 4 events: 400 events, each once, no gap."""
    channel = unique_channel()
    ws = WsClient(bridge_server.ws_url)
    answers: list[dict[str, Any]] = []
    errors: list[BaseException] = []

    def burst(tag: str) -> None:
        try:
            query = f"channel={channel}&tag={tag}&tasks=25&n=4"
            with urllib.request.urlopen(f"{gunicorn}/burst?{query}", timeout=60) as response:
                answers.append(json.loads(response.read()))
        except BaseException as exc:
            errors.append(exc)

    try:
        ws.subscribe(channel)
        threads = [threading.Thread(target=burst, args=(f"r{i}",)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(90)
        assert not errors, errors
        events = ws.events(channel, 400, timeout=30)
        with pytest.raises(TimeoutError):
            ws.next(lambda m: m["op"] == "event", timeout=0.5)
    finally:
        ws.close()
    expected = {(f"r{i}", t, k) for i in range(4) for t in range(25) for k in range(4)}
    exactly_once(events, expected, lambda d: (d["tag"], d["task"], d["k"]))
    assert all(answer["patched"] for answer in answers), answers  # gevent really ran
    # http: one connection per greenlet; redis: one thread-safe pool per process
    per_request = 25 if request.node.callspec.params["gunicorn"] == "http" else 1
    assert [answer["transports"] for answer in answers] == [per_request] * 4, answers


@pytest.fixture(params=["redis", "http", "amqp"])
def publish_target(
    request: pytest.FixtureRequest, bridge_server: RealtimeServer
) -> Iterator[tuple[str, dict[str, str]]]:
    """(WebSocket URL, environment of a publishing process) for each transport.

    amqp: a server of its own on RabbitMQ (a unique exchange) with the Redis store.
    """
    import bridge_sample_settings as sample

    if request.param != "amqp":
        yield bridge_server.ws_url, realtime_env(bridge_server, request.param, sample)
        return
    from tests.conftest import AMQP_URL, require_service

    url = require_service(AMQP_URL, 5672)
    exchange = request.getfixturevalue("exchange")
    server = start_server(
        {
            "REALTIME_BROKER_URL": url,
            "REALTIME_AMQP_EXCHANGE": exchange,
            "REALTIME_REDIS_URL": sample.REDIS_URL,
            "REALTIME_REDIS_PREFIX": sample.REDIS_PREFIX,
        }
    )
    try:
        settings = {
            **sample.REALTIME,
            "BROKER_URL": url,
            "EXCHANGE": exchange,
            "REDIS_URL": sample.REDIS_URL,
            "URL": server.ws_url,
        }
        env = {**os.environ, "RT_TEST_REALTIME": json.dumps(settings), "PYTHONUNBUFFERED": "1"}
        yield server.ws_url, env
    finally:
        server.stop()


def test_fork_after_import_never_shares_a_connection(
    publish_target: tuple[str, dict[str, str]],
) -> None:
    """A parent that published, 4 forked children publishing, the parent again: all once."""
    ws_url, env = publish_target
    channel = unique_channel()
    ws = WsClient(ws_url)
    try:
        ws.subscribe(channel)
        result = subprocess.run(
            [sys.executable, str(HERE / "fork_publisher.py"), channel, "4", "25"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr.decode()
        report = json.loads(result.stdout.decode().strip().splitlines()[-1])
        events = ws.events(channel, 102, timeout=20)
        with pytest.raises(TimeoutError):
            ws.next(lambda m: m["op"] == "event", timeout=0.5)
    finally:
        ws.close()
    assert report == {"codes": [0, 0, 0, 0], "parent_kept_its_transport": True}
    expected = {("parent", 0), ("parent", 1)} | {
        (f"child{c}", k) for c in range(4) for k in range(25)
    }
    exactly_once(events, expected, lambda d: (d["who"], d["k"]))
    first, last = events[0]["data"], events[-1]["data"]
    assert first == {"who": "parent", "k": 0} and last == {"who": "parent", "k": 1}


@pytest.fixture
def celery_worker(
    bridge_server: RealtimeServer, redis_url_for_celery: str, tmp_path: Path
) -> Iterator[dict[str, str]]:
    """A real ``celery worker`` (prefork pool, 2 processes) on Redis under a unique prefix."""
    import bridge_sample_settings as sample

    prefix = f"rtcelery{uuid.uuid4().hex[:8]}:"
    queue = f"rt-test-{uuid.uuid4().hex[:8]}"
    env = {
        **realtime_env(bridge_server, "redis", sample),
        "RT_TEST_CELERY_BROKER": redis_url_for_celery,
        "RT_TEST_CELERY_PREFIX": prefix,
    }
    log = tmp_path / "celery.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "celery_app",
                "worker",
                "--pool",
                "prefork",
                "--concurrency",
                "2",
                "--queues",
                queue,
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "--loglevel",
                "INFO",
            ],
            cwd=HERE,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while b"ready." not in log.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"celery worker did not start:\n{log.read_text()}")
            time.sleep(0.2)
        yield {"broker": redis_url_for_celery, "prefix": prefix, "queue": queue, "log": str(log)}
    finally:
        stop(proc, timeout=20, sig=signal.SIGQUIT)  # cold shutdown: the queue is empty
        import redis

        client = redis.Redis.from_url(redis_url_for_celery)
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture
def redis_url_for_celery(redis_client: Any) -> str:
    """The shared Redis (session fixture checked it answers); Celery keys get a prefix."""
    import bridge_sample_settings as sample

    return str(sample.REDIS_URL)


def test_celery_task_publishes_on_commit(
    celery_worker: dict[str, str], bridge_server: RealtimeServer
) -> None:
    """40 tasks on a real worker (2 forked pool processes): 40 events, each once."""
    from celery import Celery

    channel = unique_channel("contest")
    client = Celery("rt_test_sender", broker=celery_worker["broker"])
    client.conf.update(
        broker_transport_options={"global_keyprefix": celery_worker["prefix"]},
        task_ignore_result=True,
    )
    ws = WsClient(bridge_server.ws_url)
    try:
        ws.subscribe(channel)
        for n in range(40):
            client.send_task("rt_test.judge", args=[channel, n], queue=celery_worker["queue"])
        events = ws.events(channel, 40, timeout=30)
        with pytest.raises(TimeoutError):
            ws.next(lambda m: m["op"] == "event", timeout=0.5)
    finally:
        ws.close()
        client.close()
    exactly_once(events, {(n,) for n in range(40)}, lambda d: (d["n"],))
    worker_pids = {e["data"]["pid"] for e in events}
    assert len(worker_pids) >= 1
    assert all(e["type"] == "judge.verdict" for e in events)
