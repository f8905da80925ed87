"""The management command and the served views in a real Django project (the bridge's sample).

``manage.py realtime_follow_ccs`` follows a local feed (basic auth, a dropped connection)
into the site's Redis; ``contests/<id>/scoreboard`` and ``awards`` then serve what the
reference computes from the same lines, valid against the spec's formats (2023-06 integer
minutes and, with ``?version=2026-01``, the newer RELTIME times).
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
for extra in (str(ROOT / "tests" / "django"), str(ROOT / "example"), str(ROOT)):
    if extra not in sys.path:
        sys.path.insert(0, extra)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bridge_sample_settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth.models import AnonymousUser  # noqa: E402
from django.core.management import CommandError, call_command  # noqa: E402
from django.http import HttpResponse  # noqa: E402
from django.test import Client, RequestFactory, override_settings  # noqa: E402
from django.urls import resolve  # noqa: E402

from django_bridge.ccs.settings import ccs_redis  # noqa: E402
from django_bridge.ccs.store import ContestStore  # noqa: E402
from django_bridge.ccs.views import awards_view, scoreboard_view  # noqa: E402
from django_bridge.leaderboard import Contest, Leaderboard  # noqa: E402
from tests.ccs import reference  # noqa: E402
from tests.ccs.feedgen import generate  # noqa: E402
from tests.ccs.feedserver import Feed, FeedServer  # noqa: E402
from tests.ccs.helpers import board_rows, validator  # noqa: E402

pytestmark = pytest.mark.broker


class Staff:
    is_staff = True


def get(view: Any, path: str, contest: str, user: Any = None) -> HttpResponse:
    request = RequestFactory().get(path)
    request.user = user or AnonymousUser()
    response: HttpResponse = view(request, contest)
    return response


def realtime(redis_url: str, prefix: str) -> dict[str, Any]:
    return {
        **settings.REALTIME,
        "LEADERBOARD_REDIS_URL": redis_url,
        "LEADERBOARD_PREFIX": f"{prefix}lb:",
        "CCS_PREFIX": f"{prefix}ccs:",
    }


def test_command_follows_and_views_serve(redis_url: str, prefix: str) -> None:
    lines = generate(seed=5, submissions=300, rejudges=10).lines("2023-06")
    server = FeedServer(Feed("wf", lines, user="jury", password="pw", drop_after=700))
    out = io.StringIO()
    try:
        with override_settings(REALTIME=realtime(redis_url, prefix)):
            call_command(
                "realtime_follow_ccs",
                server.base,
                "--contest=wf",
                "--user=jury",
                "--password=pw",
                "--medals=4,4,4",
                "--read-timeout=10",
                stdout=out,
            )
            board = Leaderboard.from_settings()
            public = get(scoreboard_view, "/api/contests/wf/scoreboard", "wf")
            newer = get(scoreboard_view, "/api/contests/wf/scoreboard?version=2026-01", "wf")
            awards = get(awards_view, "/api/contests/wf/awards", "wf")
            missing = get(scoreboard_view, "/api/contests/nope/scoreboard", "nope")
            page = example_page("wf")
    finally:
        server.close()
    assert "end of updates" in out.getvalue()
    assert len(server.feed.requests) == 2  # the dropped connection was resumed
    assert public.status_code == 200 and public["Content-Type"] == "application/json"
    served = orjson.loads(public.content)
    assert served["rows"] == reference.scoreboard_rows(lines, public=True)
    validator("2023-06", "scoreboard").validate(served)
    validator("master", "scoreboard").validate(orjson.loads(newer.content))
    prizes = orjson.loads(awards.content)
    validator("2023-06", "awards").validate(prizes)
    assert {a["id"] for a in prizes} >= {"winner", "gold-medal", "silver-medal", "bronze-medal"}
    assert missing.status_code == 404
    rows = board.standings(Contest(id="wf"), view="public")
    assert board_rows(rows) == reference.leaderboard_rows(lines, public=False)
    # the example site's page of the followed contest: the board, then live channels
    assert page.status_code == 200
    html = page.content.decode()
    leader = rows[0]
    assert f'"name": "{leader["name"]}"' in html or f'"name":"{leader["name"]}"' in html
    assert "leaderboard:wf" in html and "contest:wf" in html and ">finalized<" in html


def example_page(contest_id: str) -> HttpResponse:
    """GET the example site's followed-contest page (its own URLconf, this test's Redis)."""
    from judge import standings

    standings.board.cache_clear()  # the example caches its Leaderboard (settings differ here)
    try:
        with override_settings(ROOT_URLCONF="judgesite.urls"):
            response: HttpResponse = Client().get(f"/followed/{contest_id}/")
            return response
    finally:
        standings.board.cache_clear()


def test_full_view_is_for_staff(redis_url: str, prefix: str) -> None:
    with override_settings(REALTIME=realtime(redis_url, prefix)):
        store = ContestStore(ccs_redis(), "c1", f"{prefix}ccs:")
        store.put_docs({"scoreboard:public": {"v": "public"}, "scoreboard:full": {"v": "full"}})
        anonymous = get(scoreboard_view, "/", "c1")
        staff = get(scoreboard_view, "/", "c1", Staff())
    assert orjson.loads(anonymous.content) == {"v": "public"}
    assert orjson.loads(staff.content) == {"v": "full"}


def test_urls_module_and_bad_medals() -> None:
    with override_settings(ROOT_URLCONF="django_bridge.ccs.urls"):
        assert resolve("/contests/wf/scoreboard").func is scoreboard_view
        assert resolve("/contests/wf/awards").func is awards_view
    with pytest.raises(CommandError, match="three counts"):
        call_command("realtime_follow_ccs", "http://127.0.0.1:1/api", "--contest=x", "--medals=4,4")
