"""A big contest recorded from 3 processes while WebSocket watchers follow their standings.

Real Redis, a real ``python -m realtime serve`` (redis broker), three recording processes
publishing through the bridge, and hundreds of ``websockets`` watchers spread over a few
watcher processes (tests/integration/standings_watchers.py). Each watcher follows its own
row and one page (``StandingsView`` on ``standings:<C>``) and the top N (board events on
``leaderboard:<C>``). The recorders never pause. At sampled moments t during the burst the
test reads the board's version v(t). Every watcher must show, in each of the three parts, a
version >= v(t) by t + one coalescing window + ``ALLOWANCE_S``, and what it shows at that
deadline must equal a from-scratch computation of the rules over the verdicts in the board
at exactly the version it shows (each recorder logs the version every record returned).
After the last verdict every watcher must show the last version, and a late joiner must
get the final top N in ``subscribed.state``.

The default run is small (``SIZES["quick"]``) and fails on any watcher later than the
window and the allowance; the issue's size runs with ``python -m pytest
tests/integration/test_standings_contest.py -m slow -s``, reports how many watchers were
later than that (and the distribution of the lag) and fails beyond ``Size.bound_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import random
import statistics
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
from tests.conftest import REDIS_URL, ServerProcess, free_port, require_service, server_env
from tests.integration import standings_recorder, standings_watchers
from tests.integration.standings_watchers import PAGE

WINDOW_S = 0.5  # coalesce_ms of the standings and leaderboard namespaces
# Beyond the window, for the last verdict's publish, the server's send and the watcher
# process applying the frame: on loopback the publish and send take a few ms; the rest is
# the watchers' CPU on a 2-core machine shared with the server, Redis and the recorders
ALLOWANCE_S = 0.25
RECORDERS = 3
TOP_N = 25
PROBLEMS = "ABCDEFGHIJ"


@dataclass(frozen=True)
class Size:
    contestants: int
    verdicts: int
    watchers: int
    samples: int
    rate: float  # verdicts a second per recorder
    clients: int  # watcher processes
    # a watcher must show v(t) within this many seconds of t: one window and the allowance in
    # the default run; the full run reports how many exceed that and fails only beyond this
    bound_s: float = WINDOW_S + ALLOWANCE_S


SIZES = {
    # 3 x 20/s: 3.6x the burst of 1,000 verdicts a minute, on a small board
    "quick": Size(contestants=800, verdicts=1_200, watchers=80, samples=6, rate=20, clients=2),
    # 3 x 15/s = 2,700 verdicts a minute: 2.7x the burst
    "full": Size(
        contestants=10_000,
        verdicts=16_000,
        watchers=300,
        samples=20,
        rate=15,
        clients=3,
        bound_s=5.0,
    ),
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


def user_totals(rules: str, verdicts: list[Verdict]) -> tuple[int, int]:
    """Return one contestant's (primary, secondary) totals by the textbook rules (no freeze).

    ``verdicts`` are the contestant's, one per submission (the latest result).
    """
    attempts: dict[str, list[Verdict]] = defaultdict(list)
    for v in verdicts:
        attempts[v[2]].append(v)
    if rules == "icpc":
        solved = penalty = 0
        for items in attempts.values():
            wrong = 0
            for v in sorted(items, key=lambda v: (round(v[4] * 1e6), v[3] != "AC")):
                if v[3] == "AC":
                    solved += 1
                    penalty += round(v[4] * 1e6) // 60_000_000 + 20 * wrong
                    break
                if v[3] != "CE":
                    wrong += 1
        return solved, -penalty
    total = last = 0
    for items in attempts.values():
        best = max(round(v[3] * 100) for v in items)
        if best > 0:
            total += best
            first = min(round(v[4] * 1e6) for v in items if round(v[3] * 100) == best)
            last = max(last, first // 1_000_000)
    return total, -last


def ranked_rows(rules: str, totals: dict[str, tuple[int, int]]) -> list[dict[str, Any]]:
    """Rank contestants by their totals: ties share a rank and are listed by user id."""
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


def reference_rows(rules: str, log: list[Verdict]) -> list[dict[str, Any]]:
    """Compute the public board of a whole verdict log from scratch."""
    latest = {v[0]: v for v in log}
    by_user: dict[str, list[Verdict]] = defaultdict(list)
    for v in latest.values():
        by_user[v[1]].append(v)
    return ranked_rows(rules, {u: user_totals(rules, vs) for u, vs in by_user.items()})


def _cmp(rows: list[dict[str, Any]] | None, rules: str) -> list[tuple[Any, ...]]:
    out = standings_watchers.cmp_rows(rows, rules)
    assert out is not None
    return out


# ------------------------------------------------------------------- the reference at any version


def boards_at(
    rules: str, logged: list[tuple[int, Verdict]], versions: set[int]
) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """Yield the board at each of ``versions`` (ascending), from the versioned verdict log.

    A verdict logged with version x (the version its record returned) is on the board from
    version x on: each change of the board is one version, and a verdict that changed nothing
    is logged with the version current when it was recorded. Each contestant's totals are
    computed from scratch from its verdicts, then everyone is ranked.
    """
    ordered = sorted(logged, key=lambda item: item[0])
    by_user: dict[str, dict[str, Verdict]] = defaultdict(dict)
    totals: dict[str, tuple[int, int]] = {}
    i = 0
    for x in sorted(versions):
        touched: set[str] = set()
        while i < len(ordered) and ordered[i][0] <= x:
            v = ordered[i][1]
            by_user[v[1]][v[0]] = v
            touched.add(v[1])
            i += 1
        for user in touched:
            totals[user] = user_totals(rules, list(by_user[user].values()))
        yield x, ranked_rows(rules, totals)


# ------------------------------------------------------------------- the run


@dataclass
class Outcome:
    samples: int = 0
    shown: int = 0  # views checked (watchers x samples x 3 parts)
    late: list[str] = field(default_factory=list)  # watchers not at v(t) by t + window + allowance
    stuck: list[str] = field(default_factory=list)  # watchers not at v(t) by t + size.bound_s
    lags: list[float] = field(default_factory=list)  # t -> a watcher shows >= v(t), seconds
    capture_late: list[float] = field(default_factory=list)
    rate: float = 0.0
    recorded: int = 0
    totals: dict[str, int] = field(default_factory=dict)
    duration: float = 0.0


@dataclass
class Sample:
    sid: int
    at: float
    v: int
    replies: dict[int, tuple[Any, ...]] = field(default_factory=dict)  # by watcher process


Check = tuple[int, str, str, int, list[tuple[Any, ...]]]  # version, part, user, page, rows


def _take_sample(
    sample: Sample, who: list[list[tuple[str, int]]], out: Outcome, bound_s: float, final: bool
) -> list[Check]:
    """Note the watchers that showed v(t) in all three parts only after one window and the
    allowance (``late``) or after ``bound_s`` (``stuck``); at the end a watcher must show the
    last version exactly. Return the checks of what every watcher showed at the deadline
    against the rules at the version it showed."""
    checks: list[Check] = []
    for proc, reply in sorted(sample.replies.items()):
        _, _, shown, reached, late, died = reply
        assert died is None, f"watcher process {proc}: {died}"
        out.capture_late.append(late)
        for (me, page_start), (versions, own, page, top), when in zip(
            who[proc], shown, reached, strict=True
        ):
            # `when` is when the watcher's process first saw it there (polled every 10 ms
            # on the watchers' loop): never earlier than the watcher showed it
            lag = float("inf") if when is None else when - sample.at
            out.lags.append(lag)
            what = f"sample {sample.sid}: {me} at v{sample.v} after {lag:.3f} s {versions}"
            if lag > WINDOW_S + ALLOWANCE_S or min(versions) < sample.v:
                out.late.append(what)
            if lag > bound_s:
                out.stuck.append(what)
            if final:
                assert versions == (sample.v,) * 3, f"not at the last version: {what}"
            parts = zip(("own", "page", "top"), versions, (own, page, top), strict=True)
            for part, version, rows in parts:
                out.shown += 1
                if rows is not None:  # None: no board yet (a late watcher)
                    checks.append((version, part, me, page_start, rows))
    return checks


def _check_against_rules(
    rules: str, logged: list[tuple[int, Verdict]], checks: list[Check]
) -> None:
    """Every part a watcher showed equals the rules' board at the version it showed."""
    by_version: dict[int, list[Check]] = defaultdict(list)
    for check in checks:
        by_version[check[0]].append(check)
    for x, board in boards_at(rules, logged, set(by_version)):
        index = {r["user"]: r for r in board}
        for _, part, me, page_start, rows in by_version[x]:
            if part == "own":
                want = [index[me]] if me in index else []
            elif part == "page":
                want = board[page_start : page_start + PAGE]
            else:
                want = board[:TOP_N]
            assert rows == _cmp(want, rules), f"watcher {me}: {part} at v{x} differs from the rules"


def _collect(conns: list[Any], samples: dict[int, Sample]) -> None:
    for proc, conn in enumerate(conns):
        while conn.poll():
            reply = conn.recv()
            assert reply[0] == "sample", reply
            samples[reply[1]].replies[proc] = reply


def _run(
    rules: str, size: Size, port: int, prefix: str, client: redis.Redis
) -> tuple[Outcome, list[int]]:
    seed = 16_000 + len(rules)
    contest = Contest(id=f"s{uuid.uuid4().hex[:8]}", rules=rules, top_n=TOP_N)  # type: ignore[arg-type]
    board = Leaderboard(client, prefix=prefix + "lb:", publish=lambda *a, **k: None)
    log = contest_log(rules, size, seed)
    rng = random.Random(seed)
    users = sorted({v[1] for v in log})
    everyone = [
        (rng.choice(users), rng.randrange(0, size.contestants - PAGE)) for _ in range(size.watchers)
    ]
    who = [everyone[i :: size.clients] for i in range(size.clients)]
    url = f"ws://127.0.0.1:{port}/ws"
    spec = {"id": contest.id, "rules": rules, "top_n": TOP_N}
    ctx = multiprocessing.get_context("spawn")
    pipes = [ctx.Pipe() for _ in who]
    conns = [parent for parent, _ in pipes]
    clients = [
        ctx.Process(
            target=standings_watchers.run, args=(url, REDIS_URL, prefix, spec, group, child)
        )
        for group, (_, child) in zip(who, pipes, strict=True)
    ]
    go, done = ctx.Event(), ctx.Array("i", RECORDERS)
    elapsed = ctx.Array("d", RECORDERS)
    slices = [log[i::RECORDERS] for i in range(RECORDERS)]
    versions = [ctx.Array("i", len(part), lock=False) for part in slices]
    recorders = [
        ctx.Process(
            target=standings_recorder.run,
            args=(i, REDIS_URL, prefix, spec, slices[i], go, done, versions[i], elapsed, size.rate),
        )
        for i in range(RECORDERS)
    ]
    out = Outcome()
    samples: dict[int, Sample] = {}
    try:
        for proc in [*clients, *recorders]:
            proc.start()
        for conn in conns:
            assert conn.poll(180), "watchers not subscribed within 180 s"
            ready = conn.recv()
            assert ready == ("ready", None), ready
        began = time.monotonic()
        go.set()
        marks = sorted(rng.sample(range(size.verdicts // 10, size.verdicts), size.samples))
        for mark in [*marks, size.verdicts]:
            # the counters live in other processes: poll them (the recorders never wait)
            while sum(done[:]) < mark and any(p.is_alive() for p in recorders):
                _collect(conns, samples)
                time.sleep(0.005)
            at = time.monotonic()
            v = board.window(contest, 0, 0)["v"]  # v(t): the board's version at the sample
            sid = len(samples)
            samples[sid] = Sample(sid, at, v)
            for conn in conns:
                conn.send(("sample", sid, v, at + WINDOW_S + ALLOWANCE_S))
        out.duration = time.monotonic() - began
        for proc in recorders:
            proc.join(60)
            assert proc.exitcode == 0, f"recorder exited with {proc.exitcode}"
        # the final sample: after the last verdict, every watcher must reach the last version
        final = board.window(contest, 0, 0)["v"]
        at = time.monotonic()
        samples[len(samples)] = Sample(len(samples), at, final)
        for conn in conns:
            conn.send(("sample", len(samples) - 1, final, at + WINDOW_S + ALLOWANCE_S))
            conn.send(("stop",))
        for index, conn in enumerate(conns):
            while True:
                assert conn.poll(90), "a watcher process did not answer"
                reply = conn.recv()
                if reply[0] == "stopped":
                    assert reply[2] is None, reply[2]
                    for k, n in reply[1].items():
                        out.totals[k] = out.totals.get(k, 0) + n
                    break
                samples[reply[1]].replies[index] = reply
        for proc in clients:
            proc.join(30)
        out.recorded = sum(done[:])
        out.rate = sum(done[i] / elapsed[i] for i in range(RECORDERS) if elapsed[i])
        logged = [
            (versions[i][k], slices[i][k])
            for i in range(RECORDERS)
            for k in range(len(slices[i]))
            if versions[i][k] >= 0
        ]
        # the versioned log rebuilds the same final board as the whole log
        _, last = next(boards_at(rules, logged, {final}))
        assert _cmp(last, rules) == _cmp(reference_rows(rules, log), rules)
        checks: list[Check] = []
        for sid, sample in sorted(samples.items()):
            assert len(sample.replies) == len(clients), f"sample {sid}: missing replies"
            final_sample = sid == len(samples) - 1
            checks += _take_sample(sample, who, out, size.bound_s, final_sample)
            out.samples += 1
        _check_against_rules(rules, logged, checks)
        asyncio.run(_late_joiner(url, rules, log, board, contest))
    finally:
        go.set()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.send(("stop",))
        for proc in [*recorders, *clients]:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
    return out, sorted(s.v for s in samples.values())


async def _late_joiner(
    url: str, rules: str, log: list[Verdict], board: Leaderboard, contest: Contest
) -> None:
    """A late joiner gets the final board at once, with no further verdict."""
    async with websockets.connect(url, max_size=None) as late:
        await late.recv()  # welcome
        channel = f"leaderboard:{contest.id}"
        await late.send(orjson.dumps({"op": "subscribe", "channel": channel}).decode())
        reply = orjson.loads(await asyncio.wait_for(late.recv(), 5))
        state = reply["state"]["data"]
        assert state["v"] == board.snapshot(contest)["v"]
        assert _cmp(state["top"], rules) == _cmp(reference_rows(rules, log)[:TOP_N], rules)


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
    # a watcher process holds a hundred watchers: on a busy machine it may read late,
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


def _report(rules: str, size: Size, out: Outcome, vs: list[int]) -> None:
    windows = out.duration / WINDOW_S
    per = size.watchers * windows
    t = out.totals
    lags = sorted(out.lags)
    q = statistics.quantiles(lags, n=100) if len(lags) > 1 else lags * 99
    print(
        f"\n{rules}: {size.contestants} contestants, {out.recorded} verdicts from {RECORDERS}"
        f" processes at {out.rate:.0f}/s ({out.duration:.0f} s), {size.watchers} watchers in"
        f" {size.clients} processes, {out.samples} samples at v{vs}; {out.shown} parts checked,"
        f" {len(out.late)} of {len(out.lags)} watcher samples not at v(t) by t + {WINDOW_S}"
        f" + {ALLOWANCE_S} s ({len(out.stuck)} beyond {size.bound_s} s);"
        f" lag t -> watcher at v(t): median {q[49]:.3f} s, p95 {q[94]:.3f} s, p99 {q[98]:.3f} s,"
        f" max {lags[-1]:.3f} s; capture late by {max(out.capture_late) * 1000:.0f} ms max;"
        f" per watcher per window: {t['frames'] / per:.2f} frames, {t['bytes'] / per:.0f} bytes"
        f" (moves alone: {t['move_frames'] / per:.2f} frames, {t['move_bytes'] / per:.0f}"
        f" bytes); re-reads {t['reads']}, resyncs {t['resyncs']}"
    )
    for line in out.late[:10]:
        print("  late:", line)


@pytest.mark.timeout(2400)
@pytest.mark.parametrize("rules", ["icpc", "ioi"])
@pytest.mark.parametrize(
    "scale", [pytest.param("quick"), pytest.param("full", marks=pytest.mark.slow)]
)
def test_every_watcher_view_equals_the_reference(
    rules: str, scale: str, server: int, prefix: str, redis_client: redis.Redis
) -> None:
    """During the burst, within one window, every watcher's own row, page and top N are the
    board of a version >= the one at the sample, and equal the rules at that version."""
    size = SIZES[scale]
    out, vs = _run(rules, size, server, prefix, redis_client)
    _report(rules, size, out, vs)
    assert out.samples == size.samples + 2  # and one after the last verdict, one at the end
    assert out.recorded == size.verdicts
    assert not out.stuck, (
        f"{len(out.stuck)} watchers not at v(t) in {size.bound_s} s: {out.stuck[:5]}"
    )
