"""A watcher process of the standings contest test: many WebSocket watchers on one loop.

Runs in a child process (multiprocessing, spawn) so that the watchers of the test are spread
over several processes and keep up with a burst. Each watcher follows its own row and one
page (``StandingsView`` on ``standings:<C>``, re-reading through ``Leaderboard.window`` only
when a track asks) and the top N (board events on ``leaderboard:<C>``). The parent sends
``("sample", id, v, deadline)``: at ``deadline`` (``time.monotonic()``, the same clock in
every process) the process captures what every watcher shows and the version each part shows;
it also notes when each watcher first showed at least version ``v`` in all three parts.
``("stop",)`` ends the process with its counters.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis
import websockets

from django_bridge.leaderboard import Contest, Leaderboard
from django_bridge.leaderboard_view import StandingsView

PAGE = 25

Row = tuple[Any, ...]


def cmp_rows(rows: list[dict[str, Any]] | None, rules: str) -> list[Row] | None:
    """Return the compared fields of rows (rank, user and the rules' two totals)."""
    if rows is None:
        return None
    if rules == "icpc":
        return [(r["rank"], r["user"], r["solved"], r["penalty"]) for r in rows]
    return [(r["rank"], r["user"], round(r["score"] * 100), r["last"]) for r in rows]


@dataclass
class Watcher:
    """One WebSocket client: its own row and one page from moves, the top N from boards."""

    me: str
    page_start: int
    view: StandingsView = field(init=False)
    top: dict[str, Any] | None = None
    reads: int = 0
    frames: int = 0
    bytes: int = 0
    move_frames: int = 0
    move_bytes: int = 0
    resyncs: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.view = StandingsView(self.me)
        self.view.follow_own()
        self.view.follow_page("page", self.page_start, PAGE, margin=10)

    def versions(self) -> tuple[int, int, int]:
        """Return the board version its own row, its page and its top N show."""
        top_v = self.top["v"] if self.top is not None else -1
        own = -1 if self.view.rows("own") is None else self.view.version("own")
        page = -1 if self.view.rows("page") is None else self.view.version("page")
        return own, page, top_v


# Every watcher of a channel gets the same frames: parse each once per process (the parsed
# events are only read, never changed, by StandingsView and the watchers)
_parsed: dict[bytes, list[dict[str, Any]]] = {}


def _parse(raw: bytes) -> list[dict[str, Any]]:
    msgs = _parsed.get(raw)
    if msgs is None:
        if len(_parsed) > 256:
            _parsed.clear()
        msgs = _parsed[raw] = [orjson.loads(line) for line in raw.split(b"\n")]
    return msgs


def _reload(w: Watcher, board: Leaderboard, contest: Contest) -> None:
    for name, kwargs in w.view.requests().items():
        w.view.load(name, board.window(contest, **kwargs))
        w.reads += 1


async def _watch(url: str, w: Watcher, board: Leaderboard, contest: Contest) -> None:
    moves, boards = f"standings:{contest.id}", f"leaderboard:{contest.id}"
    move_prefix = b'{"op":"event","channel":"standings:'
    async with websockets.connect(url, max_size=None, ping_interval=None) as ws:
        # moves first: a read taken after this subscription misses none of them
        await ws.send(orjson.dumps({"op": "subscribe", "channel": moves}).decode())
        await ws.send(orjson.dumps({"op": "subscribe", "channel": boards}).decode())
        replied: set[str] = set()
        async for text in ws:
            raw = text if isinstance(text, bytes) else text.encode()
            w.frames += 1
            w.bytes += len(raw)
            if raw.startswith(move_prefix):
                w.move_frames += 1
                w.move_bytes += len(raw)
            for msg in _parse(raw):
                op, channel = msg.get("op"), msg.get("channel")
                if op == "event" and channel == moves:
                    w.view.feed(msg, time.monotonic())
                elif op == "event" and channel == boards:
                    if w.top is None or msg["data"]["v"] > w.top["v"]:
                        w.top = msg["data"]
                elif op == "subscribed":
                    # unasked, not recovered: the server resynced us, moves may be lost (an
                    # unasked recovered one only tells the epoch the first event started)
                    if channel in replied and not msg.get("recovered"):
                        w.resyncs += 1
                        if channel == moves:
                            w.view.reset()
                    replied.add(str(channel))
                    state = msg["state"]
                    newer = state and (w.top is None or state["data"]["v"] > w.top["v"])
                    if channel == boards and newer:
                        w.top = state["data"]
            if len(replied) == 2 and not w.ready.is_set():
                w.ready.set()
            if w.ready.is_set():
                w.view.stalled(time.monotonic())
                _reload(w, board, contest)


async def _tick_stalls(watchers: list[Watcher], board: Leaderboard, contest: Contest) -> None:
    """Let a watcher with a missing move re-read even when no frame arrives."""
    while True:
        await asyncio.sleep(0.25)
        now = time.monotonic()
        for w in watchers:
            if w.ready.is_set() and w.view.stalled(now):
                _reload(w, board, contest)


def _capture(watchers: list[Watcher], rules: str) -> list[tuple[Any, ...]]:
    """What each watcher shows now: (versions, own rows, page rows, top N rows)."""
    out: list[tuple[Any, ...]] = []
    for w in watchers:
        top = cmp_rows(w.top["top"], rules) if w.top is not None else None
        own, page = cmp_rows(w.view.rows("own"), rules), cmp_rows(w.view.rows("page"), rules)
        out.append((w.versions(), own, page, top))
    return out


async def _sample(
    watchers: list[Watcher], rules: str, v: int, deadline: float, give_up: float
) -> tuple[list[tuple[Any, ...]], list[float | None], float]:
    """Capture the watchers at ``deadline``; note when each first shows version >= ``v``."""
    loop = asyncio.get_running_loop()
    captured: list[tuple[list[tuple[Any, ...]], float]] = []
    loop.call_at(deadline, lambda: captured.append((_capture(watchers, rules), time.monotonic())))
    reached: list[float | None] = [None] * len(watchers)
    while time.monotonic() < give_up and (not captured or None in reached):
        now = time.monotonic()
        for i, w in enumerate(watchers):
            if reached[i] is None and min(w.versions()) >= v:
                reached[i] = now
        await asyncio.sleep(0.01)
    while not captured:  # noqa: ASYNC110 (the capture is a loop callback)
        await asyncio.sleep(0.01)
    shown, at = captured[0]
    return shown, reached, at - deadline


async def _main(
    url: str,
    redis_url: str,
    prefix: str,
    spec: dict[str, Any],
    who: list[tuple[str, int]],
    conn: Any,
) -> None:
    contest = Contest(**spec)
    client: redis.Redis = redis.Redis.from_url(redis_url)
    board = Leaderboard(client, prefix=prefix + "lb:", publish=lambda *a, **k: None)
    watchers = [Watcher(me, start) for me, start in who]
    tasks = [asyncio.create_task(_watch(url, w, board, contest)) for w in watchers]
    tasks.append(asyncio.create_task(_tick_stalls(watchers, board, contest)))
    inbox: asyncio.Queue[Any] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    loop.add_reader(conn.fileno(), lambda: inbox.put_nowait(conn.recv()))
    samples: list[asyncio.Task[None]] = []

    def died() -> str | None:
        for task in tasks:
            if task.done():
                exc = task.exception()
                return repr(exc) if exc else "a watcher's connection ended"
        return None

    async def sample(sid: int, v: int, deadline: float) -> None:
        shown, reached, late = await _sample(watchers, spec["rules"], v, deadline, deadline + 60)
        conn.send(("sample", sid, shown, reached, late, died()))

    try:
        await asyncio.wait_for(asyncio.gather(*(w.ready.wait() for w in watchers)), 120)
        conn.send(("ready", died()))
        while True:
            msg = await inbox.get()
            if msg[0] == "sample":
                samples.append(asyncio.create_task(sample(*msg[1:])))
            elif msg[0] == "stop":
                await asyncio.gather(*samples)
                totals = {
                    k: sum(getattr(w, k) for w in watchers)
                    for k in ("reads", "frames", "bytes", "move_frames", "move_bytes", "resyncs")
                }
                conn.send(("stopped", totals, died()))
                return
    finally:
        loop.remove_reader(conn.fileno())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        client.close()


def run(
    url: str,
    redis_url: str,
    prefix: str,
    spec: dict[str, Any],
    who: list[tuple[str, int]],
    conn: Any,
) -> None:
    """Watch as ``who`` (user, page start) each; answer the parent's ``conn`` until stopped."""
    asyncio.run(_main(url, redis_url, prefix, spec, who, conn))
