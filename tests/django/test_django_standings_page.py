"""The example site's standings page in headless Chromium: own row pinned, pages, watchers.

A real ``realtime serve`` (redis broker, every origin allowed, fast presence), the example
site served from a thread, verdicts recorded with the site's ``record_submission``
board, and Debian's Chromium driven by Playwright. The test saves docs/standings.png (or
``REALTIME_STANDINGS_SCREENSHOT``).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
from bridge_helpers import RealtimeOverride, RealtimeServer, start_server
from bridge_sample_settings import REDIS_PREFIX, REDIS_URL
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone
from judge import standings
from judge.models import Contest, Problem

from tests.e2e.conftest import CHROMIUM_ARGS, _chromium_or_skip

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = Path(os.environ.get("REALTIME_STANDINGS_SCREENSHOT", ROOT / "docs/standings.png"))
PROBLEMS = "ABCDE"


@pytest.fixture
def page_server(redis_client: Any) -> Iterator[RealtimeServer]:
    server = start_server(
        {
            "REALTIME_BROKER_URL": REDIS_URL,
            "REALTIME_REDIS_PREFIX": REDIS_PREFIX,
            "REALTIME_ALLOWED_ORIGINS": "*",
            "REALTIME_PRESENCE_INTERVAL": "0.3",
        }
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def site(settings: Any, page_server: RealtimeServer) -> Iterator[RealtimeOverride]:
    from bridge_sample_settings import REALTIME

    override = RealtimeOverride(
        settings,
        {
            **REALTIME,
            "URL": page_server.ws_url,
            "SERVER_URL": page_server.http_url,
            "LEADERBOARD_PREFIX": f"{REDIS_PREFIX}lb{uuid.uuid4().hex[:6]}:",
        },
    )
    settings.ALLOWED_HOSTS = ["*"]
    standings.board.cache_clear()
    yield override
    standings.board.cache_clear()


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def live_site(site: RealtimeOverride) -> Iterator[str]:
    """Serve the sample project (the example judge) on a free port in a thread."""
    from django.core.wsgi import get_wsgi_application

    httpd = make_server("127.0.0.1", 0, get_wsgi_application(), _Server, _Quiet)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def _wait(page: Any, script: str, arg: Any = None, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = page.evaluate(script, arg)
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for: {script}")


def test_standings_page_pins_own_row_pages_and_counts_watchers(live_site: str) -> None:
    """Own rank pinned and live while others overtake; page 2 live; "N watching" shown."""
    from playwright.sync_api import sync_playwright

    now = timezone.now()
    contest = Contest.objects.create(
        title="Spring Cup", starts_at=now - timedelta(hours=2), ends_at=now + timedelta(hours=3)
    )
    for code in PROBLEMS:
        Problem.objects.create(contest=contest, code=code, title=code, test_count=3)
    users = get_user_model()
    me = users.objects.create_user("you", password="x")
    rules = standings.rules_for(contest)
    board = standings.board()
    people = [users.objects.create_user(f"team{i:03d}", password="x") for i in range(90)]
    start = contest.starts_at.timestamp()
    for i, person in enumerate(people):
        for j, code in enumerate(PROBLEMS[: 1 + i % 4]):
            verdict = "AC" if (i + j) % 3 else "WA"
            at = start + 60 * (5 + 7 * j + i % 50)
            board.record_verdict(rules, person.pk, code, verdict, at, name=person.username)
    board.record_verdict(rules, me.pk, "A", "AC", start + 600, name="you")
    board.record_verdict(rules, me.pk, "B", "AC", start + 1500, name="you")

    web = Client()
    web.force_login(me)
    cookie = web.cookies[django_settings.SESSION_COOKIE_NAME].value
    url = f"{live_site}/contest/{contest.pk}/standings/?page=2"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=_chromium_or_skip(), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1000, "height": 900})
            context.add_cookies(
                [
                    {
                        "name": django_settings.SESSION_COOKIE_NAME,
                        "value": cookie,
                        "url": live_site,
                    }
                ]
            )
            page = context.new_page()
            response = page.goto(url)
            assert response is not None and response.status == 200, page.content()[:3000]
            _wait(
                page, "() => document.getElementById('watching').textContent.includes('watching')"
            )

            def pinned() -> int:
                return int(
                    _wait(page, "() => document.querySelector('#pinned tr td')?.textContent")
                )

            assert pinned() == board.row(rules, me.pk)["rank"]
            # others overtake: the pinned rank follows within a window, with no own verdict
            for person in people[:30]:
                for code in PROBLEMS:
                    board.record_verdict(
                        rules, person.pk, code, "AC", start + 300, name=person.username
                    )
            want = board.row(rules, me.pk)["rank"]
            _wait(
                page, "(w) => document.querySelector('#pinned tr td')?.textContent == w", str(want)
            )
            rows = board.page(rules, 2)["rows"]
            shown = _wait(
                page,
                """(first) => {
                  const cells = [...document.querySelectorAll('#rows tr td:nth-child(2)')];
                  return cells.length && cells[0].textContent === first
                    ? cells.map((td) => td.textContent) : null;
                }""",
                rows[0]["name"],
            )
            assert shown == [r["name"] for r in rows]
            page.evaluate("() => document.querySelector('#watching').textContent")
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
        finally:
            browser.close()
