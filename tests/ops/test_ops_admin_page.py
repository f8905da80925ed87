"""/admin in headless Chromium: live figures of two nodes (three workers), basic auth.

The screenshot goes to a temporary file, or to ``REALTIME_ADMIN_SCREENSHOT`` when set
(``REALTIME_ADMIN_SCREENSHOT=docs/admin.png pytest tests/ops/test_ops_admin_page.py``
renews the one in docs/OPERATIONS.md).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.sync.client import ClientConnection, connect

from tests.conftest import TEST_API_KEY, ServerProcess
from tests.e2e.conftest import CHROMIUM_ARGS, _chromium_or_skip

pytestmark = pytest.mark.browser

CHANNELS = {"contest:42": 6, "leaderboard:42": 4, "submission:9001": 1}


@pytest.fixture
def busy_cluster(server_factory: Any, redis_url: str, prefix: str) -> Iterator[Any]:
    """Two nodes (2 workers + 1) with watchers on a few channels and events flowing."""
    common = {"broker_url": redis_url, "redis_prefix": prefix, "admin": "true"}
    nodes: list[ServerProcess] = [server_factory(workers="2", **common), server_factory(**common)]
    sockets: list[ClientConnection] = []
    stack = contextlib.ExitStack()
    stop = threading.Event()
    index = 0
    for channel, count in CHANNELS.items():
        for _ in range(count):
            ws = stack.enter_context(connect(nodes[index % 2].ws_url))
            index += 1
            ws.recv(timeout=5)  # welcome
            if channel.startswith("submission:"):
                token = _token("u1", [channel])
                ws.send(orjson.dumps({"op": "auth", "token": token}).decode())
                ws.recv(timeout=5)
            ws.send(orjson.dumps({"op": "subscribe", "channel": channel}).decode())
            sockets.append(ws)

    def publish() -> None:
        n = 0
        while not stop.wait(0.02):
            nodes[n % 2].publish({"channel": "contest:42", "type": "tick", "data": {"n": n}})
            n += 1

    publisher = threading.Thread(target=publish, daemon=True)
    publisher.start()
    # drain the watchers' sockets so nobody becomes a slow consumer
    readers = [threading.Thread(target=_drain, args=(ws,), daemon=True) for ws in sockets]
    for reader in readers:
        reader.start()
    try:
        yield nodes
    finally:
        stop.set()
        publisher.join(5)
        stack.close()


def _token(user: str, channels: list[str]) -> str:
    from tests.conftest import make_token

    return make_token(user, channels)


def _drain(ws: ClientConnection) -> None:
    try:
        while True:
            ws.recv()
    except Exception:
        return


def test_admin_page_shows_live_figures_across_workers_and_nodes(
    busy_cluster: list[ServerProcess], tmp_path: Path
) -> None:
    """The page lists three workers on two nodes, the totals and the busiest channels."""
    executable = _chromium_or_skip()
    from playwright.sync_api import sync_playwright

    server = busy_cluster[0]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS, headless=True
        )
        try:
            context = browser.new_context(
                viewport={"width": 1280, "height": 640},
                http_credentials={"username": "ops", "password": TEST_API_KEY},
            )
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(server.url + "/admin")
            page.wait_for_function(
                """() => window.lastStats
                    && window.lastStats.nodes.length === 2
                    && document.querySelectorAll('#workers tr').length === 3
                    && window.lastStats.totals.connections === 11
                    && window.lastStats.totals.messages_out_per_s > 0""",
                timeout=30_000,
            )
            assert page.inner_text("#t-connections") == "11"
            assert page.inner_text("#t-broker") == "up"
            rows = page.locator("#channels tr").all_inner_texts()
            assert rows[0].split("\t")[0] == "contest:42" and rows[0].split("\t")[1] == "6"
            assert any(row.startswith("leaderboard:42") for row in rows)
            assert "2 node(s), 3 worker(s)" in page.inner_text("#meta")
            assert not errors
            path = Path(os.environ.get("REALTIME_ADMIN_SCREENSHOT", tmp_path / "admin.png"))
            page.screenshot(path=str(path), full_page=True)
            assert path.stat().st_size > 10_000
        finally:
            browser.close()
