"""docs/BRIDGE.md "Quick start", followed as written: a fresh Django project gets a live event.

The blocks marked ``<!-- quickstart:... -->`` in docs/BRIDGE.md are read from the file and
applied as they are: shell lines run in bash, ``write`` blocks create files, ``append``
blocks are appended. The only departures, so that runs can share the machine: the already
installed checkout stands in for ``pip install``, and free ports replace 8888 and 8000.
Then Chromium opens the page and sees the event published by another request.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, free_port
from tests.e2e.conftest import wait_for

pytestmark = pytest.mark.browser

BRIDGE_MD = ROOT / "docs" / "BRIDGE.md"
BLOCK = re.compile(r"<!-- quickstart:(\w+)(?: (\S+))? -->\n```\w*\n(.*?)```", re.S)
BIN = Path(sys.executable).parent


def quickstart_blocks() -> list[tuple[str, str | None, str]]:
    """Return (kind, path, text) of every marked block, in document order."""
    blocks = [(m[1], m[2], m[3]) for m in BLOCK.finditer(BRIDGE_MD.read_text())]
    assert [k for k, _, _ in blocks] == ["shell", "append", "write", "append", "write", "run"]
    return blocks


class Processes:
    """Long-running children of the test, stopped by PID at the end."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, cmd: str, cwd: Path, env: dict[str, str]) -> Path:
        log = self.logdir / f"{name}.log"
        with log.open("wb") as out:
            self.procs.append(
                subprocess.Popen(
                    ["bash", "-c", f"exec {cmd}"], cwd=cwd, env=env, stdout=out, stderr=out
                )
            )
        return log

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    yield procs
    procs.stop()


def _wait_http(url: str, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} not up:\n{log.read_text()}") from None
            time.sleep(0.1)


def _run(cmd: str, cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(
        ["bash", "-ec", cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"{cmd}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_quickstart_project_receives_live_event(
    page: Any, processes: Processes, tmp_path: Path
) -> None:
    """startproject + the documented settings/urls/template: the page shows a published event."""
    rt_port, web_port = free_port(), free_port()

    def ports(text: str) -> str:
        return text.replace("8888", str(rt_port)).replace("8000", str(web_port))

    env = {k: v for k, v in os.environ.items() if not k.startswith(("REALTIME_", "DJANGO_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    work = tmp_path / "work"
    work.mkdir()
    project = work
    blocks = quickstart_blocks()
    for kind, path, text in blocks:
        if kind == "shell":
            for line in text.strip().splitlines():
                command = line.split("#", 1)[0].strip()
                if command.startswith("pip install"):
                    continue  # this checkout is installed already
                if command.startswith("realtime serve"):
                    log = processes.start("realtime", f"{command} --port {rt_port}", work, env)
                    _wait_http(f"http://127.0.0.1:{rt_port}/healthz", log)
                elif command.startswith("cd "):
                    project = project / command[3:].strip()
                else:
                    _run(command, project, env)
        elif kind in ("write", "append"):
            assert path is not None
            target = project / path
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("a" if kind == "append" else "w") as fh:
                fh.write(("\n" if kind == "append" else "") + ports(text))
        else:  # run
            for line in text.strip().splitlines():
                if line.endswith("runserver"):
                    command = f"{line} 127.0.0.1:{web_port} --noreload"
                    log = processes.start("web", command, project, env)
                    _wait_http(f"http://127.0.0.1:{web_port}/live/", log)
                else:
                    out = _run(line, project, env)
                    if "realtime_check" in line:
                        assert "realtime_check: ok" in out, out

    page.goto(f"http://127.0.0.1:{web_port}/live/")
    wait_for(page, "document.getElementById('status').textContent === 'live'")
    with urllib.request.urlopen(
        f"http://127.0.0.1:{web_port}/announce/?title=First", timeout=10
    ) as response:
        assert response.read() == b"sent"
    titles = wait_for(
        page,
        "Array.from(document.querySelectorAll('#log li')).map(li => li.textContent)"
        ".filter(t => t).length && "
        "Array.from(document.querySelectorAll('#log li')).map(li => li.textContent)",
    )
    assert titles == ["First"]
    # the browser's own /favicon.ico request is the only 404 (the client loaded: it is live)
    assert [e for e in page.problems.errors if "404" not in e] == []


def test_deploy_step0_settings_are_the_quickstart_ones() -> None:
    """DEPLOY.md "Step 0" shows the REALTIME dict the quick start runs with (and --dev's)."""
    from realtime.config import DEMO_SECRET, DEV_API_KEY

    deploy = (ROOT / "docs" / "DEPLOY.md").read_text()
    step0 = deploy[deploy.index("## Step 0") : deploy.index("## Step 1")]
    (deploy_block,) = re.findall(r"```python\n(.*?)```", step0, re.S)
    deploy_ns: dict[str, Any] = {}
    exec(deploy_block, deploy_ns)  # our own documentation
    settings_block = next(text for kind, path, text in quickstart_blocks() if kind == "append")
    quick_ns: dict[str, Any] = {"INSTALLED_APPS": []}
    exec(settings_block, quick_ns)
    assert deploy_ns["REALTIME"] == quick_ns["REALTIME"]
    assert quick_ns["REALTIME"]["SECRET"] == DEMO_SECRET
    assert quick_ns["REALTIME"]["API_KEY"] == DEV_API_KEY
    assert DEMO_SECRET in step0 and DEV_API_KEY in step0
