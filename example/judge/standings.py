"""Live standings of the example judge: record verdicts, render the board page.

The worker calls ``record_submission`` once a verdict is committed; the page renders the
current top N and "your rank" from Redis, then follows ``leaderboard:<id>`` (the board) and
``user:<id>`` (the viewer's own row, useful outside the top N) in the browser.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import redis
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from django_bridge.leaderboard import Contest as Rules
from django_bridge.leaderboard import Leaderboard
from judge.models import Contest, Submission

logger = logging.getLogger(__name__)

TOP_N = 50


@functools.cache
def board() -> Leaderboard:
    """Return the process's leaderboard store (from ``settings.REALTIME``)."""
    return Leaderboard.from_settings()


def rules_for(contest: Contest) -> Rules:
    """Return the leaderboard rules of a contest: ICPC, 20 minutes a wrong attempt."""
    return Rules(
        id=str(contest.pk),
        rules="icpc",
        start=contest.starts_at,
        freeze_at=getattr(contest, "freeze_at", None),
        top_n=TOP_N,
    )


def record_submission(submission: Submission) -> None:
    """Put a judged submission on its contest's board (call after the verdict commits)."""
    if not submission.verdict:
        return
    contest = submission.problem.contest
    board().record_verdict(
        rules_for(contest),
        submission.user_id,
        submission.problem.code,
        submission.verdict,
        max(submission.created_at, contest.starts_at),
        submission=submission.pk,
        name=submission.user.get_username(),
    )


def standings_view(request: HttpRequest, contest_id: int) -> HttpResponse:
    """Render the top N and the viewer's row; the page then updates itself live."""
    contest = get_object_or_404(Contest, pk=contest_id)
    rules = rules_for(contest)
    snapshot: dict[str, Any] | None = None
    mine: dict[str, Any] | None = None
    try:
        snapshot = board().snapshot(rules)
        if request.user.is_authenticated:
            mine = board().row(rules, request.user.pk)
    except redis.RedisError as exc:  # the page still works: the first event fills it in
        logger.warning("standings of contest %s unavailable: %s", contest.pk, exc)
    return render(
        request,
        "judge/standings.html",
        {
            "contest": contest,
            "problems": [p.code for p in contest.problems.all()],
            "snapshot": snapshot,
            "mine": mine,
            "board_channel": f"leaderboard:{contest.pk}",
            "user_channel": f"user:{request.user.pk}" if request.user.is_authenticated else "",
        },
    )
