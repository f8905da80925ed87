"""Shared fixtures: broker URLs, unique prefixes, real server processes.

Brokers: ``REALTIME_TEST_REDIS_URL`` (default redis://127.0.0.1:6379/0) and
``REALTIME_TEST_AMQP_URL`` (default amqp://guest:guest@127.0.0.1:5672/%2F); ``scripts/test``
starts private instances when none answers. A test that needs a broker that is not there
fails under ``CI=true`` and is skipped (with the reason) elsewhere.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("REALTIME_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("REALTIME_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
TEST_SECRET = "test-secret-0123456789abcdef0123456789"
TEST_API_KEY = "test-api-key"


def _answers(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1.0):
        return True
    return False


def require_service(url: str, default_port: int) -> str:
    """Return ``url`` if its host:port answers; fail under CI, else skip."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if _answers(parts.hostname or "127.0.0.1", parts.port or default_port):
        return url
    message = f"{url.split('@')[-1]} does not answer (run scripts/test to start one)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)
    raise AssertionError  # unreachable


@pytest.fixture
def redis_url() -> str:
    """URL of a live Redis (shared: always use ``prefix``)."""
    return require_service(REDIS_URL, 6379)


@pytest.fixture
def amqp_url() -> str:
    """URL of a live RabbitMQ (shared: use a unique exchange)."""
    return require_service(AMQP_URL, 5672)


@pytest.fixture
def exchange(amqp_url: str) -> Iterator[str]:
    """A unique AMQP exchange name, deleted after the test.

    Request it before ``server_factory`` so that the servers stop first.
    """
    name = f"rt-test-{uuid.uuid4().hex[:10]}"
    yield name
    with contextlib.suppress(Exception):
        import pika

        connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        try:
            connection.channel().exchange_delete(name)
        finally:
            connection.close()


@pytest.fixture
def prefix() -> Iterator[str]:
    """A Redis key prefix unique to this test; its keys are deleted afterwards."""
    value = f"rtt:{uuid.uuid4().hex[:10]}:"
    yield value
    with contextlib.suppress(Exception):
        import redis

        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
        keys = list(client.scan_iter(match=f"{value}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    """A real ``python -m realtime serve`` child process."""

    port: int
    env: dict[str, str]
    args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, wait_healthy: bool = True, timeout: float = 15.0) -> ServerProcess:
        assert self.log_path is not None
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "realtime", "serve", "--port", str(self.port), *self.args],
            env=self.env,
            cwd=str(ROOT),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.wait_ready(healthy=wait_healthy, timeout=timeout)
        return self

    def wait_ready(self, healthy: bool = True, timeout: float = 15.0) -> None:
        """Wait until /healthz answers (200 when ``healthy``, any status otherwise)."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                status, _ = self.get("/healthz")
                if status == 200 or not healthy:
                    return
                last = status
            except OSError as exc:
                last = exc
            time.sleep(0.05)
        raise TimeoutError(f"server not ready ({last}):\n{self.log()}")

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        request = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def publish(self, *envelopes: dict[str, Any], key: str = TEST_API_KEY) -> dict[str, Any]:
        """POST envelopes to /api/publish; return the decoded answer (raises on non-200)."""
        body = json.dumps(list(envelopes)).encode()
        request = urllib.request.Request(
            self.url + "/api/publish",
            data=body,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            result: dict[str, Any] = json.loads(response.read())
            return result

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, wait, then SIGKILL; return the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL (a crash)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def server_env(**settings: str) -> dict[str, str]:
    """Environment for a server process: this env minus REALTIME_*, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REALTIME_")}
    env.update(
        {
            "REALTIME_SECRET": TEST_SECRET,
            "REALTIME_API_KEY": TEST_API_KEY,
            "REALTIME_LOG_LEVEL": "INFO",
            "REALTIME_UNSUBSCRIBE_GRACE": "0.2",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update({f"REALTIME_{k.upper()}": v for k, v in settings.items()})
    return env


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Any]:
    """Start real server processes: ``server_factory(broker_url=..., **settings)``.

    Every process is stopped (SIGTERM, then SIGKILL) when the test ends, pass or fail.
    """
    started: list[ServerProcess] = []

    def make(
        *,
        port: int | None = None,
        args: list[str] | None = None,
        start: bool = True,
        **settings: str,
    ) -> ServerProcess:
        server = ServerProcess(
            port=port or free_port(),
            env=server_env(**settings),
            args=list(args or []),
            log_path=tmp_path / f"server-{len(started)}.log",
        )
        started.append(server)
        if start:
            server.start()
        return server

    yield make
    for server in started:
        server.stop(timeout=10)


@pytest.fixture
def memory_server(server_factory: Any) -> ServerProcess:
    """A server with the embedded memory broker."""
    server: ServerProcess = server_factory()
    return server


@pytest.fixture
def redis_server(server_factory: Any, redis_url: str, prefix: str) -> ServerProcess:
    """A server on the shared Redis with a unique prefix."""
    server: ServerProcess = server_factory(broker_url=redis_url, redis_prefix=prefix)
    return server


def make_token(sub: str, channels: list[str] | None = None, ttl: float = 3600, **extra: Any) -> str:
    """Mint a connection token signed with the test secret."""
    import jwt

    claims: dict[str, Any] = {"sub": sub, "exp": int(time.time() + ttl), **extra}
    if channels is not None:
        claims["channels"] = channels
    return jwt.encode(claims, TEST_SECRET, algorithm="HS256")
