"""Test helpers: start/stop a real realtime server, a small synchronous WebSocket client."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bridge_sample_settings as sample
import orjson
from websockets.sync.client import ClientConnection, connect

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """Return a TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RealtimeServer:
    """A running ``python -m realtime serve`` process."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def stop(self) -> None:
        """Terminate by PID and wait; kill if it does not exit in time."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def start_server(extra_env: dict[str, str], timeout: float = 20.0) -> RealtimeServer:
    """Start a server with this run's secret and API key; wait for ``/healthz`` 200."""
    port = free_port()
    env = {
        **os.environ,
        "REALTIME_SECRET": sample.SECRET,
        "REALTIME_API_KEY": sample.API_KEY,
        "REALTIME_PORT": str(port),
        "REALTIME_HOST": "127.0.0.1",
        **extra_env,
    }
    log = Path(sample._DB_DIR) / f"server-{uuid.uuid4().hex[:6]}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "realtime", "serve", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = RealtimeServer(process=process, port=port, log=log, env=extra_env)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"realtime server exited ({process.returncode}): {log.read_text()}")
        try:
            with urllib.request.urlopen(f"{server.http_url}/healthz", timeout=1) as resp:
                if resp.status == 200:
                    return server
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"realtime server not healthy in {timeout}s: {log.read_text()}")
        time.sleep(0.05)


class RealtimeOverride:
    """Change REALTIME by assigning a new dict, so Django's setting_changed fires."""

    def __init__(self, settings: Any, initial: dict[str, Any]) -> None:
        self._settings = settings
        settings.REALTIME = initial

    def __getitem__(self, key: str) -> Any:
        return self._settings.REALTIME[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self._settings.REALTIME.get(key, default)

    def __setitem__(self, key: str, value: Any) -> None:
        self.update(**{key: value})

    def update(self, **values: Any) -> None:
        self._settings.REALTIME = {**self._settings.REALTIME, **values}


class WsClient:
    """A blocking WebSocket client that speaks the contract (PROTOCOL.md sections 3-4)."""

    def __init__(self, url: str, token: str | None = None) -> None:
        self._stack = contextlib.ExitStack()
        self.conn: ClientConnection = self._stack.enter_context(connect(url, open_timeout=5))
        self.pending: list[dict[str, Any]] = []
        welcome = self.next(lambda m: True)
        assert welcome["op"] == "welcome", welcome
        if token is not None:
            self.send({"op": "auth", "token": token})
            authed = self.next(lambda m: m["op"] in ("authed", "error"))
            assert authed["op"] == "authed", authed

    def send(self, message: dict[str, Any]) -> None:
        self.conn.send(orjson.dumps(message).decode())

    def next(self, match: Any, timeout: float = 5.0) -> dict[str, Any]:
        """Return the next message for which ``match(msg)`` is true (others are kept)."""
        deadline = time.monotonic() + timeout
        while True:
            for i, msg in enumerate(self.pending):
                if match(msg):
                    return self.pending.pop(i)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no matching message in {timeout}s; kept {self.pending}")
            frame = self.conn.recv(timeout=remaining)
            for line in str(frame).split("\n"):
                if line.strip():
                    self.pending.append(orjson.loads(line))

    def subscribe(self, channel: str, since: dict[str, Any] | None = None) -> dict[str, Any]:
        command: dict[str, Any] = {"op": "subscribe", "channel": channel}
        if since is not None:
            command["since"] = since
        self.send(command)
        reply = self.next(
            lambda m: m.get("channel") == channel and m["op"] in ("subscribed", "error")
        )
        assert reply["op"] == "subscribed", reply
        return reply

    def events(self, channel: str, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Wait for ``count`` events of ``channel``; return them in arrival order."""
        return [
            self.next(lambda m: m["op"] == "event" and m["channel"] == channel, timeout)
            for _ in range(count)
        ]

    def close(self) -> None:
        self._stack.close()


def unique_channel(namespace: str = "contest") -> str:
    """Return a fresh channel name (tests share one server and one Redis prefix)."""
    return f"{namespace}:t{uuid.uuid4().hex[:12]}"
