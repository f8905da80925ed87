"""The short live chaos run: two clusters (Redis pub/sub; RabbitMQ with a Redis store), two
nodes each, 150 clients, about 25 s of seeded faults, then the delivery-guarantee checker.

The seed is printed with any violation; ``CHAOS_SEED=<n>`` replays its fault schedule. The
long run: ``python -m tests.chaos --minutes 10 --clients 300`` (docs/RELIABILITY.md).
"""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path

import pytest

from tests.chaos.run import ChaosConfig, run_chaos

pytestmark = pytest.mark.broker


@pytest.mark.timeout(300)
def test_short_chaos_run_keeps_the_guarantee(amqp_url: str, tmp_path: Path) -> None:
    """Faults for ~40 s on two clusters: every history passes the checker."""
    seed = int(os.environ.get("CHAOS_SEED") or random.randrange(1, 2**31))
    config = ChaosConfig(seed=seed, duration=25.0, clients=150, workdir=tmp_path, amqp_url=amqp_url)
    result = asyncio.run(run_chaos(config))
    print(result.report())  # seen with -s: fault counts and numbers of a passing run too
    result.dump(tmp_path / f"chaos-{seed}.json")  # python -m tests.chaos --check <file>
    assert sum(result.faults.values()) >= 15, result.faults
    assert result.numbers["events_received"] > 1000, result.numbers
    # rule 6 only looks at subscriptions live at the end: most clients must be there
    assert result.numbers["live_at_end"] > 0.8 * config.clients, result.numbers
    if result.violations:
        pytest.fail(result.report() + "\nfaults:\n" + "\n".join(result.fault_log), pytrace=False)
