"""The server raises its open-file limit itself and warns when the hard limit is too low."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import websockets

from tests.conftest import free_port, server_env

CHILD = """
import logging, resource, sys
logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="%(message)s")
from realtime.fdlimit import raise_open_files
print("soft", raise_open_files(int(sys.argv[1])), resource.getrlimit(resource.RLIMIT_NOFILE)[0])
"""


def _run(soft: int, hard: int, max_connections: int) -> str:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(max_connections)],
        preexec_fn=limit,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout


def test_soft_limit_raised_to_hard() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    hard = min(hard, 4096)
    out = _run(256, hard, hard - 100)
    assert f"soft {hard} {hard}" in out
    assert "below max_connections" not in out


def test_hard_limit_below_max_connections_is_named() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    hard = min(hard, 1024)
    out = _run(256, hard, 50_000)
    assert f"soft {hard} {hard}" in out
    assert "below max_connections (50000 per process) + 64" in out
    assert "REALTIME_MAX_CONNECTIONS" in out


def test_server_under_a_low_limit_refuses_with_503_and_keeps_serving(tmp_path: Path) -> None:
    """With 160 descriptors the server holds 96 connections (160 - 64) and refuses the rest
    with 503 at the handshake instead of failing ``accept`` (EMFILE) in a loop."""
    port = free_port()
    log = (tmp_path / "server.log").open("wb")

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (160, 160))

    proc = subprocess.Popen(
        [sys.executable, "-m", "realtime", "serve", "--port", str(port)],
        env=server_env(REALTIME_BROKER_URL="memory://", REALTIME_MAX_CONNECT_RATE="0"),
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=limit,
    )

    async def scenario() -> tuple[int, list[int]]:
        held, refused = [], []
        for _ in range(110):
            try:
                held.append(await websockets.connect(f"ws://127.0.0.1:{port}/ws"))
            except websockets.InvalidStatus as exc:
                refused.append(exc.response.status_code)
        count = len(held)
        for ws in held:
            await ws.close()
        return count, refused

    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            time.sleep(0.1)
        held, refused = asyncio.run(scenario())
        assert held == 96 and refused == [503] * 14, (held, refused)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as reply:
            assert reply.status == 200
    finally:
        proc.terminate()
        proc.wait(15)
        log.close()
    text = (tmp_path / "server.log").read_text()
    assert "max_connections is lowered to fit" in text and "Too many open files" not in text
