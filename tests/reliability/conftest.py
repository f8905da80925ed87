"""Fixtures of the reliability suite: a private Redis, a high fd limit, small helpers.

The fault tests stop, restart and kill Redis, so they use a ``redis-server`` of their own
on a free port (never the shared one), stopped by PID when the test ends.
"""

from __future__ import annotations

import contextlib
import resource
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port


def raise_nofile() -> int:
    """Raise this process's open-file limit to the hard limit; children inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


raise_nofile()  # server_factory's children (Popen) inherit the raised limit


class PrivateRedis:
    """A ``redis-server`` child without persistence: a restart loses every key."""

    def __init__(self, port: int, log_path: Path) -> None:
        self.port = port
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed"
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.command("PING") == "+PONG":
                return
            time.sleep(0.02)
        raise TimeoutError(f"private redis on {self.port} did not start")

    def stop(self) -> None:
        """Stop by PID (SIGKILL: an outage, not a clean shutdown)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def restart(self, down_for: float = 0.0) -> None:
        self.stop()
        time.sleep(down_for)  # the outage itself is what is under test
        self.start()

    def command(self, *args: str) -> str | None:
        """Send one inline command; return the first reply line (None if unreachable)."""
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as sock,
        ):
            sock.sendall((" ".join(args) + "\r\n").encode())
            return sock.recv(4096).split(b"\r\n", 1)[0].decode()
        return None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A private redis-server on a free port, stopped by PID afterwards."""
    server = PrivateRedis(free_port(), tmp_path / "redis.log")
    server.start()
    yield server
    server.stop()


def wait_for(predicate: object, timeout: float = 10.0, interval: float = 0.05) -> None:
    """Poll ``predicate()`` until it is true, or fail after ``timeout`` seconds."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


def rss_bytes(pid: int) -> int:
    """Resident memory of a process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def fd_count(pid: int) -> int:
    """Open file descriptors of a process."""
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def metric(server: object, name: str) -> float:
    """Return the value of an unlabelled Prometheus sample from a server's /metrics."""
    status, body = server.get("/metrics")  # type: ignore[attr-defined]
    assert status == 200
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no metric {name}")


class PrivateRabbit:
    """A RabbitMQ node of its own (name, port and data dir under ``base``), no plugins.

    Started in a new session so that stopping it kills the whole tree (the start script,
    beam.smp and its helpers) by that session's process group, never by name.
    """

    def __init__(self, port: int, base: Path) -> None:
        self.port = port
        self.base = base
        self.node = f"rttest{port}@localhost"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    def _env(self) -> dict[str, str]:
        base = str(self.base)
        return {
            "PATH": "/usr/bin:/bin:/usr/sbin:/sbin",
            "HOME": base,  # its own Erlang cookie
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(
                self.port + 20000 if self.port < 45000 else self.port - 20000
            ),
            "RABBITMQ_MNESIA_BASE": f"{base}/mnesia",
            "RABBITMQ_LOG_BASE": f"{base}/log",
            "RABBITMQ_ENABLED_PLUGINS_FILE": f"{base}/plugins",
            "RABBITMQ_CONFIG_FILE": f"{base}/none",
            "RABBITMQ_ADVANCED_CONFIG_FILE": f"{base}/advanced.config",
            "RABBITMQ_LOGS": "-",
        }

    def start(self, timeout: float = 30.0) -> None:
        import os

        binary = "/usr/lib/rabbitmq/bin/rabbitmq-server"
        if not os.path.exists(binary):
            if os.environ.get("CI") == "true":
                pytest.fail("rabbitmq-server is not installed")
            pytest.skip("rabbitmq-server is not installed")
        self.base.mkdir(parents=True, exist_ok=True)
        with (self.base / "out.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [binary],
                env=self._env(),
                cwd=self.base,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5),
            ):
                return
            time.sleep(0.1)
        raise TimeoutError(f"private RabbitMQ on {self.port} did not start")

    def stop(self) -> None:
        """Kill the node's process group (an outage, not a clean shutdown)."""
        import os
        import signal

        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def close_connections(self) -> str:
        """Force-close every client connection (``rabbitmqctl close_all_connections``)."""
        done = subprocess.run(
            [
                "/usr/lib/rabbitmq/bin/rabbitmqctl",
                "-n",
                self.node,
                "close_all_connections",
                "reliability test",
            ],
            env=self._env(),
            capture_output=True,
            timeout=30,
            check=False,
        )
        return (done.stdout + done.stderr).decode(errors="replace")


@pytest.fixture
def private_rabbit(tmp_path: Path) -> Iterator[PrivateRabbit]:
    """A private RabbitMQ node on a free port, killed by process group afterwards."""
    node = PrivateRabbit(free_port(), tmp_path / "rabbit")
    node.start()
    yield node
    node.stop()
