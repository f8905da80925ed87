"""Firefox for the e2e tests: Debian's firefox-esr driven by puppeteer-core over WebDriver BiDi.

Playwright's Firefox is a patched build that we do not download; stock Firefox speaks
WebDriver BiDi, which puppeteer-core (npm, installed by ``scripts/test`` with ``npm ci``)
drives. ``puppeteer_bridge.mjs`` runs it in a Node process; ``FirefoxPage`` offers the few
Playwright ``Page`` methods the tests use (``goto``, ``set_content``, ``evaluate``,
``wait_for_function``, ``problems``), so a test runs unchanged in either browser.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
FIREFOX = os.environ.get("REALTIME_E2E_FIREFOX", "/usr/bin/firefox-esr")
BRIDGE = Path(__file__).resolve().parent / "puppeteer_bridge.mjs"


def missing(message: str) -> None:
    """Fail under CI=true, skip elsewhere."""
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def firefox_or_skip() -> str:
    if not (os.path.exists(FIREFOX) or shutil.which(FIREFOX)):
        missing(f"{FIREFOX} not found (apt-get install firefox-esr, or run scripts/test)")
    if not (ROOT / "node_modules" / "puppeteer-core").is_dir() or not shutil.which("node"):
        missing("puppeteer-core not installed (npm ci, or run scripts/test)")
    return FIREFOX


class BridgeError(RuntimeError):
    """The browser or the page reported an error."""


class FirefoxBrowser:
    """One Firefox behind the Node bridge; one page at a time."""

    def __init__(self, executable: str) -> None:
        self._proc = subprocess.Popen(
            ["node", str(BRIDGE), executable],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self._next = 0
        self._lock = threading.Lock()
        self._exposed: dict[str, Any] = {}

    def call(self, cmd: str, timeout: float = 60.0, **args: Any) -> Any:
        """Send one command and wait for its answer."""
        with self._lock:
            self._next += 1
            request = {"id": self._next, "cmd": cmd, **args}
            assert self._proc.stdin is not None and self._proc.stdout is not None
            self._proc.stdin.write(json.dumps(request) + "\n")
            self._proc.stdin.flush()
            timer = threading.Timer(timeout, self._proc.kill)  # a hung browser fails the test
            timer.start()
            try:
                while True:
                    line = self._proc.stdout.readline()
                    if not line:
                        raise BridgeError(f"the Firefox bridge exited ({cmd})")
                    answer = json.loads(line)
                    if "callback" not in answer:
                        break
                    # the page called an exposed function: answer it, then keep waiting
                    value = self._exposed[answer["callback"]](*answer["args"])
                    self._proc.stdin.write(json.dumps({"cb": answer["cb"], "value": value}) + "\n")
                    self._proc.stdin.flush()
            finally:
                timer.cancel()
        if not answer["ok"]:
            raise BridgeError(answer["error"])
        return answer["value"]

    def new_page(self) -> FirefoxPage:
        self.call("newPage")
        return FirefoxPage(self)

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                assert self._proc.stdin is not None
                self._proc.stdin.write('{"cmd":"quit"}\n')
                self._proc.stdin.flush()
                self._proc.wait(15)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait(5)


class _Handle:
    def __init__(self, value: Any) -> None:
        self._value = value

    def json_value(self) -> Any:
        return self._value


class _RemoteErrors(list[str]):
    """The page's console errors and uncaught exceptions, as a list; clear() clears them there."""

    def __init__(self, browser: FirefoxBrowser) -> None:
        super().__init__(browser.call("errors"))
        self._browser = browser

    def clear(self) -> None:
        super().clear()
        self._browser.call("clearErrors")


class _Problems:
    def __init__(self, browser: FirefoxBrowser) -> None:
        self._browser = browser

    @property
    def errors(self) -> _RemoteErrors:
        return _RemoteErrors(self._browser)


class FirefoxPage:
    """The subset of Playwright's ``Page`` that the e2e tests call."""

    def __init__(self, browser: FirefoxBrowser) -> None:
        self._browser = browser
        self.problems = _Problems(browser)

    def goto(self, url: str) -> None:
        self._browser.call("goto", url=url)

    def set_content(self, html: str) -> None:
        self._browser.call("setContent", html=html)

    def expose_function(self, name: str, function: Any) -> None:
        """Make ``window[name]`` call ``function`` in this process (answered during commands)."""
        self._browser._exposed[name] = function
        self._browser.call("exposeFunction", name=name)

    def evaluate(self, expression: str, arg: Any = None) -> Any:
        return self._browser.call("evaluate", expr=expression, arg=arg)

    def wait_for_function(
        self, expression: str, arg: Any = None, timeout: float = 30000
    ) -> _Handle:
        value = self._browser.call(
            "waitFor", timeout=timeout / 1000 + 30, expr=expression, arg=arg, ms=timeout
        )
        return _Handle(value)

    def wait_for_timeout(self, milliseconds: float) -> None:
        time.sleep(milliseconds / 1000)

    def close(self) -> None:
        self._browser.call("closePage")
