"""The circuit breaker's state machine against a reference model (no I/O, simulated clock).

Each seed drives one breaker with a random mix of sends, results (a broker that goes down
and up), stragglers (attempts that finish after the state changed) and clock steps; after
every step the breaker's state must be the model's. A failing seed is printed and replays.
"""

from __future__ import annotations

import random

from django_bridge import breaker

SEEDS = 1000


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_breaker_matches_its_model_under_random_outages() -> None:
    """Seeded runs against a flapping broker: the breaker's answers follow the reference model.

    Model: closed until ``threshold`` failures in a row; then no attempt for ``cooldown``;
    then exactly one trial at a time; any success closes, any failure while half-open
    reopens (the trial's, or a straggler's that started before the breaker opened).
    """
    for seed in range(SEEDS):
        _run(seed)


def _run(seed: int) -> None:
    rng = random.Random(seed)
    threshold, cooldown = rng.randint(1, 4), rng.choice([0.5, 1.0, 3.0])
    clock = _Clock()
    cb = breaker.CircuitBreaker(threshold, cooldown, clock)
    state, streak, open_until, trial = "closed", 0, 0.0, False
    in_flight = 0  # attempts allowed and not finished yet
    attempts = rejected = 0
    down = rng.random() < 0.5
    for _ in range(300):
        step = rng.random()
        if step < 0.1:
            clock.now += rng.choice([0.1, 0.5, cooldown])
        elif step < 0.15:
            down = not down
        elif step < 0.6 or not in_flight:
            allowed = cb.allow()
            if state == "open" and clock.now >= open_until:
                state = "half-open"
            expected = state == "closed" or (state == "half-open" and not trial)
            assert allowed == expected, (seed, state, streak)
            if allowed:
                attempts += 1
                trial = trial or state == "half-open"
                in_flight += 1
            else:
                rejected += 1
        else:
            in_flight -= 1
            if down:
                cb.failure(OSError("down"))
                streak += 1
                if (state == "closed" and streak >= threshold) or state == "half-open":
                    state, open_until, trial = "open", clock.now + cooldown, False
            else:
                cb.success()
                state, streak, trial = "closed", 0, False
        stats = cb.stats()
        assert stats.state == state and stats.consecutive_failures == streak, (seed, stats)
    assert stats.rejected_total == rejected
    assert stats.failures_total <= attempts
