"""Helpers of the operations suite: scrape /metrics, find worker PIDs, wait for conditions."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import TypeVar

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ServerProcess

T = TypeVar("T")
WORKER_STARTED = re.compile(r"worker (\d+) started \(pid (\d+)\)")


def scrape(server: ServerProcess) -> dict[str, float]:
    """GET /metrics; return {sample name with labels: value}, e.g. 'x_total{code="forbidden"}'."""
    status, body = server.get("/metrics")
    assert status == 200, body
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            key = f"{sample.name}{{{labels}}}" if labels else sample.name
            samples[key] = sample.value
    return samples


def wait_for(check: Callable[[], T | None], timeout: float = 10.0, what: str = "") -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or check} (last: {last})")


def worker_pids(server: ServerProcess) -> dict[int, int]:
    """Return {worker index: pid} of the latest start of each worker, from the supervisor log."""
    pids: dict[int, int] = {}
    for match in WORKER_STARTED.finditer(server.log()):
        pids[int(match.group(1))] = int(match.group(2))
    return pids


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
