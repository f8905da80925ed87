"""Live standings of the example judge: record verdicts, render the board page.

The worker calls ``record_submission`` once a verdict is committed. The page renders one
page of the board and "your rank" from Redis, then ``static/standings.js`` keeps both live
from the moves on ``standings:<id>`` (reading rows again through ``standings_rows`` only
when the moves cannot keep them) and shows "N watching" from
``presence:standings:<id>``. See docs/LEADERBOARDS.md.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import redis
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from django_bridge.conf import get_settings
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
    """Render a page of the board and the viewer's row; the page then keeps itself live."""
    contest = get_object_or_404(Contest, pk=contest_id)
    rules = rules_for(contest)
    try:
        number = max(1, int(request.GET.get("page", "1")))
    except ValueError:
        number = 1
    page: dict[str, Any] | None = None
    mine: dict[str, Any] | None = None
    try:
        page = board().page(rules, number)
        if request.user.is_authenticated:
            mine = board().row(rules, request.user.pk)
    except redis.RedisError as exc:  # the page still works: the script reads it again
        logger.warning("standings of contest %s unavailable: %s", contest.pk, exc)
    total = page["n"] if page else 0
    pages = max(1, -(-total // TOP_N))
    client_js = get_settings().client_js_url
    return render(
        request,
        "judge/standings.html",
        {
            "contest": contest,
            "problems": [p.code for p in contest.problems.all()],
            "page": page,
            "number": number,
            "pages": range(1, pages + 1),
            "mine": mine,
            "config": {
                "contest": str(contest.pk),
                "me": str(request.user.pk) if request.user.is_authenticated else None,
                "page": number,
                "pageSize": TOP_N,
                "problems": [p.code for p in contest.problems.all()],
            },
            "standings_js": client_js.rsplit("/", 1)[0] + "/standings.js",
        },
    )


@require_GET
def standings_rows(request: HttpRequest, contest_id: int) -> HttpResponse:
    """Answer ``Leaderboard.window`` as JSON: ``?start=&count=`` or ``?around=&k=``.

    What the page's script reads when the moves cannot keep a part of the board.
    """
    contest = get_object_or_404(Contest, pk=contest_id)
    try:
        if "around" in request.GET:
            window = board().window(
                rules_for(contest),
                around=request.GET["around"],
                k=min(100, int(request.GET.get("k", "0"))),
            )
        else:
            window = board().window(
                rules_for(contest),
                int(request.GET.get("start", "0")),
                min(500, int(request.GET.get("count", str(TOP_N)))),
            )
    except ValueError as exc:
        return HttpResponseBadRequest(str(exc))
    response = JsonResponse(window)
    response["Cache-Control"] = "no-store"
    return response
