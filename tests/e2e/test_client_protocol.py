"""The browser client against a scripted server: protocol cases a real server rarely shows.

A small ``websockets`` server plays a script per connection (batched frames, duplicates,
an unasked resync, ``retry-after``), and serves the test page and ``static/realtime.js``
itself so that the page and the socket share one loopback origin.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from tests.conftest import free_port
from tests.e2e.conftest import BOTH_BROWSERS, TEST_PAGE, wait_for

pytestmark = [pytest.mark.browser, BOTH_BROWSERS]

CLIENT_JS = Path(__file__).resolve().parent.parent.parent / "static" / "realtime.js"
CHANNEL = "contest:scripted"

Script = Callable[["Conn"], Awaitable[None]]


class Conn:
    """One scripted connection: send JSON lines, read commands."""

    def __init__(self, ws: ServerConnection, index: int, server: ScriptedServer) -> None:
        self.ws = ws
        self.index = index
        self.server = server

    async def send(self, *messages: dict[str, Any]) -> None:
        """Send the messages in one frame, separated by newlines (as the server batches)."""
        await self.ws.send("\n".join(json.dumps(m) for m in messages))

    async def command(self, op: str) -> dict[str, Any]:
        """Return the next client command with this op (others are recorded and skipped)."""
        while True:
            message: dict[str, Any] = json.loads(await asyncio.wait_for(self.ws.recv(), 10))
            self.server.commands.append((self.index, message))
            if message.get("op") == op:
                return message

    async def welcome(self) -> None:
        await self.send(
            {"op": "welcome", "session": f"s{self.index}", "heartbeat": 25, "time": _now_ms()}
        )

    async def hold(self) -> None:
        """Keep the connection open until the client closes it."""
        try:
            while True:
                message = json.loads(await self.ws.recv())
                self.server.commands.append((self.index, message))
        except Exception:
            return


def _now_ms() -> int:
    return int(time.time() * 1000)


def event(offset: int, seq: int | None = None) -> dict[str, Any]:
    return {
        "op": "event",
        "channel": CHANNEL,
        "offset": offset,
        "type": "test.seq",
        "data": {"seq": seq if seq is not None else offset},
    }


def subscribed(
    cmd: dict[str, Any],
    *,
    epoch: str = "E1",
    offset: int = 0,
    state: dict[str, Any] | None = None,
    missed: list[dict[str, Any]] | None = None,
    recovered: bool = False,
) -> dict[str, Any]:
    reply = {
        "op": "subscribed",
        "channel": cmd["channel"],
        "epoch": epoch,
        "offset": offset,
        "state": state,
        "missed": missed or [],
        "recovered": recovered,
    }
    if "id" in cmd:
        reply["id"] = cmd["id"]
    return reply


class ScriptedServer:
    """A WebSocket server on a free loopback port, in its own thread and event loop."""

    def __init__(self, scripts: list[Script]) -> None:
        self.scripts = scripts
        self.port = free_port()
        self.connected_at: list[float] = []
        self.commands: list[tuple[int, dict[str, Any]]] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ScriptedServer:
        self._thread.start()
        if not self._ready.wait(10):
            raise TimeoutError("scripted server did not start")
        return self

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())
        self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with serve(
            self._handle,
            "127.0.0.1",
            self.port,
            process_request=self._http,
            compression=None,
        ):
            self._ready.set()
            await self._stop.wait()

    def _http(self, conn: ServerConnection, request: Request) -> Response | None:
        if request.path == "/ws":
            return None
        if request.path == "/page":
            body, kind = TEST_PAGE, "text/html; charset=utf-8"
        elif request.path == "/static/realtime.js":
            body, kind = CLIENT_JS.read_text(), "text/javascript; charset=utf-8"
        else:
            return conn.respond(404, "not found\n")
        response = conn.respond(200, body)
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = kind
        return response

    async def _handle(self, ws: ServerConnection) -> None:
        index = len(self.connected_at)
        self.connected_at.append(time.monotonic())
        conn = Conn(ws, index, self)
        if index >= len(self.scripts):
            await ws.close(1013, "no script")
            return
        await self.scripts[index](conn)

    def sent(self, op: str) -> list[tuple[int, dict[str, Any]]]:
        return [(i, m) for i, m in self.commands if m.get("op") == op]


@pytest.fixture
def scripted(page: Any) -> Iterator[Callable[..., ScriptedServer]]:
    """Start a scripted server with one script per connection and open the test page on it."""
    servers: list[ScriptedServer] = []

    def make(*scripts: Script) -> ScriptedServer:
        server = ScriptedServer(list(scripts)).start()
        servers.append(server)
        page.goto(server.url + "/page")
        page.wait_for_function("typeof window.RealtimeClient === 'function'")
        return server

    yield make
    for server in servers:
        server.stop()


def _seqs(page: Any) -> list[int]:
    return [e["data"]["seq"] for e in page.evaluate("window.log.events")]


def test_batched_frames_are_split_and_duplicates_dropped(page: Any, scripted: Any) -> None:
    """Several objects in one frame are all handled; an offset seen before is dropped."""

    async def script(conn: Conn) -> None:
        await conn.welcome()
        sub = await conn.command("subscribe")
        await conn.send(subscribed(sub), event(1), event(2))
        await conn.send(event(2), event(3), event(1), event(4))
        await conn.hold()

    scripted(script)
    page.evaluate("c => window.start(c)", CHANNEL)
    wait_for(page, "window.log.events.length >= 4")
    assert _seqs(page) == [1, 2, 3, 4]
    assert page.evaluate("window.log.states") == [None]


def test_unasked_resync_calls_on_state(page: Any, scripted: Any) -> None:
    """An unasked ``subscribed`` with recovered:false resyncs: onState, then newer events."""

    async def script(conn: Conn) -> None:
        await conn.welcome()
        sub = await conn.command("subscribe")
        await conn.send(subscribed(sub), event(1), event(2))
        state = {**event(10), "type": "board"}
        resync = subscribed({"channel": CHANNEL}, epoch="E2", offset=10, state=state)
        await conn.send(resync, event(10), event(11))
        await conn.hold()

    scripted(script)
    page.evaluate("c => window.start(c)", CHANNEL)
    wait_for(page, "window.log.events.length >= 3")
    assert _seqs(page) == [1, 2, 11]
    states = page.evaluate("window.log.states")
    assert states[0] is None and states[1]["offset"] == 10
    assert page.evaluate("window.sub.position") == {"epoch": "E2", "offset": 11}


def test_reconnect_sends_since_and_replays_missed_first(page: Any, scripted: Any) -> None:
    """After a 1012 close the client re-subscribes with since; missed events come first."""

    async def first(conn: Conn) -> None:
        await conn.welcome()
        sub = await conn.command("subscribe")
        await conn.send(subscribed(sub), event(1), event(2), event(3))
        await conn.ws.close(1012, "server restarting")

    async def second(conn: Conn) -> None:
        await conn.welcome()
        sub = await conn.command("subscribe")
        reply = subscribed(sub, offset=5, missed=[event(3), event(4), event(5)], recovered=True)
        await conn.send(reply, event(6))
        await conn.hold()

    server = scripted(first, second)
    page.evaluate("c => window.start(c)", CHANNEL)
    wait_for(page, "window.log.events.length >= 6", timeout=15)
    assert _seqs(page) == [1, 2, 3, 4, 5, 6]
    subscribes = server.sent("subscribe")
    assert "since" not in subscribes[0][1]
    assert subscribes[1][1]["since"] == {"epoch": "E1", "offset": 3}
    assert page.evaluate("window.log.states.length") == 1  # recovered: no resync
    assert page.evaluate("window.log.disconnected[0].code") == 1012


def test_new_epoch_after_reconnect_resyncs(page: Any, scripted: Any) -> None:
    """When the server cannot recover (new epoch), onState gets the new state."""

    async def first(conn: Conn) -> None:
        await conn.welcome()
        sub = await conn.command("subscribe")
        await conn.send(subscribed(sub, offset=0), event(1), event(2))
        await conn.ws.close(1011, "crash")

    async def second(conn: Conn) -> None:
        await conn.welcome()
        sub = await conn.command("subscribe")
        state = {**event(1, seq=100), "type": "board"}
        await conn.send(subscribed(sub, epoch="E9", offset=1, state=state), event(2, seq=101))
        await conn.hold()

    scripted(first, second)
    page.evaluate("c => window.start(c)", CHANNEL)
    wait_for(page, "window.log.events.length >= 3", timeout=15)
    assert _seqs(page) == [1, 2, 101]  # offset 2 of the new epoch is new
    assert page.evaluate("window.log.states[1].data") == {"seq": 100}


def test_retry_after_is_honoured(page: Any, scripted: Any) -> None:
    """A 1013 close with retry-after=N: the client waits at least N seconds."""

    async def overloaded(conn: Conn) -> None:
        await conn.welcome()
        await conn.ws.close(1013, "overloaded, retry-after=2")

    async def fine(conn: Conn) -> None:
        await conn.welcome()
        sub = await conn.command("subscribe")
        await conn.send(subscribed(sub))
        await conn.hold()

    server = scripted(overloaded, fine)
    page.evaluate("c => window.start(c)", CHANNEL)
    wait_for(page, "window.log.connected >= 1 && window.log.states.length === 1", timeout=15)
    gap = server.connected_at[1] - server.connected_at[0]
    assert gap >= 2.0, gap
    assert gap < 6.0, gap


def test_keeps_retrying_within_max_delay(page: Any, scripted: Any) -> None:
    """Connections that fail at once are retried, each delay capped by maxDelay."""

    async def refuse(conn: Conn) -> None:
        await conn.ws.close(1011, "broken")

    server = scripted(*[refuse] * 5)
    page.evaluate("c => window.start(c, {client: {minDelay: 200, maxDelay: 1600}})", CHANNEL)
    deadline = time.monotonic() + 20
    while len(server.connected_at) < 5 and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    times = server.connected_at
    assert len(times) >= 5
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(gap <= 1.6 + 0.5 for gap in gaps), gaps  # capped by maxDelay
    assert page.evaluate("window.rt.state") != "closed"


def test_static_token_expiry_is_reported_and_set_token_restores(page: Any, scripted: Any) -> None:
    """Without getToken an expiry is an error event; setToken re-auths and re-subscribes."""

    async def script(conn: Conn) -> None:
        await conn.welcome()
        auth = await conn.command("auth")
        await conn.send({"op": "authed", "user": "7", "id": auth["id"]})
        sub = await conn.command("subscribe")
        await conn.send(subscribed(sub), event(1))
        await conn.send({"op": "error", "code": "token_expired", "message": "expired"})
        await conn.send({"op": "unsubscribed", "channel": CHANNEL, "reason": "token_expired"})
        auth = await conn.command("auth")
        assert auth["token"] == "fresh-token"
        await conn.send({"op": "authed", "user": "7", "id": auth["id"]})
        sub = await conn.command("subscribe")
        assert sub["since"] == {"epoch": "E1", "offset": 1}
        await conn.send(subscribed(sub, offset=2, missed=[event(2)], recovered=True), event(3))
        await conn.hold()

    scripted(script)
    page.evaluate("c => window.start(c, {client: {token: 'old-token'}})", CHANNEL)
    wait_for(page, "window.log.errors.length === 1 && window.sub.status === 'pending'")
    assert page.evaluate("window.log.errors[0].code") == "token_expired"
    page.evaluate("window.rt.setToken('fresh-token')")
    wait_for(page, "window.log.events.length >= 3")
    assert _seqs(page) == [1, 2, 3]
    assert page.evaluate("window.log.connected") == 1


def test_epoch_notice_lets_an_early_subscriber_recover(page: Any, scripted: Any) -> None:
    """Subscribed before the channel's first event (epoch "0"): the unasked notice at offset 0
    names the real epoch, so the reconnect recovers with it instead of resyncing."""

    async def first(conn: Conn) -> None:
        await conn.welcome()
        sub = await conn.command("subscribe")
        notice = subscribed({"channel": CHANNEL}, epoch="E7", recovered=True)
        await conn.send(subscribed(sub, epoch="0"), notice, event(1), event(2))
        await conn.ws.close(1012, "server restarting")

    async def second(conn: Conn) -> None:
        await conn.welcome()
        sub = await conn.command("subscribe")
        reply = subscribed(sub, epoch="E7", offset=3, missed=[event(3)], recovered=True)
        await conn.send(reply)
        await conn.hold()

    server = scripted(first, second)
    page.evaluate("c => window.start(c)", CHANNEL)
    wait_for(page, "window.log.events.length >= 3", timeout=15)
    assert _seqs(page) == [1, 2, 3]
    assert server.sent("subscribe")[1][1]["since"] == {"epoch": "E7", "offset": 2}
    assert page.evaluate("window.log.states.length") == 1  # the first subscribe only
