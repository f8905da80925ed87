"""``realtime check-config``: effective settings on success, one line and exit 2 on error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, TEST_SECRET, server_env


def check_config(*args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "realtime", "check-config", *args],
        env=server_env(**settings),
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_check_config_prints_the_effective_settings(tmp_path: Path) -> None:
    """File, environment and flags merge in that order; secrets are masked."""
    conf = tmp_path / "realtime.toml"
    conf.write_text(
        '[server]\nport = 9100\nworkers = 3\n[broker]\nbroker_url = "redis://127.0.0.1:6379/0"\n'
        '[logging]\nlog_level = "WARNING"\n'
    )
    proc = check_config("--config", str(conf), "--port", "9200", log_level="DEBUG")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "port = 9200" in out and "workers = 3" in out and 'log_level = "DEBUG"' in out
    assert "[namespaces.leaderboard]" in out
    assert TEST_SECRET not in out and "********" in out


def test_check_config_rejects_a_bad_value_with_one_line(tmp_path: Path) -> None:
    """A bad value exits 2 with one line naming the setting, no traceback."""
    conf = tmp_path / "bad.toml"
    conf.write_text("[server]\nworkers = 0\n")
    proc = check_config("--config", str(conf))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "workers" in lines[0], proc.stderr
    assert proc.stdout == ""


def test_check_config_rejects_an_unknown_key(tmp_path: Path) -> None:
    """A misspelt key is an error, not silently ignored."""
    conf = tmp_path / "typo.toml"
    conf.write_text("[server]\nworkerz = 2\n")
    proc = check_config("--config", str(conf))
    assert proc.returncode == 2 and "workerz" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_sample_config_file_is_valid() -> None:
    """config/realtime.toml passes check-config as shipped (with a secret from the env)."""
    proc = check_config("--config", str(ROOT / "config" / "realtime.toml"))
    assert proc.returncode == 0, proc.stderr
    assert "port = 8888" in proc.stdout
