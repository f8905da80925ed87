"""A circuit breaker around sends, so that a dead broker costs Django requests nothing.

States: **closed** (sends go through), **open** (after ``BREAKER_THRESHOLD`` consecutive
failed attempts: every send fails at once with ``CircuitOpen`` for ``BREAKER_COOLDOWN``
seconds), **half-open** (the cool-down is over: one send is let through as a trial; its
success closes the breaker, its failure opens it again). Without the outbox an event refused
while open is logged and counted as lost; with it the relay's rows simply wait.

One breaker per process, shared by its threads (the broker is down for all of them); it is
replaced when ``REALTIME`` changes and in a forked child. ``stats()`` is what health checks
and metrics read.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from django_bridge import conf
from realtime.errors import BrokerUnavailable

logger = logging.getLogger(__name__)

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half-open"


class CircuitOpen(BrokerUnavailable):
    """The breaker is open: the send was not attempted (retrying now would not help)."""


@dataclass(frozen=True, slots=True)
class BreakerStats:
    """A snapshot of one process's breaker (counters since the process or settings started).

    ``failures_total`` counts attempts that reached for the broker and failed,
    ``rejected_total`` sends refused without an attempt, ``opened_total`` how often it
    opened; ``retry_in`` is the time left before a trial send is allowed (0 unless open).
    """

    state: str
    consecutive_failures: int
    failures_total: int
    rejected_total: int
    opened_total: int
    retry_in: float
    last_error: str


class CircuitBreaker:
    """Count consecutive failures and refuse sends for a cool-down after ``threshold``.

    Thread-safe. ``threshold`` 0 disables it (every send is attempted).
    """

    def __init__(
        self, threshold: int, cooldown: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._threshold = threshold
        self._cooldown = cooldown
        self._clock = clock
        self._lock = threading.Lock()
        self._state = CLOSED
        self._consecutive = 0
        self._failures = 0
        self._rejected = 0
        self._opened = 0
        self._open_until = 0.0
        self._trial_running = False
        self._last_error = ""

    def allow(self) -> bool:
        """Return True if a send may be attempted now (and count it as rejected if not).

        After the cool-down exactly one caller gets True (the trial); it must then call
        ``success``, ``failure`` or ``release``.
        """
        with self._lock:
            if self._state == CLOSED:
                return True
            if self._state == OPEN and self._clock() >= self._open_until:
                self._state = HALF_OPEN
            if self._state == HALF_OPEN and not self._trial_running:
                self._trial_running = True
                return True
            self._rejected += 1
            return False

    def success(self) -> None:
        """The broker answered: close the breaker."""
        with self._lock:
            was, rejected = self._state, self._rejected
            self._state = CLOSED
            self._consecutive = 0
            self._trial_running = False
        if was != CLOSED:
            logger.info(
                "realtime broker reachable again; circuit closed (%d send(s) refused while open)",
                rejected,
            )

    def failure(self, error: BaseException) -> None:
        """An attempt failed for a reason a retry may fix; open after ``threshold`` in a row."""
        with self._lock:
            self._failures += 1
            self._consecutive += 1
            self._last_error = str(error)[:300]
            if self._threshold <= 0 or self._state == OPEN:
                return  # disabled, or a send that started before the breaker opened
            if self._state == CLOSED and self._consecutive < self._threshold:
                return
            # the threshold is reached, or any attempt failed while half-open (the trial, or
            # one that started before the breaker opened: the broker is still failing)
            self._trial_running = False
            self._state = OPEN
            self._open_until = self._clock() + self._cooldown
            self._opened += 1
            consecutive = self._consecutive
        logger.warning(
            "realtime broker unreachable (%d failed attempt(s) in a row, last: %s); "
            "circuit open: sends fail fast for %.1f s (outbox rows wait; other events are "
            "logged as lost)",
            consecutive,
            error,
            self._cooldown,
        )

    def is_open(self) -> bool:
        """Return True while sends are refused (open and the cool-down not over)."""
        with self._lock:
            return self._state == OPEN and self._clock() < self._open_until

    def release(self) -> None:
        """A trial ended without telling anything about the broker (e.g. a bug): allow another."""
        with self._lock:
            self._trial_running = False

    def stats(self) -> BreakerStats:
        """Return the current state and counters."""
        with self._lock:
            retry_in = max(0.0, self._open_until - self._clock()) if self._state == OPEN else 0.0
            return BreakerStats(
                state=self._state,
                consecutive_failures=self._consecutive,
                failures_total=self._failures,
                rejected_total=self._rejected,
                opened_total=self._opened,
                retry_in=retry_in,
                last_error=self._last_error,
            )


_lock = threading.Lock()
_current: tuple[int, CircuitBreaker] | None = None  # (pid, breaker)


def get_breaker() -> CircuitBreaker:
    """Return this process's breaker, built from the current settings."""
    global _current
    current, pid = _current, os.getpid()
    if current is not None and current[0] == pid:
        return current[1]
    with _lock:
        if _current is None or _current[0] != pid:
            settings = conf.get_settings()
            _current = (pid, CircuitBreaker(settings.breaker_threshold, settings.breaker_cooldown))
        return _current[1]


def stats() -> BreakerStats:
    """Return this process's breaker state and counters (for health checks and metrics)."""
    return get_breaker().stats()


def reset_breaker() -> None:
    """Forget the breaker; the next send builds a closed one from the current settings."""
    global _current
    with _lock:
        _current = None


conf.on_reset(reset_breaker)
