"""The live demo (``realtime serve --demo``) in headless Chromium."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import screenshot_path, wait_for

pytestmark = pytest.mark.browser


@pytest.fixture
def demo_server(server_factory: Any) -> Any:
    """A server in demo mode (memory broker, simulated contest)."""
    return server_factory(args=["--demo"])


def test_demo_page_renders_live_rows(page: Any, demo_server: Any) -> None:
    """The demo shows 25 standings rows that change, and a feed whose verdicts fill in."""
    page.goto(demo_server.url + "/")
    wait_for(page, "document.querySelectorAll('#board-body .board-row').length === 25")
    assert page.inner_text("#status-text") == "Live"
    first_board = page.inner_text("#board-body")

    wait_for(page, "window.demoStats.snapshots >= 3", timeout=30)
    wait_for(page, "(b) => document.querySelector('#board-body').innerText !== b", arg=first_board)
    done = "#feed .sub.done[data-verdict]"
    wait_for(page, f"document.querySelectorAll('{done}').length >= 3", timeout=30)
    verdicts = page.eval_on_selector_all(done, "items => items.map(i => i.dataset.verdict)")
    assert set(verdicts) <= {"AC", "WA", "TLE", "RE", "CE"}
    # a running submission shows its progress test by test
    wait_for(page, "document.querySelector('#feed .badge-running') !== null", timeout=30)
    assert "Test " in page.inner_text("#feed .badge-running")
    # the contest clock runs on server time
    assert page.inner_text("#clock") != "--:--"
    assert page.problems.errors == []


def test_demo_rows_move_when_ranks_change(page: Any, demo_server: Any) -> None:
    """A rank change animates rows to their new places (FLIP transforms)."""
    page.goto(demo_server.url + "/")
    wait_for(page, "window.demoStats.moves > 0", timeout=60)
    order = page.eval_on_selector_all(
        "#board-body .board-row .col-rank", "cells => cells.map(c => Number(c.textContent))"
    )
    assert order == sorted(order) and order[0] == 1


def test_demo_screenshot(page: Any, demo_server: Any) -> None:
    """Save a screenshot of the running demo for the docs (docs/demo.png)."""
    page.goto(demo_server.url + "/")
    wait_for(page, "document.querySelectorAll('#board-body .board-row').length === 25")
    wait_for(page, "window.demoStats.verdicts >= 4 && window.demoStats.snapshots >= 4", timeout=30)
    wait_for(page, "document.querySelectorAll('#feed .sub').length >= 8", timeout=30)
    page.wait_for_timeout(800)  # let the last row and cell animations settle for the picture
    path = screenshot_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 20_000
