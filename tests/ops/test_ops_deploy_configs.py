"""config/: the systemd unit, the supervisord program and the Procfile hold together."""

from __future__ import annotations

import configparser
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import ROOT, ServerProcess, free_port, server_env
from tests.ops.conftest import wait_for

CONFIG = ROOT / "config"
VENV_BIN = Path(sys.executable).parent


def drain_seconds() -> float:
    """shutdown_timeout of the shipped config/realtime.toml."""
    with (CONFIG / "realtime.toml").open("rb") as fh:
        return float(tomllib.load(fh)["server"]["shutdown_timeout"])


def accepts(command: str) -> subprocess.CompletedProcess[str]:
    """Run a shipped ``realtime serve ...`` command line as ``check-config``, on our files."""
    args = shlex.split(command)
    assert Path(args[0]).name == "realtime" and args[1] == "serve", command
    args = [a.replace("/etc/realtime/", f"{CONFIG}/") for a in args[2:]]
    return subprocess.run(
        [sys.executable, "-m", "realtime", "check-config", *args],
        env=server_env(),
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=30,
    )


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(CONFIG / "realtime.service")
    return parser


def test_systemd_unit_verifies_cleanly(tmp_path: Path) -> None:
    """systemd-analyze verify finds nothing wrong in the unit (with a real ExecStart binary)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    text = (CONFIG / "realtime.service").read_text()
    target = tmp_path / "realtime.service"
    target.write_text(
        text.replace("/opt/realtime/venv/bin/realtime", f"{sys.executable} -m realtime")
    )
    proc = subprocess.run(
        [analyze, "verify", str(target)], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0 and "realtime.service" not in proc.stderr, proc.stderr


def test_systemd_unit_lets_the_server_drain_and_runs_a_valid_command() -> None:
    """SIGTERM goes to the main process, SIGKILL only after the drain; config errors don't loop."""
    service = unit()["Service"]
    assert service["KillSignal"] == "SIGTERM" and service["KillMode"] == "mixed"
    assert float(service["TimeoutStopSec"]) > drain_seconds()
    assert "2" in service["RestartPreventExitStatus"].split()
    proc = accepts(service["ExecStart"])
    assert proc.returncode == 0, proc.stderr


def test_supervisord_program_lets_the_server_drain_and_runs_a_valid_command() -> None:
    """stopwaitsecs outlasts the drain, exit 2 is not restarted, the command is valid."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(CONFIG / "supervisord.conf")
    program = parser["program:realtime"]
    assert program["stopsignal"] == "TERM"
    assert float(program["stopwaitsecs"]) > drain_seconds()
    assert "2" in program["exitcodes"].split(",") and program["killasgroup"] == "true"
    proc = accepts(program["command"])
    assert proc.returncode == 0, proc.stderr


def test_procfile_realtime_process_starts_under_honcho(tmp_path: Path) -> None:
    """The Procfile's ``realtime`` line runs under ``honcho start``; SIGTERM stops it."""
    honcho = VENV_BIN / "honcho"
    if not honcho.exists():
        pytest.skip("honcho is not installed")
    lines = (ROOT / "Procfile").read_text().splitlines()
    command = next(line for line in lines if line.startswith("realtime:"))
    port = free_port()
    procfile = tmp_path / "Procfile"
    procfile.write_text(re.sub(r"--port \S+", f"--port {port}", command) + "\n")
    env = server_env(port=str(port))
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    log = tmp_path / "honcho.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(honcho), "-f", str(procfile), "-d", str(ROOT), "start", "realtime"],
            env=env,
            cwd=str(ROOT),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        server = ServerProcess(port=port, env=env, proc=proc, log_path=log)
        server.wait_ready(timeout=20)
        status, _ = server.get("/static/realtime.js")
        assert status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    wait_for(lambda: not _answers(port), what="the server gone after honcho stopped")


def _answers(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False
