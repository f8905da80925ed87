"""The load generator against a real ``realtime serve --dev``: 50 connections, 20 events."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, TEST_API_KEY, ServerProcess, free_port, server_env

CONNECTIONS = 50
EVENTS = 20


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Run the documented loadgen command once against a dev server; yield its JSON record."""
    tmp: Path = tmp_path_factory.mktemp("loadgen")
    server = ServerProcess(
        port=free_port(),
        env=server_env(log_level="WARNING"),
        args=["--dev"],
        log_path=tmp / "server.log",
    )
    try:
        server.start()
        out = tmp / "rounds.jsonl"
        cmd = [
            sys.executable, "-m", "bench.loadgen", "--url", server.ws_url,
            "--connections", str(CONNECTIONS), "--events", str(EVENTS), "--rate", "0",
            "--publish", "http", "--api-key", TEST_API_KEY, "--grace", "20",
            "--server-pid", str(server.pid), "--json", str(out), "--target", "smoke",
        ]  # fmt: skip
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=90)
        assert out.exists(), f"no result:\n{proc.stdout}\n{proc.stderr}\n{server.log()}"
        record: dict[str, Any] = json.loads(out.read_text().splitlines()[-1])
        record["_exit"] = proc.returncode
        record["_stderr"] = proc.stderr
        yield record
    finally:
        server.stop(timeout=10)


def test_every_connection_gets_every_event_once(run: dict[str, Any]) -> None:
    """All 50 connections receive all 20 events: none lost, none duplicated."""
    assert run["connections"] == CONNECTIONS
    assert (run["lost"], run["duplicates"]) == (0, 0)
    assert run["deliveries"] == run["expected"] == CONNECTIONS * EVENTS


def test_exit_status_is_zero_when_nothing_is_lost(run: dict[str, Any]) -> None:
    """The command exits 0 and prints the human table after a clean run."""
    assert run["_exit"] == 0, run["_stderr"]
    assert "cpu µs/deliv" in run["_stderr"]


def test_server_cost_and_memory_are_measured(run: dict[str, Any]) -> None:
    """Server CPU per delivery and RSS per connection come from /proc and are positive."""
    assert run["server_cpu_us_per_delivery"] > 0
    assert run["server_cpu_s"] > 0
    assert run["rss_per_conn_kb"] is not None


def test_latency_percentiles_are_ordered(run: dict[str, Any]) -> None:
    """Latency figures are positive and p50 <= p99 <= max."""
    assert 0 < run["latency_ms_p50"] <= run["latency_ms_p99"] <= run["latency_ms_max"]
    assert run["deliveries_per_s"] > 0
