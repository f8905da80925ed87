"""The demo judge: claim a queued submission, "run" its tests, publish progress.

Nothing is executed: each test's outcome comes from a ``# verdict: WA@3`` line in the source
(AC, CE, or WA/TLE/RE at test k), or from a hash of the source when there is none, and takes
a realistic time (scaled by ``speed``; 0 = no waiting, for tests).
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
import time
from dataclasses import dataclass

from django.db import transaction

from django_bridge.progress import (
    submission_compiling,
    submission_running,
    submission_verdict,
)
from judge.models import Submission
from judge.standings import record_submission

logger = logging.getLogger(__name__)

VERDICT_LINE = re.compile(r"#\s*verdict:\s*(AC|CE|WA|TLE|RE)(?:@(\d+))?", re.IGNORECASE)
COMPILE_SECONDS = 0.8
TEST_SECONDS = (0.2, 0.6)


@dataclass(frozen=True, slots=True)
class Plan:
    """What the judge will find: the final verdict and the test where it happens."""

    verdict: str
    at_test: int  # 0 = every test passes (AC) or compilation fails (CE)


def plan_for(source: str, test_count: int) -> Plan:
    """Decide the outcome of a submission from its source (deterministic)."""
    match = VERDICT_LINE.search(source)
    if match:
        verdict = match.group(1).upper()
        if verdict in ("AC", "CE"):
            return Plan(verdict, 0)
        return Plan(verdict, min(int(match.group(2) or 1), test_count))
    rng = random.Random(hashlib.sha256(source.encode()).digest())
    if rng.random() < 0.6:
        return Plan("AC", 0)
    return Plan(rng.choice(["WA", "TLE", "RE"]), rng.randint(1, test_count))


def claim_next(worker_id: str) -> Submission | None:
    """Take the oldest queued submission; a conditional UPDATE makes the claim exclusive."""
    for candidate in Submission.objects.filter(status=Submission.Status.QUEUED).order_by("id")[:5]:
        claimed = Submission.objects.filter(
            pk=candidate.pk, status=Submission.Status.QUEUED
        ).update(status=Submission.Status.JUDGING, judged_by=worker_id)
        if claimed:
            return Submission.objects.select_related("problem").get(pk=candidate.pk)
    return None


def judge(submission: Submission, speed: float = 1.0) -> str:
    """Run the demo judging of a claimed submission; return the verdict."""
    sid = submission.pk
    total = submission.problem.test_count
    rng = random.Random(sid)
    plan = plan_for(submission.source, total)
    submission_compiling(sid)
    time.sleep(COMPILE_SECONDS * speed)
    results: list[dict[str, object]] = []
    verdict = plan.verdict
    if plan.verdict != "CE":
        for test in range(1, total + 1):
            submission_running(sid, test, total, results)
            time_ms = rng.randint(5, 180)
            time.sleep(rng.uniform(*TEST_SECONDS) * speed)
            outcome = plan.verdict if test == plan.at_test else "AC"
            if outcome == "TLE":
                time_ms = 2000
            results.append({"test": test, "verdict": outcome, "time_ms": time_ms})
            if outcome != "AC":
                break
    with transaction.atomic():
        Submission.objects.filter(pk=sid).update(
            status=Submission.Status.DONE, verdict=verdict, results=results
        )
        # published when the row above is committed: the page never shows a verdict the
        # database does not have yet
        submission_verdict(sid, submission.user_id, verdict, results)
    try:
        record_submission(Submission.objects.select_related("problem__contest", "user").get(pk=sid))
    except Exception:  # the board is a view of the verdicts: never lose a judged run over it
        logger.exception("standings update failed for submission %s", sid)
    logger.info("judged submission %s: %s", sid, verdict)
    return verdict
