"""A big contest recorded from 3 processes while WebSocket watchers follow their standings.

Real Redis, a real ``python -m realtime serve`` (redis broker), three recording processes
publishing through the bridge, and hundreds of ``websockets`` watchers in this process. Each
watcher follows its own row and one page (``StandingsView`` on ``standings:<C>``, re-reading
through ``Leaderboard.window`` only when a track asks) and the top N (board events on
``leaderboard:<C>``). At sampled moments the recorders pause; once every watcher has caught
up (allowing the coalescing window and this machine's lag), each watcher's own row, page and
top N must equal a from-scratch computation of the rules over the verdicts recorded so far.
At the end a late joiner must get the final top N in ``subscribed.state``.

The default run is small (``SIZES["quick"]``); the issue's size runs with
``python -m pytest tests/integration/test_standings_contest.py -m slow``.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
import redis
import websockets

from django_bridge.leaderboard import Contest, Leaderboard
from django_bridge.leaderboard_view import StandingsView
from tests.conftest import REDIS_URL, ServerProcess, free_port, require_service, server_env
from tests.integration import standings_recorder

WINDOW_S = 0.5  # coalesce_ms of the standings and leaderboard namespaces
CATCH_UP_S = 60.0  # how long watchers may take to reach the board's version at a checkpoint
RECORDERS = 3
PAGE = 25
TOP_N = 25
PROBLEMS = "ABCDEFGHIJ"


@dataclass(frozen=True)
class Size:
    contestants: int
    verdicts: int
    watchers: int
    checkpoints: int
    rate: float = 0.0  # verdicts a second per recorder (0: as fast as it goes)


SIZES = {
    "quick": Size(contestants=800, verdicts=1_500, watchers=80, checkpoints=2),
    # 3 x 20/s = 3,600 verdicts a minute: 3.6x the burst, about what one test
    # process can follow for 300 watchers on this (shared, 2-core) machine
    "full": Size(contestants=10_000, verdicts=16_000, watchers=300, checkpoints=4, rate=20),
}


# ------------------------------------------------------------------- the contest and its rules


Verdict = tuple[str, str, str, Any, float]  # submission, user, problem, result, at (s)


def contest_log(rules: str, size: Size, seed: int) -> list[Verdict]:
    """Return a seeded verdict log: skewed activity, retries, rejudges, minute-edge times."""
    rng = random.Random(seed)
    users = [f"c{i:05d}" for i in range(size.contestants)]
    skill = {u: rng.betavariate(2, 5) for u in users}
    log: list[Verdict] = []
    # everyone submits once early (the board fills), then the busy tail
    for n, user in enumerate(users):
        log.append(_verdict(rng, rules, n, user, skill[user], len(log)))
    while len(log) < size.verdicts:
        user = (
            rng.choice(users[: size.contestants // 2]) if rng.random() < 0.5 else rng.choice(users)
        )
        if rng.random() < 0.02 and log:  # a judge retry: the same submission again
            log.append(rng.choice(log))
            continue
        log.append(_verdict(rng, rules, len(log), user, skill[user], len(log)))
    return log


def _verdict(rng: random.Random, rules: str, n: int, user: str, skill: float, i: int) -> Verdict:
    minute = 1 + i * 290 // 30_000 + rng.randrange(0, 10)
    micros = minute * 60_000_000 - rng.choice([400, 1, 0, 250_000, 30_000_000])
    problem = rng.choice(PROBLEMS)
    if rules == "icpc":
        roll = rng.random()
        result: Any = "AC" if roll < skill else rng.choice(["WA", "WA", "TLE", "CE"])
    else:
        result = round(min(100.0, max(0.0, rng.gauss(100 * skill, 25))), 2)
    return (f"s{n}", user, problem, result, micros / 1_000_000)


def reference_rows(rules: str, log: list[Verdict]) -> list[dict[str, Any]]:
    """Compute the public board from scratch by the textbook rules (no freeze)."""
    latest = {v[0]: v for v in log}
    attempts: dict[str, dict[str, list[Verdict]]] = defaultdict(lambda: defaultdict(list))
    for v in latest.values():
        attempts[v[1]][v[2]].append(v)
    totals: dict[str, tuple[int, int]] = {}
    for user, problems in attempts.items():
        if rules == "icpc":
            solved = penalty = 0
            for items in problems.values():
                wrong = 0
                for v in sorted(items, key=lambda v: (round(v[4] * 1e6), v[3] != "AC")):
                    if v[3] == "AC":
                        solved += 1
                        penalty += round(v[4] * 1e6) // 60_000_000 + 20 * wrong
                        break
                    if v[3] != "CE":
                        wrong += 1
            totals[user] = (solved, -penalty)
        else:
            total = last = 0
            for items in problems.values():
                best = max(round(v[3] * 100) for v in items)
                if best > 0:
                    total += best
                    first = min(round(v[4] * 1e6) for v in items if round(v[3] * 100) == best)
                    last = max(last, first // 1_000_000)
            totals[user] = (total, -last)
    order = sorted(totals, key=lambda u: (-totals[u][0], -totals[u][1], u))
    rows: list[dict[str, Any]] = []
    for i, user in enumerate(order):
        tied = i > 0 and totals[user] == totals[order[i - 1]]
        rank = rows[-1]["rank"] if tied else i + 1
        a, b = totals[user]
        if rules == "icpc":
            rows.append({"rank": rank, "user": user, "solved": a, "penalty": -b})
        else:
            rows.append({"rank": rank, "user": user, "score": a / 100, "last": -b})
    return rows


def _cmp(rows: list[dict[str, Any]] | None, rules: str) -> list[tuple[Any, ...]]:
    assert rows is not None
    if rules == "icpc":
        return [(r["rank"], r["user"], r["solved"], r["penalty"]) for r in rows]
    return [(r["rank"], r["user"], round(r["score"] * 100), r["last"]) for r in rows]


# ------------------------------------------------------------------- watchers


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
        top_v = self.top["v"] if self.top is not None else -1
        return self.view.version("own"), self.view.version("page"), top_v


def _reload(watcher: Watcher, board: Leaderboard, contest: Contest) -> None:
    for name, kwargs in watcher.view.requests().items():
        watcher.view.load(name, board.window(contest, **kwargs))
        watcher.reads += 1


async def _watch(url: str, w: Watcher, board: Leaderboard, contest: Contest) -> None:
    moves, boards = f"standings:{contest.id}", f"leaderboard:{contest.id}"
    async with websockets.connect(url, max_size=None, ping_interval=None) as ws:
        # moves first: a read taken after this subscription misses none of them
        await ws.send(orjson.dumps({"op": "subscribe", "channel": moves}).decode())
        await ws.send(orjson.dumps({"op": "subscribe", "channel": boards}).decode())
        subscribed = 0
        async for text in ws:
            raw = text if isinstance(text, bytes) else text.encode()
            w.frames += 1
            w.bytes += len(raw)
            if raw.startswith(b'{"op":"event","channel":"standings:'):
                w.move_frames += 1
                w.move_bytes += len(raw)
            for line in raw.split(b"\n"):
                msg = orjson.loads(line)
                op, channel = msg.get("op"), msg.get("channel")
                if op == "event" and channel == moves:
                    w.view.feed(msg, time.monotonic())
                elif op == "event" and channel == boards:
                    if w.top is None or msg["data"]["v"] > w.top["v"]:
                        w.top = msg["data"]
                elif op == "subscribed":
                    subscribed += 1
                    if subscribed > 2:  # unasked: the server resynced us, moves may be lost
                        w.resyncs += 1
                        if channel == moves:
                            w.view.reset()
                    state = msg["state"]
                    newer = state and (w.top is None or state["data"]["v"] > w.top["v"])
                    if channel == boards and newer:
                        w.top = state["data"]
            if subscribed == 2 and not w.ready.is_set():
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


# ------------------------------------------------------------------- the run


@dataclass
class Outcome:
    checks: int = 0
    lags: list[float] = field(default_factory=list)
    rate: float = 0.0
    recorded: int = 0
    reads: int = 0
    frames: int = 0
    bytes: int = 0
    move_frames: int = 0
    move_bytes: int = 0
    resyncs: int = 0
    duration: float = 0.0


def _check(
    watchers: list[Watcher], rules: str, log: list[Verdict], contest: Contest, board: Leaderboard
) -> None:
    expected = reference_rows(rules, log)
    by_user = {r["user"]: r for r in expected}
    snapshot = board.snapshot(contest)
    assert _cmp(snapshot["top"], rules) == _cmp(expected[:TOP_N], rules), "store top N"
    for i, w in enumerate(watchers):
        own = w.view.rows("own")
        want_own = [by_user[w.me]] if w.me in by_user else []
        assert _cmp(own, rules) == _cmp(want_own, rules), f"watcher {i} own row"
        page = expected[w.page_start : w.page_start + PAGE]
        assert _cmp(w.view.rows("page"), rules) == _cmp(page, rules), f"watcher {i} page"
        assert w.top is not None
        assert _cmp(w.top["top"], rules) == _cmp(expected[:TOP_N], rules), f"watcher {i} top"


async def _caught_up(
    watchers: list[Watcher], v: int, within: float, tasks: list[asyncio.Task[None]]
) -> float:
    began = time.monotonic()
    while time.monotonic() - began < within:
        for task in tasks:
            if task.done():
                task.result()  # a watcher that died: its error is the failure
                raise AssertionError("a watcher's connection ended")
        if all(w.versions() == (v, v, v) and not w.view.requests() for w in watchers):
            return time.monotonic() - began
        await asyncio.sleep(0.02)
    behind = [(w.versions(), w.resyncs) for w in watchers if w.versions() != (v, v, v)]
    raise AssertionError(f"{len(behind)} watchers not at v{v} after {within} s: {behind[:5]}")


async def _run(rules: str, size: Size, port: int, prefix: str, client: redis.Redis) -> Outcome:
    seed = 16_000 + len(rules)
    contest = Contest(id=f"s{uuid.uuid4().hex[:8]}", rules=rules, top_n=TOP_N)  # type: ignore[arg-type]
    board = Leaderboard(client, prefix=prefix + "lb:", publish=lambda *a, **k: None)
    log = contest_log(rules, size, seed)
    rng = random.Random(seed)
    users = sorted({v[1] for v in log})
    watchers = [
        Watcher(rng.choice(users), rng.randrange(0, size.contestants - PAGE))
        for _ in range(size.watchers)
    ]
    url = f"ws://127.0.0.1:{port}/ws"
    tasks = [asyncio.create_task(_watch(url, w, board, contest)) for w in watchers]
    tasks.append(asyncio.create_task(_tick_stalls(watchers, board, contest)))
    ctx = multiprocessing.get_context("spawn")
    go, done = ctx.Event(), ctx.Array("i", RECORDERS)
    paused, elapsed = ctx.Array("i", RECORDERS), ctx.Array("d", RECORDERS)
    slices = [log[i::RECORDERS] for i in range(RECORDERS)]
    spec = {"id": contest.id, "rules": rules, "top_n": TOP_N}
    procs = [
        ctx.Process(
            target=standings_recorder.run,
            args=(i, REDIS_URL, prefix, spec, slices[i], go, done, paused, elapsed, size.rate),
        )
        for i in range(RECORDERS)
    ]
    outcome = Outcome()
    try:
        await asyncio.wait_for(asyncio.gather(*(w.ready.wait() for w in watchers)), 60)
        for proc in procs:
            proc.start()
        began = time.monotonic()
        go.set()
        marks = sorted(rng.sample(range(size.verdicts // 10, size.verdicts), size.checkpoints))
        for mark in [*marks, size.verdicts]:
            # the counters live in other processes: poll them
            while sum(done) < mark and any(p.is_alive() for p in procs):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            go.clear()
            while not all(paused) and any(p.is_alive() for p in procs):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            recorded = [v for i in range(RECORDERS) for v in slices[i][: done[i]]]
            v = board.snapshot(contest)["v"]
            outcome.lags.append(await _caught_up(watchers, v, CATCH_UP_S, tasks))
            _check(watchers, rules, recorded, contest, board)
            outcome.checks += 1
            go.set()
        outcome.duration = time.monotonic() - began
        for proc in procs:
            proc.join(30)
            assert proc.exitcode == 0, f"recorder exited with {proc.exitcode}"
        outcome.recorded = sum(done)
        outcome.rate = sum(done[i] / elapsed[i] for i in range(RECORDERS) if elapsed[i])
        outcome.reads = sum(w.reads for w in watchers)
        outcome.frames = sum(w.frames for w in watchers)
        outcome.bytes = sum(w.bytes for w in watchers)
        outcome.move_frames = sum(w.move_frames for w in watchers)
        outcome.move_bytes = sum(w.move_bytes for w in watchers)
        outcome.resyncs = sum(w.resyncs for w in watchers)
        # a late joiner: the final board at once, with no further verdict
        async with websockets.connect(url, max_size=None) as late:
            await late.recv()  # welcome
            channel = f"leaderboard:{contest.id}"
            await late.send(orjson.dumps({"op": "subscribe", "channel": channel}).decode())
            reply = orjson.loads(await asyncio.wait_for(late.recv(), 5))
            state = reply["state"]["data"]
            assert state["v"] == board.snapshot(contest)["v"]
            assert _cmp(state["top"], rules) == _cmp(reference_rows(rules, log)[:TOP_N], rules)
        for task in tasks:
            if task.done():
                task.result()  # a watcher that died must fail the test
    finally:
        go.set()
        for proc in procs:
            if proc.is_alive():
                proc.kill()
            proc.join(5)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return outcome


@pytest.fixture(scope="module")
def redis_client() -> Iterator[redis.Redis]:
    client: redis.Redis = redis.Redis.from_url(require_service(REDIS_URL, 6379))
    yield client
    client.close()


@pytest.fixture(scope="module")
def prefix(redis_client: redis.Redis) -> Iterator[str]:
    value = f"test-standings-{uuid.uuid4().hex[:10]}:"
    yield value
    for key in redis_client.scan_iter(match=f"{value}*", count=1000):
        redis_client.unlink(key)


@pytest.fixture(scope="module")
def server(prefix: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    # hundreds of watchers share this one test process: on a busy machine it may read late,
    # which must not look like a dead peer (heartbeat) or a slow consumer (send buffer)
    env = server_env(
        broker_url=REDIS_URL,
        redis_prefix=prefix,
        log_level="WARNING",
        heartbeat="300",
        max_send_buffer=str(64 << 20),
    )
    process = ServerProcess(
        port=free_port(), env=env, log_path=tmp_path_factory.mktemp("standings") / "server.log"
    )
    try:
        process.start()
        yield process.port
    finally:
        process.stop(timeout=10)
        print(f"\nserver log:\n{process.log()[-3000:]}")


def _report(rules: str, size: Size, out: Outcome) -> None:
    windows = out.duration / WINDOW_S
    print(
        f"\n{rules}: {size.contestants} contestants, {out.recorded} verdicts from {RECORDERS}"
        f" processes at {out.rate:.0f}/s, {size.watchers} watchers, {out.checks} checks,"
        f" catch-up {max(out.lags):.2f} s max; per watcher per window:"
        f" {out.frames / size.watchers / windows:.2f} frames,"
        f" {out.bytes / size.watchers / windows:.0f} bytes (moves alone:"
        f" {out.move_frames / size.watchers / windows:.2f} frames,"
        f" {out.move_bytes / size.watchers / windows:.0f} bytes); re-reads {out.reads},"
        f" resyncs {out.resyncs}"
    )


@pytest.mark.timeout(2400)
@pytest.mark.parametrize("rules", ["icpc", "ioi"])
@pytest.mark.parametrize(
    "scale", [pytest.param("quick"), pytest.param("full", marks=pytest.mark.slow)]
)
def test_every_watcher_view_equals_the_reference(
    rules: str, scale: str, server: int, prefix: str, redis_client: redis.Redis
) -> None:
    """Own row, one page and top N of every watcher equal the rules at each checkpoint."""
    size = SIZES[scale]
    out = asyncio.run(_run(rules, size, server, prefix, redis_client))
    _report(rules, size, out)
    assert out.checks == size.checkpoints + 1
    assert out.recorded == size.verdicts
