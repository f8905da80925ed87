"""The deterministic simulation: thousands of seeded worlds, each checked by the checker.

Each seed draws a world (1-2 nodes, 2-4 clients, history size, buffers, token lifetimes) and
30-70 timed operations (publishes, subscribe churn, StrictMode bursts, reconnects, slow
readers, re-auth, link drops, message loss, store loss and rollback, slow or failing store
reads, late subscribe confirmations), runs the real Node/Hub/Session/Connection on a
virtual-time loop, and checks every client's history (tests/guarantee/checker.py).

``SIM_SEEDS=FIRST:LAST`` changes the range (default 0:2000, about a minute on 2 cores);
``python -m tests.sim --seeds 0:50000`` runs many more and summarises the failures;
``python -m tests.sim --seed N --trace`` replays one seed, shrinks it and prints the trace.
"""

from __future__ import annotations

import os
from collections import Counter

import pytest

from tests.guarantee.checker import format_violations
from tests.sim.shrink import signature
from tests.sim.world import run_seed

FIRST, _, LAST = os.environ.get("SIM_SEEDS", "0:2000").partition(":")
CHUNK = 100
CHUNKS = [(s, min(s + CHUNK, int(LAST))) for s in range(int(FIRST), int(LAST), CHUNK)]


@pytest.mark.parametrize(("first", "last"), CHUNKS, ids=[f"seeds-{a}-{b}" for a, b in CHUNKS])
def test_seeds_keep_the_delivery_guarantee(first: int, last: int) -> None:
    failed: list[int] = []
    kinds: Counter[tuple[int, str]] = Counter()
    example = ""
    for seed in range(first, last):
        result = run_seed(seed)
        if result.failed:
            failed.append(seed)
            kinds.update({signature(v) for v in result.violations})
            if not example:
                example = format_violations(result.violations, result.histories, limit=3)
    summary = "\n".join(f"  {n:4d} x rule {rule}: {detail}" for (rule, detail), n in kinds.items())
    assert not failed, (
        f"{len(failed)} of {last - first} seeds broke the guarantee: {failed[:20]}\n{summary}\n"
        f"replay and shrink: python -m tests.sim --seed {failed[0]} --trace\n\n"
        f"seed {failed[0]}:\n{example}"
    )


def test_a_seed_replays_exactly() -> None:
    # the same seed gives the same histories, byte for byte (what makes --trace possible)
    first, second = run_seed(7), run_seed(7)
    assert first.histories == second.histories
    assert first.published == second.published
    assert sum(len(h) for h in first.histories.values()) > 10
