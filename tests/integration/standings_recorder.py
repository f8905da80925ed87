"""A recording process of the standings contest test: a Django-free-ish judge worker.

Runs in a child process (multiprocessing, spawn): configures Django with the bridge pointed
at the test's Redis and prefix, then records its share of the verdict log through
``Leaderboard.record_verdict`` (which publishes with ``django_bridge.publish``), starting
when ``go`` is set and never pausing. Each verdict's public board version (what the record
returned; -1 for a duplicate, which changed nothing) goes to ``versions``: the test rebuilds
the reference board at any version from that log.
"""

from __future__ import annotations

import time
from typing import Any


def run(
    index: int,
    redis_url: str,
    prefix: str,
    contest: dict[str, Any],
    verdicts: list[tuple[str, str, str, Any, float]],
    go: Any,
    done: Any,
    versions: Any,
    elapsed: Any,
    rate: float = 0.0,
) -> None:
    """Record ``verdicts`` (submission, user, problem, result, at); count them in ``done``.

    ``rate`` > 0 paces this process at that many verdicts a second.
    """
    import django
    import redis
    from django.conf import settings

    settings.configure(
        INSTALLED_APPS=["django_bridge"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        USE_TZ=True,
        REALTIME={"BROKER_URL": redis_url, "PREFIX": prefix, "RAISE_ON_ERROR": True},
    )
    django.setup()
    from django_bridge.leaderboard import Contest, Leaderboard

    board = Leaderboard(redis.Redis.from_url(redis_url), prefix=prefix + "lb:")
    spec = Contest(**contest)
    go.wait()
    busy = 0.0
    due = time.monotonic()
    for submission, user, problem, result, at in verdicts:
        if rate > 0:
            due = max(due + 1 / rate, time.monotonic() - 1.0)
            time.sleep(max(0.0, due - time.monotonic()))
        began = time.perf_counter()
        recorded = board.record_verdict(spec, user, problem, result, at, submission=submission)
        busy += time.perf_counter() - began
        versions[done[index]] = -1 if recorded.duplicate else recorded.public_v
        done[index] += 1
    elapsed[index] = busy
