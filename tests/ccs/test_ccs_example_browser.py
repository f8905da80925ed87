"""The example site shows a followed feed's standings live, in Chromium.

Runs the example's processes (``runserver``, ``realtime serve``) and, as a process too,
``manage.py realtime_follow_ccs`` against a local feed that holds in the middle of the
contest: the page opens on the half-way board, then updates itself, without a reload,
to the final board and the "finalized" state once the feed goes on. Saves
docs/example-followed.png (``REALTIME_E2E_SCREENSHOT_DIR`` to put it elsewhere).
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from django_bridge.ccs.store import ContestStore
from django_bridge.leaderboard import Contest, Leaderboard
from tests.ccs.feedgen import generate
from tests.ccs.feedserver import Feed, FeedServer
from tests.conftest import REDIS_URL, require_service
from tests.e2e.conftest import browser, browser_name, page, wait_for  # noqa: F401 - fixtures
from tests.e2e.test_example_site import MANAGE, SHOTS, Site

pytestmark = [pytest.mark.browser, pytest.mark.broker]


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    require_service(REDIS_URL, 6379)
    prefix = f"rtccs:{uuid.uuid4().hex[:10]}:"
    running = Site(tmp_path, prefix)
    try:
        running.run("migrate", "--noinput")
        running.start(
            "realtime",
            [sys.executable, "-m", "realtime", "serve", "--port", str(running.rt_port)],
            f"http://127.0.0.1:{running.rt_port}/healthz",
        )
        running.start(
            "web",
            [*MANAGE, "runserver", f"127.0.0.1:{running.web_port}", "--noreload"],
            running.web + "/",
        )
        yield running
    finally:
        running.stop()
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


def served(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_followed_standings_live_in_the_browser(page: Any, site: Site) -> None:  # noqa: F811
    cid = f"wf{uuid.uuid4().hex[:8]}"  # the example keeps CCS keys under the default prefix
    contest = generate(seed=44, teams=20, problems=6, submissions=200, rejudges=5, contest_id=cid)
    lines = contest.lines("2023-06")
    feed = Feed(cid, lines, hold_at=len(lines) // 2)
    server = FeedServer(feed)
    log = (site.tmp / "follow.log").open("wb")
    follower = subprocess.Popen(
        [*MANAGE, "realtime_follow_ccs", server.base, f"--contest={cid}", "--read-timeout=10"],
        env=site.env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    client = redis.Redis.from_url(REDIS_URL)
    try:
        url = f"{site.web}/followed/{cid}/"
        deadline = time.monotonic() + 30
        while served(url) != 200:
            assert follower.poll() is None, (site.tmp / "follow.log").read_text()
            assert time.monotonic() < deadline, "the follower never served the contest"
            time.sleep(0.1)
        held = orjson.loads(lines[feed.hold_at - 1])["token"]  # type: ignore[operator]
        store = ContestStore(client, cid)
        while store.client.get(f"{store.base}:token") != held.encode() or served(url) != 200:
            assert follower.poll() is None, (site.tmp / "follow.log").read_text()
            assert time.monotonic() < deadline, "the follower never reached the hold"
            time.sleep(0.1)
        time.sleep(0.3)  # the served documents follow at the next keep-alive
        page.goto(url)
        assert page.eval_on_selector_all("#standings thead th", "ths => ths.length") == 4 + 6
        wait_for(page, "document.getElementById('connection').textContent.includes('live')")
        assert page.text_content("#status") in ("started", "frozen")
        half = page.eval_on_selector_all(
            "#standings tbody tr",
            "rows => rows.map(tr => Array.from(tr.children).slice(0, 4).map(td => td.textContent))",
        )
        feed.gate.set()  # the rest of the contest: judgements, freeze, thaw, finalized
        follower.wait(60)
        assert follower.returncode == 0, (site.tmp / "follow.log").read_text()
        board = Leaderboard(client, prefix=site.env["REALTIME_LEADERBOARD_PREFIX"])
        top = board.top(Contest(id=cid), 50)
        final = [[str(r["rank"]), r["name"], str(r["solved"]), str(r["penalty"])] for r in top]
        wait_for(page, "document.getElementById('status').textContent === 'finalized'")
        wait_for(
            page,
            """final => JSON.stringify(Array.from(
                document.querySelectorAll('#standings tbody tr'),
                tr => Array.from(tr.children).slice(0, 4).map(td => td.textContent)))
              === JSON.stringify(final)""",
            arg=final,
        )
        assert final != half  # the board changed while the page was open
        page.set_viewport_size({"width": 1100, "height": 640})
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "example-followed.png"), full_page=False)
        assert page.problems.errors == []
    finally:
        if follower.poll() is None:
            follower.terminate()
            follower.wait(10)
        log.close()
        server.close()
        ContestStore(client, cid).delete()
        client.close()
