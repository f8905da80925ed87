"""A followed contest's live standings (``manage.py realtime_follow_ccs``, docs/CONTEST-API.md).

The contest is judged elsewhere (DOMjudge, Kattis, ...); the follower feeds the bridge's
leaderboard and ``contest:<id>``. The page renders the board from Redis, then follows
``leaderboard:<id>`` and ``contest:<id>`` live; ``/api/contests/<id>/scoreboard`` serves the
same standings in the Contest API's format.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
import redis
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from django_bridge.ccs.follower import contest_status
from django_bridge.ccs.settings import ccs_prefix, ccs_redis
from django_bridge.ccs.store import ContestStore
from django_bridge.leaderboard import Contest
from judge.standings import TOP_N, board

logger = logging.getLogger(__name__)


def followed_standings(request: HttpRequest, contest_id: str) -> HttpResponse:
    """Render a followed contest's top N; the page then updates itself live."""
    try:
        store = ContestStore(ccs_redis(), contest_id, ccs_prefix())
        served = store.doc("scoreboard:public")
        snapshot: dict[str, Any] | None = board().snapshot(Contest(id=contest_id, top_n=TOP_N))
    except (redis.RedisError, ValueError) as exc:
        logger.warning("followed contest %s unavailable: %s", contest_id, exc)
        raise Http404("contest not followed") from exc
    if served is None:
        raise Http404("contest not followed")
    scoreboard = orjson.loads(served)
    problems = orjson.loads(store.doc("problems") or b"[]")
    return render(
        request,
        "judge/followed.html",
        {
            "contest_id": contest_id,
            "problems": problems,
            "snapshot": snapshot,
            "status": contest_status(scoreboard["state"]),
            "board_channel": f"leaderboard:{contest_id}",
            "contest_channel": f"contest:{contest_id}",
        },
    )
