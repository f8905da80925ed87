"""Delta debugging (ddmin) over a run's operation list: the smallest list that still fails."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TypeVar

from tests.guarantee.checker import Violation

T = TypeVar("T")


def signature(violation: Violation) -> tuple[int, str]:
    """A violation's kind, without the numbers that change when operations are removed."""
    return violation.rule, re.sub(r"E?\d+", "N", violation.detail)


def ddmin(items: Sequence[T], fails: Callable[[list[T]], bool], budget: int = 400) -> list[T]:
    """Return a 1-minimal (within ``budget`` runs) sublist of ``items`` for which ``fails``."""
    current = list(items)
    n = 2
    runs = 0
    while len(current) >= 2 and runs < budget:
        size = -(-len(current) // n)
        chunks = [current[i : i + size] for i in range(0, len(current), size)]
        for i in range(len(chunks)):
            rest = [item for j, chunk in enumerate(chunks) if j != i for item in chunk]
            runs += 1
            if fails(rest):
                current, n = rest, max(n - 1, 2)
                break
        else:
            if n >= len(current):
                break
            n = min(len(current), n * 2)
    return current
