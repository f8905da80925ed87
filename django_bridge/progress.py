"""Judge progress for a submission: state on ``submission:<id>``, a note on ``user:<id>``.

Judges report from several workers, late and sometimes twice. Each update has a rank
(queued < compiling < test 1 < test 2 < ... < verdict); an update is applied only if its
rank is higher than the channel's current one and no verdict is set yet. The compare-and-set
is one conditional UPDATE of a ``ChannelProgress`` row, so it is atomic on any database and
independent of the transport. Outside a caller's transaction the event is sent while that
row is still locked, so two workers' sends reach the server in rank order too. Each update's
envelope id is derived from (channel, rank): a resend of the same step is de-duplicated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from django.db import IntegrityError, transaction

from django_bridge.models import ChannelProgress
from django_bridge.publishing import make_envelope, publish, send

RANK_QUEUED = 1
RANK_COMPILING = 2
RANK_FIRST_TEST = 3  # running test k has rank RANK_FIRST_TEST + k - 1
RANK_VERDICT = 1 << 40  # above any test number


def submission_channel(submission_id: int | str) -> str:
    """Return ``submission:<id>``."""
    return f"submission:{submission_id}"


def user_channel(user_id: int | str) -> str:
    """Return ``user:<id>``."""
    return f"user:{user_id}"


def advance(channel: str, rank: int, *, final: bool = False, using: str | None = None) -> bool:
    """Move a channel's progress to ``rank`` if that is forward; return True if applied.

    Must run inside a transaction: the row stays locked (PostgreSQL row lock, SQLite write
    lock) until it ends, which serialises competing updates of the same channel.
    """
    for _ in range(2):
        updated = (
            ChannelProgress.objects.using(using)
            .filter(channel=channel, final=False, rank__lt=rank)
            .update(rank=rank, final=final)
        )
        if updated:
            return True
        if ChannelProgress.objects.using(using).filter(channel=channel).exists():
            return False
        try:
            with transaction.atomic(using=using):
                ChannelProgress.objects.using(using).create(channel=channel, rank=rank, final=final)
            return True
        except IntegrityError:
            continue  # another worker created it first: compare against its rank
    return False


def report(
    channel: str,
    rank: int,
    type_: str,
    data: Mapping[str, Any],
    *,
    final: bool = False,
    using: str | None = None,
) -> bool:
    """Publish ``data`` as the channel's state if ``rank`` moves it forward; return applied."""
    envelope = make_envelope(channel, type_, dict(data), True, f"{channel}#{rank}")
    outer = transaction.get_connection(using).in_atomic_block
    with transaction.atomic(using=using):
        if not advance(channel, rank, final=final, using=using):
            return False
        if outer:
            # the caller's transaction may still roll back: only send on its commit
            publish(channel, type_, dict(data), True, using=using, envelope_id=envelope.id)
        else:
            from django_bridge.conf import get_settings

            if get_settings().outbox:
                publish(channel, type_, dict(data), True, using=using, envelope_id=envelope.id)
            else:
                send([envelope])  # still holding the row lock: sends leave in rank order
    return True


def _base(submission_id: int | str, status: str, **extra: Any) -> dict[str, Any]:
    return {"submission": submission_id, "status": status, **extra}


def submission_queued(submission_id: int | str, *, using: str | None = None) -> bool:
    """The submission waits for a judge."""
    channel = submission_channel(submission_id)
    return report(channel, RANK_QUEUED, "judge.queued", _base(submission_id, "queued"), using=using)


def submission_compiling(submission_id: int | str, *, using: str | None = None) -> bool:
    """A judge picked the submission up and compiles it."""
    return report(
        submission_channel(submission_id),
        RANK_COMPILING,
        "judge.compiling",
        _base(submission_id, "compiling"),
        using=using,
    )


def submission_running(
    submission_id: int | str,
    test: int,
    total: int,
    results: Sequence[Mapping[str, Any]] = (),
    *,
    using: str | None = None,
) -> bool:
    """Test ``test`` of ``total`` (1-based) is running; ``results`` are the finished ones."""
    if not 1 <= test <= total:
        raise ValueError(f"test must be in 1..{total}, got {test}")
    return report(
        submission_channel(submission_id),
        RANK_FIRST_TEST + test - 1,
        "judge.running",
        _base(submission_id, "running", test=test, total=total, results=list(results)),
        using=using,
    )


def submission_verdict(
    submission_id: int | str,
    user_id: int | str | None,
    verdict: str,
    results: Sequence[Mapping[str, Any]] = (),
    *,
    score: float | None = None,
    using: str | None = None,
) -> bool:
    """Set the final verdict (nothing replaces it) and notify ``user:<user_id>``.

    ``results`` holds one mapping per test, e.g. ``{"test": 1, "verdict": "AC",
    "time_ms": 12}``.
    """
    data = _base(submission_id, "done", verdict=verdict, results=list(results), score=score)
    applied = report(
        submission_channel(submission_id),
        RANK_VERDICT,
        "judge.verdict",
        data,
        final=True,
        using=using,
    )
    if applied and user_id is not None:
        publish(
            user_channel(user_id),
            "submission.judged",
            {"submission": submission_id, "verdict": verdict, "score": score},
            using=using,
            envelope_id=f"{user_channel(user_id)}#judged:{submission_id}",
        )
    return applied
