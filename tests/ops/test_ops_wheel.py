"""A normal (non-editable) install: the wheel carries the browser client and the demo page.

Builds the wheel from this checkout, installs it into a fresh venv (dependencies from the
package index, as a production image would), starts its ``realtime`` console script outside
the checkout, and loads ``/`` (the demo) and ``/static/realtime.js`` from it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port

pytestmark = pytest.mark.timeout(600)


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _run(*cmd: str | Path, cwd: Path) -> str:
    result = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=400
    )
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_wheel_serves_demo_and_client(tmp_path: Path) -> None:
    """The installed wheel answers / and /static/realtime.js with the checkout's files."""
    dist = tmp_path / "dist"
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", dist, ROOT, cwd=tmp_path)
    (wheel,) = dist.glob("realtime_push-*.whl")
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    _run(venv / "bin" / "python", "-m", "pip", "install", "-q", wheel, cwd=tmp_path)
    where = _run(
        venv / "bin" / "python", "-c", "import realtime; print(realtime.__file__)", cwd=tmp_path
    )
    assert where.strip().startswith(str(venv)), where  # the wheel's copy, not the checkout

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REALTIME_", "PYTHON"))}
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(
        [str(venv / "bin" / "realtime"), "serve", "--demo", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            try:
                if _get(base + "/livez")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()
            time.sleep(0.1)
        status, page = _get(base + "/")
        assert status == 200 and b"/static/realtime.js" in page, page[:300]
        status, client = _get(base + "/static/realtime.js")
        assert status == 200
        assert client == (ROOT / "static" / "realtime.js").read_bytes()
        for asset in ("demo/demo.js", "demo/demo.css"):
            status, body = _get(f"{base}/static/{asset}")
            assert status == 200 and body == (ROOT / "static" / asset).read_bytes(), asset
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()
