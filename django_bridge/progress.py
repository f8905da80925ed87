"""Judge progress for a submission: state on ``submission:<id>``, a note on ``user:<id>``.

Judges report from several workers, late and sometimes twice. Each update has a rank
(queued < compiling < test 1 < test 2 < ... < verdict); an update is applied only if its
rank is higher than the channel's current one and no verdict is set yet. The compare-and-set
is one conditional UPDATE of a ``ChannelProgress`` row, so it is atomic on any database and
independent of the transport. Outside a caller's transaction the event is sent while that
row is still locked, so two workers' sends reach the server in rank order too.

A rejudge (``submission_rejudge``) starts a new attempt: the row goes back to "queued" and
gets a new attempt number and a new random run id. Each update's envelope id is
``<channel>#<attempt>.<run>.<rank>``: a resend of the same step is de-duplicated, while a
rejudge, or a fresh database that reuses submission ids, never repeats an id the server
still remembers (it forgets ids only after ``HISTORY_TTL``).

The helpers return True only for an update that was applied and published (or, inside a
transaction or with the outbox, queued to go out on commit): an update that was stale, not
sent, or discarded by the server as a duplicate returns False.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F

from django_bridge.conf import get_settings
from django_bridge.models import ChannelProgress
from django_bridge.publishing import make_envelope, publish, send

logger = logging.getLogger(__name__)

RANK_QUEUED = 1
RANK_COMPILING = 2
RANK_FIRST_TEST = 3  # running test k has rank RANK_FIRST_TEST + k - 1
RANK_VERDICT = 1 << 40  # above any test number


@dataclass(frozen=True, slots=True)
class Run:
    """The attempt an update was applied to: its number and its random id."""

    attempt: int
    run: str

    def envelope_id(self, channel: str, rank: int) -> str:
        """Return the update's envelope id (unique per channel, attempt, run and rank)."""
        return f"{channel}#{self.attempt}.{self.run}.{rank}"


def submission_channel(submission_id: int | str) -> str:
    """Return ``submission:<id>``."""
    return f"submission:{submission_id}"


def user_channel(user_id: int | str) -> str:
    """Return ``user:<id>``."""
    return f"user:{user_id}"


def _new_run() -> str:
    return secrets.token_hex(6)


def advance_run(
    channel: str,
    rank: int,
    *,
    final: bool = False,
    attempt: int | None = None,
    using: str | None = None,
) -> Run | None:
    """Move a channel's progress to ``rank`` if that is forward; return the attempt, or None.

    With ``attempt`` the update applies only to that attempt (a worker still judging an
    attempt that a rejudge replaced changes nothing). Must run inside a transaction: the row
    stays locked (PostgreSQL row lock, SQLite write lock) until it ends, which serialises
    competing updates of the same channel.
    """
    rows = ChannelProgress.objects.using(using)
    for _ in range(2):
        forward = rows.filter(channel=channel, final=False, rank__lt=rank)
        if attempt is not None:
            forward = forward.filter(attempt=attempt)
        if forward.update(rank=rank, final=final):
            number, run = rows.filter(channel=channel).values_list("attempt", "run").get()
            return Run(number, run)
        if rows.filter(channel=channel).exists():
            return None
        run = _new_run()
        try:
            with transaction.atomic(using=using):
                rows.create(channel=channel, rank=rank, final=final, attempt=attempt or 1, run=run)
            return Run(attempt or 1, run)
        except IntegrityError:
            continue  # another worker created it first: compare against its rank
    return None


def advance(channel: str, rank: int, *, final: bool = False, using: str | None = None) -> bool:
    """Like ``advance_run`` for the current attempt; return True if applied."""
    return advance_run(channel, rank, final=final, using=using) is not None


def _publish_step(
    channel: str,
    rank: int,
    type_: str,
    data: Mapping[str, Any],
    run: Run,
    *,
    outer: bool,
    using: str | None,
) -> bool | None:
    """Publish an applied step as the channel's state (inside the step's transaction).

    Returns True when published (or queued to go out on commit or by the relay), False when
    the server discarded it as a duplicate, None when it could not be sent (logged).
    """
    payload = {**data, "attempt": run.attempt}
    envelope = make_envelope(channel, type_, payload, True, run.envelope_id(channel, rank))
    if outer or get_settings().outbox:
        # sent on the caller's commit, or by the relay: the outcome is not known here
        publish(channel, type_, payload, True, using=using, envelope_id=envelope.id)
        return True
    results = send([envelope])  # still holding the row lock: sends leave in rank order
    if results is None:
        return None
    if results[0].duplicate:
        logger.warning(
            "realtime progress %s on %s was discarded as a duplicate (id %s): not published",
            type_,
            channel,
            envelope.id,
        )
        return False
    return True


def _report(
    channel: str,
    rank: int,
    type_: str,
    data: Mapping[str, Any],
    *,
    final: bool,
    attempt: int | None,
    using: str | None,
) -> Run | None:
    outer = transaction.get_connection(using).in_atomic_block
    with transaction.atomic(using=using):
        run = advance_run(channel, rank, final=final, attempt=attempt, using=using)
        if run is None:
            return None
        sent = _publish_step(channel, rank, type_, data, run, outer=outer, using=using)
        if sent is None:
            # not sent: undo the step so that a retry of it applies and sends
            transaction.set_rollback(True, using=using)
            return None
    return run if sent else None


def _reset(channel: str, rank: int, using: str | None) -> Run | None:
    """Start a new attempt of an existing channel row at ``rank``; None if there is no row."""
    rows = ChannelProgress.objects.using(using)
    run = _new_run()
    if rows.filter(channel=channel).update(
        rank=rank, final=False, attempt=F("attempt") + 1, run=run
    ):
        return Run(rows.filter(channel=channel).values_list("attempt", flat=True).get(), run)
    return None


def report(
    channel: str,
    rank: int,
    type_: str,
    data: Mapping[str, Any],
    *,
    final: bool = False,
    attempt: int | None = None,
    using: str | None = None,
) -> bool:
    """Publish ``data`` (plus ``attempt``) as the channel's state if ``rank`` moves it forward.

    Returns True if applied and published (see the module docstring), False otherwise.
    """
    return (
        _report(channel, rank, type_, data, final=final, attempt=attempt, using=using) is not None
    )


def _base(submission_id: int | str, status: str, **extra: Any) -> dict[str, Any]:
    return {"submission": submission_id, "status": status, **extra}


def submission_queued(
    submission_id: int | str, *, attempt: int | None = None, using: str | None = None
) -> bool:
    """The submission waits for a judge."""
    return report(
        submission_channel(submission_id),
        RANK_QUEUED,
        "judge.queued",
        _base(submission_id, "queued"),
        attempt=attempt,
        using=using,
    )


def submission_rejudge(submission_id: int | str, *, using: str | None = None) -> int:
    """Start judging the submission again; return the new attempt number.

    The progress goes back to "queued" (published as ``judge.queued`` with the new
    ``attempt``), even after a verdict; later updates belong to the new attempt. Pass the
    returned number as ``attempt=`` from the judge so that a worker still busy with an older
    attempt cannot overwrite the new one.
    """
    channel = submission_channel(submission_id)
    outer = transaction.get_connection(using).in_atomic_block
    with transaction.atomic(using=using):
        run = None
        while run is None:  # a concurrent first report may create the row under us
            run = _reset(channel, RANK_QUEUED, using) or advance_run(
                channel, RANK_QUEUED, using=using
            )
        data = _base(submission_id, "queued")
        # a lost "queued" event is only a missed display step: the new attempt stands
        _publish_step(channel, RANK_QUEUED, "judge.queued", data, run, outer=outer, using=using)
    return run.attempt


def submission_compiling(
    submission_id: int | str, *, attempt: int | None = None, using: str | None = None
) -> bool:
    """A judge picked the submission up and compiles it."""
    return report(
        submission_channel(submission_id),
        RANK_COMPILING,
        "judge.compiling",
        _base(submission_id, "compiling"),
        attempt=attempt,
        using=using,
    )


def submission_running(
    submission_id: int | str,
    test: int,
    total: int,
    results: Sequence[Mapping[str, Any]] = (),
    *,
    attempt: int | None = None,
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
        attempt=attempt,
        using=using,
    )


def submission_verdict(
    submission_id: int | str,
    user_id: int | str | None,
    verdict: str,
    results: Sequence[Mapping[str, Any]] = (),
    *,
    score: float | None = None,
    attempt: int | None = None,
    using: str | None = None,
) -> bool:
    """Set the final verdict (nothing but a rejudge replaces it) and notify ``user:<user_id>``.

    ``results`` holds one mapping per test, e.g. ``{"test": 1, "verdict": "AC",
    "time_ms": 12}``. Returns whether the verdict was applied and published.
    """
    data = _base(submission_id, "done", verdict=verdict, results=list(results), score=score)
    channel = submission_channel(submission_id)
    run = _report(
        channel, RANK_VERDICT, "judge.verdict", data, final=True, attempt=attempt, using=using
    )
    if run is not None and user_id is not None:
        note = user_channel(user_id)
        publish(
            note,
            "submission.judged",
            {"submission": submission_id, "verdict": verdict, "score": score},
            using=using,
            envelope_id=f"{note}#judged:{submission_id}:{run.attempt}.{run.run}",
        )
    return run is not None
