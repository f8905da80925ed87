"""The example judge site in Chromium: the processes of its Procfile, a user's whole flow.

Runs what ``honcho start`` runs (``migrate``, ``seed_demo``, ``runserver``, ``realtime
serve``; the judge is run ``--once`` when the test wants a verdict, so each step is
deterministic) with the environment of ``.env.example`` (own ports, database and Redis
prefix). Logs in, submits, watches the contest page and the submission page update live,
sees an announcement, and saves the screenshots docs/example-contest.png and
docs/example-submission.png (``REALTIME_E2E_SCREENSHOT_DIR`` to put them elsewhere).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REDIS_URL, ROOT, free_port, require_service
from tests.e2e.conftest import wait_for

pytestmark = [pytest.mark.browser, pytest.mark.broker]

MANAGE = [sys.executable, str(ROOT / "example" / "manage.py")]
SHOTS = Path(os.environ.get("REALTIME_E2E_SCREENSHOT_DIR", ROOT / "docs"))


def _env_example() -> dict[str, str]:
    values = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


class Site:
    """The example's processes; stopped by PID when the test ends."""

    def __init__(self, tmp: Path, prefix: str) -> None:
        self.rt_port, self.web_port = free_port(), free_port()
        self.web = f"http://127.0.0.1:{self.web_port}"
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("REALTIME_") and k != "DJANGO_SETTINGS_MODULE"
        }
        self.env.update(_env_example())
        self.env.update(
            {
                "REALTIME_BROKER_URL": REDIS_URL,
                "REALTIME_REDIS_PREFIX": prefix,
                "REALTIME_LEADERBOARD_PREFIX": prefix + "lb:",
                "REALTIME_PUBLIC_URL": f"ws://127.0.0.1:{self.rt_port}/ws",
                "REALTIME_ALLOWED_ORIGINS": self.web,
                "EXAMPLE_DB": str(tmp / "judge.sqlite3"),
                "PYTHONUNBUFFERED": "1",
            }
        )
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []

    def run(self, *args: str) -> str:
        result = subprocess.run(
            [*MANAGE, *args], env=self.env, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, f"{args}: {result.stdout}\n{result.stderr}"
        return result.stdout

    def start(self, name: str, cmd: list[str], ready: str) -> None:
        log = self.tmp / f"{name}.log"
        with log.open("wb") as out:
            self.procs.append(subprocess.Popen(cmd, env=self.env, cwd=ROOT, stdout=out, stderr=out))
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(ready, timeout=2):
                    return
            except OSError:
                assert self.procs[-1].poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """One running example per module: the flow test, then the reset test on its data."""
    require_service(REDIS_URL, 6379)
    prefix = f"rtex:{uuid.uuid4().hex[:10]}:"
    running = Site(tmp_path_factory.mktemp("example"), prefix)
    try:
        running.run("migrate", "--noinput")
        running.run("seed_demo")
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
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


def _live(page: Any) -> None:
    wait_for(page, "document.getElementById('rt-status').textContent.includes('live')")


def test_example_flow_live_in_the_browser(page: Any, site: Site) -> None:
    """Log in, submit, see the verdict and an announcement arrive live; take screenshots."""
    assert "realtime_check: ok" in site.run("realtime_check", "--origin", site.web)

    page.goto(site.web + "/login/")
    page.fill("input[name=username]", "demo")
    page.fill("input[name=password]", "demo")
    page.click("button[type=submit]")
    page.goto(site.web + "/contest/1/")
    page.click("text=A. Sum of two numbers")
    page.fill("textarea[name=source]", "a, b = map(int, input().split())\n# verdict: WA@3\n")
    page.click("text=Submit")
    page.wait_for_url("**/submission/1/")
    _live(page)
    assert page.text_content("#status") == "queued"

    contest = page.context.new_page()
    # this computer's clock is 2 hours slow: the banner must still count on the server's
    contest.add_init_script("const real = Date.now; Date.now = () => real() - 7200000;")
    contest.goto(site.web + "/contest/1/")
    _live(contest)
    row = '#mine tr[data-submission="1"] .verdict'
    assert contest.text_content(row) == "queued"
    wait_for(contest, "document.getElementById('banner').dataset.phase === 'running'")
    assert "ends in 4:5" in str(contest.text_content("#banner"))  # 5 h contest, 5 min in

    site.run("judge_worker", "--once", "--speed", "0.2")
    wait_for(contest, f"document.querySelector('{row}').textContent === 'WA'")
    wait_for(page, "document.getElementById('status').textContent === 'WA'")
    verdicts = page.eval_on_selector_all(
        "#tests tbody .verdict", "els => els.map(e => e.textContent)"
    )
    assert verdicts == ["AC", "AC", "WA"]

    site.run(
        "realtime_publish",
        "contest:1",
        "contest.announcement",
        '{"title": "Clarification", "body": "In A, a and b fit in 32 bits."}',
    )
    text = wait_for(contest, "document.querySelector('#announcements .announcement')?.textContent")
    assert text == "Clarification: In A, a and b fit in 32 bits."

    frozen = '{"contest": 1, "status": "frozen", "frozen": true}'
    site.run("realtime_publish", "contest:1", "contest.status", frozen, "--state")
    wait_for(contest, "document.getElementById('banner').dataset.phase === 'frozen'")
    assert "Standings frozen · ends in 4:5" in str(contest.text_content("#banner"))

    SHOTS.mkdir(parents=True, exist_ok=True)
    contest.wait_for_timeout(1300)  # let the highlight fade for a clean picture
    for shown in (contest, page):
        shown.set_viewport_size({"width": 1100, "height": 640})
    contest.screenshot(path=str(SHOTS / "example-contest.png"), full_page=True)
    page.screenshot(path=str(SHOTS / "example-submission.png"), full_page=True)
    assert page.problems.errors == []


def test_reset_demo_clears_database_and_standings(site: Site) -> None:
    """reset_demo removes the judged contest's rows and its Redis board, then seeds anew.

    Runs after the flow test, on its site: contest 1 has a judged submission.
    """
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    board_keys = f"{site.env['REALTIME_LEADERBOARD_PREFIX']}*"
    site.run("shell", "-v", "0", "-c", _SUBMIT)  # also works when run alone
    site.run("judge_worker", "--once", "--speed", "0")
    assert list(client.scan_iter(match=board_keys))  # the verdict is on the board
    out = site.run("reset_demo")
    assert "reset: 1 contest(s)" in out and "demo data ready" in out
    assert list(client.scan_iter(match=board_keys)) == []
    counts = site.run("shell", "-v", "0", "-c", _COUNTS).split()
    assert counts[0] == "0" and counts[1] == "1"  # no submissions; one fresh contest
    assert int(counts[2]) > 1  # ids are not reused: the new contest is not contest 1
    client.close()


_SUBMIT = """
from django.contrib.auth import get_user_model
from judge.models import Problem, Submission
demo = get_user_model().objects.get(username="demo")
Submission.objects.create(problem=Problem.objects.first(), user=demo, source="# verdict: AC")
"""
_COUNTS = """
from judge.models import Contest, Submission
print(Submission.objects.count(), Contest.objects.count(), Contest.objects.get().pk)
"""
