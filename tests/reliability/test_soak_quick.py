"""A CI-size soak: a few hundred connections with reconnect churn for ~35 s."""

from __future__ import annotations

import json
from pathlib import Path

from bench.soak import Options, run_soak


def test_soak_loses_nothing_and_leaks_nothing(tmp_path: Path) -> None:
    """300 connections, churn, 20 events/s: no event lost, RSS and fds back where they were."""
    options = Options(
        duration=35.0, connections=300, rate=20.0, channels=10, churn=0.02, warmup=8.0
    )
    result = run_soak(options)
    (tmp_path / "soak.json").write_text(json.dumps(result, indent=2))
    summary = {k: v for k, v in result.items() if k not in ("timeline", "options")}
    assert result["checks"]["no_event_lost"], summary
    assert result["reconnects"] > 100, summary  # the churn really happened
    assert result["checks"]["every_reconnect_recovered"], summary
    assert result["checks"]["rss_stable"], summary
    assert result["checks"]["fds_stable"], summary
    assert result["checks"]["clean_exit"], summary
