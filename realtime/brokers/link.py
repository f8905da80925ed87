"""What every networked broker shares: its link's health, and the reconnect back-off."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator

from realtime.brokers.base import HealthCallback

BACKOFF_MIN = 0.5
BACKOFF_MAX = 30.0
STABLE_PERIOD = 10.0


def backoff_delays(minimum: float = BACKOFF_MIN, maximum: float = BACKOFF_MAX) -> Iterator[float]:
    """Yield jittered exponential back-off delays (full jitter over a doubling cap)."""
    cap = minimum
    while True:
        yield random.uniform(minimum / 2, cap)
        cap = min(maximum, cap * 2)


class Backoff:
    """Reconnect delays that keep growing until a link has stayed up for a stable period.

    Call ``connected()`` when a (re)connect succeeds and ``next_delay()`` before the next
    attempt. A link that opens and drops again at once (a flapping link) does not start
    over at the shortest delay, so it cannot turn into a reconnect storm.
    """

    def __init__(
        self,
        minimum: float = BACKOFF_MIN,
        maximum: float = BACKOFF_MAX,
        stable: float = STABLE_PERIOD,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._minimum = minimum
        self._maximum = maximum
        self._stable = stable
        self._clock = clock
        self._delays = backoff_delays(minimum, maximum)
        self._up_since: float | None = None

    def connected(self) -> None:
        """The link is up from now on."""
        self._up_since = self._clock()

    def next_delay(self) -> float:
        """Return how long to wait before the next attempt (after a loss or a failure)."""
        if self._up_since is not None and self._clock() - self._up_since >= self._stable:
            self._delays = backoff_delays(self._minimum, self._maximum)
        self._up_since = None
        return next(self._delays)


def safe_url(url: str) -> str:
    """Return a broker URL without its credentials, for logs and /healthz."""
    scheme, sep, rest = url.partition("://")
    return scheme + sep + rest.rsplit("@", 1)[-1]


class LinkHealth:
    """The state of one broker link, told to the node (``on_health``) on every change.

    ``up()`` after each successful (re)connect, ``down(status)`` after each loss or failed
    attempt. Only the first failure of an outage is logged at WARNING: retries are not news.
    """

    def __init__(self, name: str, url: str, logger: logging.Logger) -> None:
        self._name = name
        self._url = safe_url(url)
        self._logger = logger
        self._callback: HealthCallback | None = None
        self._connected_once = False
        self._last_failure = ""
        self.healthy = False
        self.status = "connecting"
        self.reconnects = 0

    def bind(self, callback: HealthCallback) -> None:
        """Report changes to ``callback`` from now on."""
        self._callback = callback

    @property
    def reconnects_pending(self) -> bool:
        """True once the link has been up before: the next ``up()`` is a reconnect."""
        return self._connected_once

    def up(self) -> None:
        """The link is (re)established."""
        if self._connected_once:
            self.reconnects += 1
        self._connected_once = True
        self.status = "connected"
        if not self.healthy:
            self.healthy = True
            self._logger.info("%s broker connected (%s)", self._name, self._url)
            self._notify()

    def down(self, status: str) -> None:
        """The link is lost, or a connect attempt failed; ``status`` says why."""
        self.status = status
        if self.healthy:
            self.healthy = False
            self._logger.warning("%s broker disconnected: %s", self._name, status)
            self._notify()
        elif status != self._last_failure:
            self._logger.warning("%s (retrying with back-off)", status)
        self._last_failure = status

    def closed(self) -> None:
        """The broker was closed on purpose."""
        self.healthy = False
        self.status = "closed"

    def _notify(self) -> None:
        if self._callback is not None:
            self._callback(self.healthy)
