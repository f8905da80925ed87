"""The server raises its open-file limit itself and warns when the hard limit is too low."""

from __future__ import annotations

import resource
import subprocess
import sys

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
