"""``python -m bench.scale`` end to end at a small N: every target measured, nothing lost.

The sizes that matter (1,000 to 100,000) run by hand (docs/PERFORMANCE.md); this keeps the
tool working: server and floor start with forced extra processes (as the fd limit forces
at 100,000), private channels with a token each, the report renders.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from bench import scale
from bench.client import source_address


def test_source_addresses_spread_over_the_loopback_network() -> None:
    assert source_address(0, 4) == "127.0.0.2"
    assert source_address(5, 4) == "127.0.0.3"
    assert source_address(300, 1000) == "127.0.1.46"
    assert len({source_address(i, 1000) for i in range(5000)}) == 1000


@pytest.mark.slow  # ~20 s: the suite's 15-minute budget; `scripts/test -m slow` runs it
def test_scale_run_small(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.which("redis-server") is None:  # the benchmark starts a Redis of its own
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is not installed (scripts/test installs it)")
        pytest.skip("redis-server is not installed")
    out = tmp_path / "scale.json"
    doc_path = tmp_path / "PERF.md"
    doc_path.write_text(f"before\n{scale.BEGIN}\nold\n{scale.END}\nafter\n")
    # 150 connections a process: 300 connections take 2 server and 2 client processes
    code = scale.main(
        ["--sizes", "300", "--reps", "1", "--steady-events", "2", "--out", str(out),
         "--per-process", "150"]
    )  # fmt: skip
    doc = json.loads(out.read_text())
    rows = {row["target"]: row for row in doc["rows"]}
    assert code == 0, doc["rows"]
    assert set(rows) == {"floor", "memory", "redis", "private"} - {"memory"}
    for name in ("floor", "redis"):
        row = rows[name]
        assert row["subscribed"] == 300 and row["lost"] == 0
        assert row["server_processes"] == 2 and row["client_processes"] == 2
        assert row["one_to_all_s"] > 0 and row["p50_ms"] > 0
        # at 300 connections the growth is within the noise of shared pages (it can be
        # negative); the whole server's memory per connection is not
        assert row["pss_per_conn_kb"] > max(0.0, row["pss_growth_per_conn_kb"])
    assert rows["private"]["subscribed"] == 300 and rows["private"]["redis_per_conn_b"] > 0
    monkeypatch.setattr(scale, "DOC", doc_path)
    monkeypatch.setattr(scale, "PLOT", tmp_path / "scale.png")
    scale.write_report(doc)
    text = doc_path.read_text()
    assert "| redis | 300 | 2 |" in text and "old" not in text and text.endswith("after\n")
    assert (tmp_path / "scale.png").stat().st_size > 1000
