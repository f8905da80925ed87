"""`realtime loadtest` against a real server, and its loss and duplicate accounting."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from realtime.loadtest import Conn, Counts
from tests.conftest import ROOT, TEST_API_KEY, TEST_SECRET


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _event(offset: int) -> bytes:
    return b'{"op":"event","channel":"contest:l","offset":%d,"type":"t","data":{"t":1}}' % offset


def test_loss_duplicates_and_resyncs_are_told_apart() -> None:
    """A skipped offset is lost, a repeated one a duplicate, a resync is neither."""
    stats = Counts()
    conn = Conn(stats)
    conn.feed(
        _line({"op": "subscribed", "channel": "contest:l", "epoch": "E", "offset": 2, "id": 1})
    )
    conn.feed(_event(3) + b"\n" + _event(3) + b"\n" + _event(6))
    assert (stats.deliveries, stats.duplicates, stats.lost) == (2, 1, 2)
    resync = {"op": "subscribed", "channel": "contest:l", "epoch": "F", "offset": 9}
    conn.feed(_line({**resync, "recovered": False, "state": None}))
    conn.feed(_event(10))
    assert (stats.lost, stats.resyncs, conn.offset) == (2, 1, 10)
    conn.lost_link()
    missed = [json.loads(_event(11)), json.loads(_event(12))]
    conn.feed(_line({**resync, "offset": 12, "recovered": True, "missed": missed, "id": 1}))
    assert (stats.deliveries, stats.lost, stats.disconnects, conn.offset) == (5, 2, 1, 12)


def _loadtest(
    server: Any, out: Path, channel: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    """Run ``realtime loadtest`` with 200 connections from 2 processes against ``server``."""
    command = [
        *(sys.executable, "-m", "realtime", "loadtest", "--url", server.ws_url),
        *("--connections", "200", "--channel", channel, "--processes", "2"),
        *("--publish-url", server.url + "/api/publish", "--api-key", TEST_API_KEY),
        *("--duration", "3", "--grace", "2", "--json", str(out), *extra),
    ]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_loadtest_against_a_server(server_factory: Any, tmp_path: Path) -> None:
    """Two client processes, 200 connections, 3 events/s: every copy, a summary, exit 0."""
    server = server_factory()
    out = tmp_path / "summary.json"
    done = _loadtest(
        server, out, "user:alice", "--secret", TEST_SECRET, "--rate", "3", "--size", "300",
        "--ramp-timeout", "2",
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    summary = json.loads(out.read_text())
    assert "200 connections not subscribed" in done.stdout
    # user:alice is private to "alice": minted tokens are loadtest-<i>, so every subscribe
    # is refused. The run must fail and say so instead of passing silently.
    assert summary["errors"] >= 200 and summary["deliveries"] == 0, summary


def test_loadtest_counts_every_delivery(server_factory: Any, tmp_path: Path) -> None:
    """Public channel: deliveries = connections x published, no loss, PASS and exit 0."""
    server = server_factory()
    out = tmp_path / "summary.json"
    done = _loadtest(server, out, "contest:load", "--rate", "4")
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads(out.read_text())
    assert summary["published"] >= 10 and summary["publish_failures"] == 0, summary
    assert summary["deliveries"] == 200 * summary["published"], summary
    assert summary["lost"] == 0 and summary["duplicates"] == 0 and summary["ok"] is True
    assert summary["latency_p99_ms"] is not None
    assert "events lost" in done.stdout and "PASS" in done.stdout
    assert "connected 200/200" in done.stderr  # the live progress line


def test_loadtest_refuses_bad_arguments() -> None:
    """One line and exit 2 on a bad URL."""
    done = subprocess.run(
        [sys.executable, "-m", "realtime", "loadtest", "--url", "http://x", "--channel", "c:1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "--url must be ws://" in done.stderr
