"""The client as a package: TypeScript typings checked by tsc, CommonJS and ES module entries.

``tsc`` comes from npm (package.json devDependencies), installed by ``scripts/test`` with
``npm ci``; without it the test fails under ``CI=true`` and is skipped elsewhere.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
TSC = ROOT / "node_modules" / ".bin" / "tsc"


def _need(path: Path | str | None, what: str) -> str:
    if path is not None and os.path.exists(path):
        return str(path)
    message = f"{what} not found (run scripts/test, which runs npm ci)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)
    raise AssertionError  # unreachable


def test_typings_pass_tsc_strict() -> None:
    """tests/typings/*.ts use the client as a module, as vendored files and as a global.

    Their ``@ts-expect-error`` lines make tsc fail when the typings are too loose.
    """
    tsc = _need(TSC, "node_modules/.bin/tsc")
    result = subprocess.run(
        [tsc, "-p", str(ROOT / "tests" / "typings" / "tsconfig.json")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_package_entries_load_in_node() -> None:
    """require() gets the class from realtime.js; import gets it from realtime.mjs, by name."""
    node = _need(shutil.which("node"), "node")
    package = json.loads((ROOT / "package.json").read_text())
    for target in package["exports"]["."].values():
        assert (ROOT / target).is_file(), target
    script = (
        "import RC, { RealtimeClient, Subscription } from 'realtime-push-client';"
        "import { createRequire } from 'node:module';"
        "const cjs = createRequire(import.meta.url)('realtime-push-client');"
        "console.log(JSON.stringify([typeof RC, RC === RealtimeClient, cjs === RC,"
        " Subscription === RC.Subscription, RC.version]));"
    )
    result = subprocess.run(
        [node, "--input-type=module", "-e", script],
        cwd=ROOT / "tests",  # inside the package: its name resolves through "exports"
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == ["function", True, True, True, package["version"]]
