"""End-to-end fixtures: headless Chromium and Firefox (Debian's packages) driving real servers.

A module opts into Firefox too with ``BOTH_BROWSERS`` (see tests/e2e/browsers.py).

The browser is Debian's ``chromium`` (``/usr/bin/chromium``, or ``REALTIME_E2E_CHROMIUM``)
driven by Playwright for Python through ``executable_path``; Playwright's own browser
downloads are never used. Without the binary the tests fail under ``CI=true`` and are
skipped elsewhere (``scripts/test`` installs it).

Pages under test live in the realtime server's own origin (see ``open_test_page``), so
``/static/realtime.js`` and ``/ws`` are same-origin, as in production, and no Origin
allow-list is needed.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("REALTIME_E2E_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# The page the client tests drive: it loads the real client from the server and keeps what
# it receives in window.* for page.evaluate to read.
TEST_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>realtime e2e</title>
<link rel="icon" href="data:,"></head>
<body>
<script src="/static/realtime.js"></script>
<script>
window.log = { events: [], states: [], errors: [], connected: 0, disconnected: [], tokenCalls: 0,
               unsubscribed: [], stateChanges: [] };
window.start = function (channel, options) {
  options = options || {};
  var clientOptions = Object.assign({}, options.client || {});
  if (options.useGetToken) {
    clientOptions.getToken = async function () {
      window.log.tokenCalls++;
      return await window.mintToken(window.log.tokenCalls);
    };
  }
  var rt = new RealtimeClient("/ws", clientOptions);
  window.rt = rt;
  rt.on("connected", function () { window.log.connected++; });
  rt.on("disconnected", function (d) { window.log.disconnected.push(d); });
  rt.on("error", function (e) { window.log.errors.push(e); });
  rt.on("unsubscribed", function (d) { window.log.unsubscribed.push(d); });
  rt.on("state", function (s) { window.log.stateChanges.push(s); });
  window.sub = rt.subscribe(channel, {
    onState: function (event) { window.log.states.push(event); },
    onEvent: function (event) { window.log.events.push(event); },
  });
  return rt.state;
};
</script>
</body></html>
"""


def _chromium_or_skip() -> str:
    if os.path.exists(CHROMIUM) or shutil.which(CHROMIUM):
        return CHROMIUM
    message = f"{CHROMIUM} not found (apt-get install chromium, or run scripts/test)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)
    raise AssertionError  # unreachable


@pytest.fixture(scope="module")
def browser_name(request: pytest.FixtureRequest) -> str:
    """``chromium`` unless a module parametrizes it (``BOTH_BROWSERS``)."""
    return str(getattr(request, "param", "chromium"))


# a module whose tests run in Chromium and in Firefox: pytestmark = [..., BOTH_BROWSERS]
BOTH_BROWSERS = pytest.mark.parametrize(
    "browser_name", ["chromium", "firefox"], indirect=True, scope="module"
)


@pytest.fixture(scope="module")
def browser(browser_name: str) -> Iterator[Any]:
    """One headless browser per test module (its event loop must not outlive the module).

    Chromium through Playwright; Firefox through puppeteer-core over WebDriver BiDi
    (tests/e2e/browsers.py).
    """
    if browser_name == "firefox":
        from tests.e2e.browsers import FirefoxBrowser, firefox_or_skip

        firefox = FirefoxBrowser(firefox_or_skip())
        try:
            yield firefox
        finally:
            firefox.close()
        return
    executable = _chromium_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield instance
        finally:
            instance.close()


@dataclass
class PageProblems:
    """Console errors and uncaught exceptions seen by a page."""

    errors: list[str] = field(default_factory=list)


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context and page; page errors are kept in ``page.problems``."""
    from tests.e2e.browsers import FirefoxBrowser

    if isinstance(browser, FirefoxBrowser):
        firefox_page = browser.new_page()
        try:
            yield firefox_page
        finally:
            firefox_page.close()
        return
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    new_page = context.new_page()
    problems = PageProblems()
    new_page.on("pageerror", lambda exc: problems.errors.append(f"pageerror: {exc}"))
    new_page.on(
        "console",
        lambda msg: (
            problems.errors.append(f"console.{msg.type}: {msg.text}")
            if msg.type == "error"
            else None
        ),
    )
    new_page.problems = problems
    try:
        yield new_page
    finally:
        context.close()


def open_test_page(page: Any, server_url: str) -> None:
    """Open the client test page in the server's origin.

    The browser first loads a real document from the server (so that the page's origin and
    address space are the server's, as in production: Chromium's local-network checks block
    a synthetic origin from reaching 127.0.0.1), then the test page replaces its content.
    """
    page.goto(server_url + "/healthz")  # any document will do: it sets the origin
    page.set_content(TEST_PAGE)
    page.wait_for_function("typeof window.RealtimeClient === 'function'")
    problems = getattr(page, "problems", None)
    if problems is not None:
        problems.errors.clear()  # e.g. the browser's favicon request to the first document


def wait_for(page: Any, expression: str, timeout: float = 20.0, arg: Any = None) -> Any:
    """Wait until a JavaScript expression is truthy in the page; return its value."""
    handle = page.wait_for_function(expression, arg=arg, timeout=timeout * 1000)
    return handle.json_value()


def screenshot_path() -> Path:
    """Where the demo screenshot goes (docs/demo.png unless REALTIME_E2E_SCREENSHOT says)."""
    root = Path(__file__).resolve().parent.parent.parent
    return Path(os.environ.get("REALTIME_E2E_SCREENSHOT", root / "docs" / "demo.png"))
