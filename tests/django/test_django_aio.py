"""``apublish`` / ``arealtime_token`` under a real ASGI server (uvicorn) and in async code.

The uvicorn process runs ``asgi_sample_app`` (async views) with ``REALTIME`` taken from the
environment; events go through real Redis to a real realtime server and a WebSocket client.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import bridge_sample_settings as sample
import jwt
import pytest
from bridge_helpers import ROOT, RealtimeServer, WsClient, free_port, unique_channel
from django.contrib.auth import get_user_model
from django.core.exceptions import SynchronousOnlyOperation
from django.utils.functional import SimpleLazyObject

from django_bridge import apublish, arealtime_token, realtime_token

HERE = Path(__file__).resolve().parent


class Uvicorn:
    """A ``uvicorn asgi_sample_app:application`` child process."""

    def __init__(self, realtime: dict[str, Any], log: Path) -> None:
        self.port = free_port()
        self.log_path = log
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("REALTIME_")},
            "DJANGO_SETTINGS_MODULE": "asgi_sample_settings",
            "ASGI_SAMPLE_REALTIME": json.dumps(realtime),
            "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT / "example"), str(ROOT)]),
            "PYTHONUNBUFFERED": "1",
        }
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "asgi_sample_app:application",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--lifespan",
                    "off",
                ],
                cwd=HERE,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while True:
            assert self.proc.poll() is None, self.log()
            try:
                if self.get("/ping/") == "pong":
                    return
            except OSError:
                pass
            assert time.monotonic() < deadline, self.log()
            time.sleep(0.1)

    def get(self, path: str, timeout: float = 30) -> str:
        url = f"http://127.0.0.1:{self.port}{path}"
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return str(response.read().decode())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def uvicorn(tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], Uvicorn]]:
    started: list[Uvicorn] = []

    def start(realtime: dict[str, Any]) -> Uvicorn:
        server = Uvicorn(realtime, tmp_path / f"uvicorn-{len(started)}.log")
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def test_apublish_and_token_under_uvicorn(
    bridge_server: RealtimeServer, uvicorn: Callable[[dict[str, Any]], Uvicorn]
) -> None:
    """An async view's token opens a private channel; its apublish arrives on the socket."""
    app = uvicorn(
        {
            "BROKER_URL": sample.REDIS_URL,
            "PREFIX": sample.REDIS_PREFIX,
            "URL": bridge_server.ws_url,
            "SECRET": sample.SECRET,  # the sample's secret is per process: pass this one's
        }
    )
    channel = unique_channel("submission")
    token = json.loads(app.get(f"/aio/token/?sub=7&channel={channel}"))["token"]
    ws = WsClient(bridge_server.ws_url, token=token)
    try:
        ws.subscribe(channel)
        assert app.get(f"/aio/publish/{channel}/?n=1") == "published"
        assert app.get(f"/aio/publish/{channel}/?n=2") == "published"
        events = ws.events(channel, 2)
    finally:
        ws.close()
    assert [e["data"]["n"] for e in events] == ["1", "2"]
    anonymous = json.loads(app.get("/aio/token/"))["token"]  # request.user: a lazy object
    claims = jwt.decode(anonymous, sample.SECRET, algorithms=["HS256"])
    assert claims["sub"] == "anonymous"


def _order_of(log: str, *paths: str) -> list[str]:
    """Return ``paths`` in the order uvicorn's access log answered them."""
    found = []
    for line in log.splitlines():
        for p in paths:
            if f'"GET {p}' in line and p not in found:
                found.append(p)
    return found


def _ping_during_retries(app: Uvicorn, publish_path: str) -> list[str]:
    """Start a publish that retries against a dead broker, ping meanwhile; return log order."""
    done = threading.Event()
    start = len(app.log())  # earlier rounds' lines do not count

    def publish() -> None:
        try:
            app.get(publish_path)
        finally:
            done.set()

    thread = threading.Thread(target=publish)
    thread.start()
    deadline = time.monotonic() + 20
    while "realtime publish attempt 1 failed" not in app.log()[start:]:
        assert time.monotonic() < deadline and not done.is_set(), app.log()
        time.sleep(0.02)
    assert app.get("/ping/") == "pong"
    thread.join(30)
    deadline = time.monotonic() + 10
    while len(order := _order_of(app.log()[start:], "/ping/", publish_path)) < 2:
        assert time.monotonic() < deadline, app.log()
        time.sleep(0.05)
    return order


def test_apublish_retries_do_not_block_the_event_loop(
    uvicorn: Callable[[dict[str, Any]], Uvicorn],
) -> None:
    """While apublish retries a dead broker, the same process answers other requests first.

    The control: the blocking ``publish`` called from an async view holds the loop, so there
    the ping is answered only after the publish gave up.
    """
    dead = f"http://127.0.0.1:{free_port()}"
    app = uvicorn(
        {
            "BROKER_URL": dead,
            "RETRIES": 3,
            "RETRY_BACKOFF": 0.5,
            "TIMEOUT": 1.0,
            "CHECK_NAMESPACES": False,
            # every round must really retry: no circuit breaker opening (issue 13 defect 17)
            "BREAKER_THRESHOLD": 1000,
        }
    )
    assert _ping_during_retries(app, "/aio/publish/contest:1/") == [
        "/ping/",
        "/aio/publish/contest:1/",
    ]
    assert "realtime publish failed, 1 event(s) lost for contest:1" in app.log()
    assert _ping_during_retries(app, "/sync/publish/contest:2/") == [
        "/sync/publish/contest:2/",
        "/ping/",
    ]


@pytest.mark.django_db(transaction=True)
def test_arealtime_token_resolves_lazy_user_off_the_loop(realtime_settings: Any) -> None:
    """request.user-like lazy objects hit the database: fine in arealtime_token only."""
    user = get_user_model().objects.create_user("lazy", password="x")

    def lazy() -> Any:
        return SimpleLazyObject(lambda: get_user_model().objects.get(pk=user.pk))

    async def blocking() -> str:
        return realtime_token(lazy(), channels=["submission:1"])

    with pytest.raises(SynchronousOnlyOperation):
        asyncio.run(blocking())
    token = asyncio.run(arealtime_token(lazy(), channels=["submission:1"], ttl=60))
    claims = jwt.decode(token, sample.SECRET, algorithms=["HS256"])
    assert (claims["sub"], claims["channels"]) == (str(user.pk), ["submission:1"])
    assert claims["exp"] - claims["iat"] == 60


@pytest.mark.django_db(transaction=True)
def test_apublish_with_outbox_writes_a_row(realtime_settings: Any) -> None:
    """With OUTBOX, apublish stores the event through the async ORM; nothing is sent."""
    from django_bridge.models import OutboxEvent

    realtime_settings["OUTBOX"] = True
    asyncio.run(apublish("contest:9", "contest.note", {"x": 1}, state=True))
    row = OutboxEvent.objects.get()
    assert (row.channel, row.type, json.loads(row.data), row.state) == (
        "contest:9",
        "contest.note",
        {"x": 1},
        True,
    )
