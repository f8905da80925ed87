"""The reconnect herd benchmark: a small run of both scenarios, and its checker wiring."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from bench.herd_client import Conn, HerdClientConfig, Shared, check_histories
from tests.conftest import ROOT

CONNECTIONS = 300
CHANNELS = ("contest:herd0", "contest:herd1")


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Run the documented command at 300 connections, both scenarios, a 1 s outage each."""
    out: Path = tmp_path_factory.mktemp("herd") / "herd.jsonl"
    cmd = [
        sys.executable, "-m", "bench.herd", "--connections", str(CONNECTIONS),
        "--scenario", "both", "--processes", "1", "--steady", "1", "--outage", "1",
        "--timeout", "60", "--json", str(out),
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert out.exists(), f"no result:\n{proc.stdout}\n{proc.stderr}"
    found = {r["scenario"]: r for r in map(json.loads, out.read_text().splitlines())}
    yield {"exit": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr, **found}


@pytest.mark.slow  # ~20 s: the suite's 15-minute budget; `scripts/test -m slow` runs it
@pytest.mark.parametrize("scenario", ["server", "redis"])
def test_every_client_comes_back_without_a_loss(rows: dict[str, Any], scenario: str) -> None:
    """Every connection recovers after the restart and the checker finds no violation."""
    row = rows[scenario]
    assert row["ok"], (row, rows["stderr"])
    assert row["violations"] == 0
    assert row["checked_events"] >= CONNECTIONS * 2 * 3  # two channels, several seconds each
    assert row["publish_failures"] > 0  # the publisher kept going through the outage
    assert row["all_recovered_s"] > 0
    if scenario == "server":
        assert row["reconnects"] >= CONNECTIONS  # SIGTERM closed every connection (1012)


@pytest.mark.slow
def test_the_command_exits_zero_and_prints_the_table(rows: dict[str, Any]) -> None:
    assert rows["exit"] == 0, rows["stderr"]
    assert "all recovered s" in rows["stdout"]


class _Transport:
    """Collects what a connection sends (the conversion needs no socket)."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, _kind: object, payload: bytes) -> None:
        self.sent.append(payload)


def _conn() -> tuple[Conn, _Transport]:
    shared = Shared(HerdClientConfig(url="ws://unused", channels=CHANNELS, count=1, first_index=0))
    conn = Conn(shared, 0)
    transport = _Transport()
    conn.connected_now(transport)  # type: ignore[arg-type]
    return conn, transport


def _event(channel: str, offset: int) -> bytes:
    body = {
        "op": "event",
        "channel": channel,
        "offset": offset,
        "type": "herd",
        "data": {"i": offset},
    }
    return orjson.dumps(body)


def _reply(channel: str, offset: int, **extra: Any) -> bytes:
    body = {"op": "subscribed", "channel": channel, "epoch": "E", "offset": offset, "state": None}
    return orjson.dumps({**body, **extra})


def _log(last: int) -> list[dict[str, Any]]:
    return [
        {"channel": c, "epoch": "E", "offset": o, "type": "herd", "data": {"i": o}, "state": False}
        for c in CHANNELS
        for o in range(1, last + 1)
    ]


def _history(conn: Conn, frames: list[bytes]) -> dict[str, Any]:
    for frame in frames:
        conn.feed(frame)
    return check_histories([conn], CHANNELS, conn.shared.epochs.names, _log(6))


def test_a_clean_history_passes() -> None:
    """Subscribe, a reconnect recovered with `since`, every event once: no violation."""
    conn, transport = _conn()
    first = [_reply(c, 2, id=1, recovered=False) for c in CHANNELS]
    live = [_event(c, o) for c in CHANNELS for o in (3, 4)]
    for frame in [*first, *live]:
        conn.feed(frame)
    conn.lost(1012)
    conn.connected_now(transport)  # type: ignore[arg-type]
    assert b'"since":{"epoch":"E","offset":4}' in transport.sent[-1]
    missed = [orjson.loads(_event(CHANNELS[1], o)) for o in (5, 6)]
    again = [
        _reply(CHANNELS[0], 5, id=1, recovered=True, missed=[orjson.loads(_event(CHANNELS[0], 5))]),
        _event(CHANNELS[0], 6),
        _reply(CHANNELS[1], 6, id=2, recovered=True, missed=missed),
    ]
    result = _history(conn, again)
    assert result["violations"] == 0, result
    assert result["events"] == 8  # live events and `missed` entries


def test_a_hole_in_the_live_events_is_a_violation() -> None:
    """An event that never arrives (4 missing between 3 and 5) fails rule 2."""
    conn, _ = _conn()
    frames = [_reply(c, 2, id=1, recovered=False) for c in CHANNELS]
    frames += [_event(CHANNELS[0], o) for o in (3, 5, 6)]
    frames += [_event(CHANNELS[1], o) for o in (3, 4, 5, 6)]
    result = _history(conn, frames)
    assert result["violations"] == 1, result
    assert "rule 2" in result["first"][0] and "jump from 3 to 5" in result["first"][0]


def test_a_recovery_that_leaves_an_event_out_is_a_violation() -> None:
    """A `recovered: true` whose `missed` skips an offset after `since` fails rule 2."""
    conn, transport = _conn()
    for channel in CHANNELS:
        conn.feed(_reply(channel, 2, id=1, recovered=False))
    conn.lost(None)
    conn.connected_now(transport)  # type: ignore[arg-type]
    missed = [orjson.loads(_event(CHANNELS[0], o)) for o in (3, 5, 6)]
    frames = [
        _reply(CHANNELS[0], 6, id=1, recovered=True, missed=missed),
        _reply(CHANNELS[1], 6, id=2, recovered=True, missed=[_event_obj(o) for o in (3, 4, 5, 6)]),
    ]
    result = _history(conn, frames)
    assert result["violations"] >= 1, result
    assert "leaves 4..4 out" in result["first"][0]


def _event_obj(offset: int) -> dict[str, Any]:
    return dict(orjson.loads(_event(CHANNELS[1], offset)))


def test_a_stale_subscription_at_the_end_is_a_violation() -> None:
    """A live subscription behind the channel's last offset fails rule 6 (settled)."""
    conn, _ = _conn()
    frames = [_reply(c, 2, id=1, recovered=False) for c in CHANNELS]
    frames += [_event(c, o) for c in CHANNELS for o in (3, 4, 5)]
    result = _history(conn, frames)
    assert result["violations"] == 2, result
    assert "rule 6" in result["first"][0]
