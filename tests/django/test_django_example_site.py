"""The example judge site end to end: submit, judge, watch the verdict arrive live."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import orjson
import pytest
from bridge_helpers import RealtimeOverride, RealtimeServer, WsClient
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from django.utils import timezone
from judge.models import Contest, Problem, Submission

pytestmark = pytest.mark.django_db(transaction=True)


def _page_config(html: str) -> dict[str, Any]:
    match = re.search(r'<script id="realtime-config" type="application/json">(.*?)</script>', html)
    assert match, html
    return orjson.loads(match.group(1))


@pytest.fixture
def problem() -> Problem:
    now = timezone.now()
    contest = Contest.objects.create(
        title="Round", starts_at=now - timedelta(hours=1), ends_at=now + timedelta(hours=1)
    )
    return Problem.objects.create(contest=contest, code="A", title="Sum", test_count=4)


def test_submission_progress_arrives_live_in_order(
    realtime_settings: RealtimeOverride, bridge_server: RealtimeServer, problem: Problem
) -> None:
    """Submit, run the judge, and a page's subscriber sees every step in order."""
    user = get_user_model().objects.create_user("alice", password="x")
    web = Client()
    web.force_login(user)
    response = web.post(
        f"/problem/{problem.pk}/", {"language": "python", "source": "# verdict: WA@3\n"}
    )
    assert response.status_code == 302
    submission = Submission.objects.get()
    assert response["Location"] == f"/submission/{submission.pk}/"
    config = _page_config(web.get(response["Location"]).content.decode())
    channel = f"submission:{submission.pk}"
    ws = WsClient(config["url"], token=config["token"])
    try:
        subscribed = ws.subscribe(channel, since=config["since"][channel])
        call_command("judge_worker", "--once", "--speed", "0")
        events = ws.events(channel, 5)
    finally:
        ws.close()
    assert subscribed["state"]["type"] == "judge.queued"
    assert [(e["type"], e["data"].get("test")) for e in events] == [
        ("judge.compiling", None),
        ("judge.running", 1),
        ("judge.running", 2),
        ("judge.running", 3),
        ("judge.verdict", None),
    ]
    assert [e["offset"] for e in events] == [2, 3, 4, 5, 6]
    verdict = events[-1]["data"]
    assert verdict["verdict"] == "WA"
    assert [r["verdict"] for r in verdict["results"]] == ["AC", "AC", "WA"]
    submission.refresh_from_db()
    assert (submission.status, submission.verdict) == ("done", "WA")


def test_submission_page_is_private(realtime_settings: RealtimeOverride, problem: Problem) -> None:
    """Another user cannot open someone's submission page (it grants the channel)."""
    users = get_user_model().objects
    owner, other = users.create_user("o", password="x"), users.create_user("p", password="x")
    submission = Submission.objects.create(problem=problem, user=owner, source="x")
    web = Client()
    web.force_login(other)
    assert web.get(f"/submission/{submission.pk}/").status_code == 404


def test_judged_submission_reaches_standings(
    realtime_settings: RealtimeOverride, bridge_server: RealtimeServer, problem: Problem
) -> None:
    """After judging, the contest's standings page lists the contestant."""
    user = get_user_model().objects.create_user("bob-standings", password="x")
    Submission.objects.create(problem=problem, user=user, source="# verdict: AC")
    call_command("judge_worker", "--once", "--speed", "0")
    web = Client()
    web.force_login(user)
    page = web.get(f"/contest/{problem.contest_id}/standings/")
    assert page.status_code == 200
    assert "bob-standings" in page.content.decode()
