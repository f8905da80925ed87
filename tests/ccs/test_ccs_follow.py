"""The follower against a local feed server and real Redis: boards, served JSON, progress.

Each test serves a generated contest (50 teams, 10 problems, 1,000 submissions with runs,
judgements, rejudges, repeats and swapped neighbours, a freeze and a thaw) and follows it
with ``django_bridge.ccs.http.follow`` into a real ``Leaderboard`` and ``ContestStore``;
the leaderboard's boards and the served scoreboard must equal ``reference`` computed from
the same lines.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import redis

from django_bridge.ccs.follower import Follower
from django_bridge.ccs.http import FollowError, follow
from django_bridge.ccs.store import ContestStore
from django_bridge.leaderboard import Leaderboard
from tests.ccs import reference
from tests.ccs.feedgen import Contest, generate
from tests.ccs.feedserver import Feed, FeedServer
from tests.ccs.helpers import Recorder, board_rows, competition, validator

pytestmark = pytest.mark.broker


@pytest.fixture(scope="module")
def contest() -> Contest:
    return generate(seed=18, teams=50, problems=10, submissions=1000)


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(redis_url)
    yield conn
    conn.close()


def make_follower(
    client: redis.Redis, prefix: str, recorder: Recorder
) -> tuple[Follower, Leaderboard]:
    board = Leaderboard(client, prefix=f"{prefix}lb:", publish=recorder)
    store = ContestStore(client, "wf", prefix=f"{prefix}ccs:")
    follower = Follower("wf", store, board, publish=recorder, medals=(4, 4, 4), flush_interval=0.2)
    return follower, board


def check_boards(
    follower: Follower, board: Leaderboard, lines: list[bytes], *, public: bool
) -> None:
    """Leaderboard views and served documents equal the reference for these lines."""
    contest = follower.board_contest()
    for view, frozen in (("public", public), ("jury", False)):
        rows = board.standings(contest, view=view)  # type: ignore[arg-type]
        expected = reference.leaderboard_rows(lines, public=frozen)
        assert board_rows(rows) == expected, view
        ranks = competition({t: (s, p) for t, (s, p, _) in expected.items()})
        assert {r["user"]: r["rank"] for r in rows} == ranks
    served = orjson.loads(follower.store.doc("scoreboard:public") or b"null")
    assert served["rows"] == reference.scoreboard_rows(lines, public=public)
    full = orjson.loads(follower.store.doc("scoreboard:full") or b"null")
    assert full["rows"] == reference.scoreboard_rows(lines, public=False)
    validator("2023-06", "scoreboard").validate(served)
    validator("2023-06", "scoreboard").validate(full)
    validator("2023-06", "awards").validate(
        orjson.loads(follower.store.doc("awards:public") or b"null")
    )


@pytest.mark.parametrize("dialect", ["2020-03", "2023-06", "2026-01"])
def test_follow_with_a_dropped_connection(
    dialect: str, contest: Contest, client: redis.Redis, prefix: str
) -> None:
    lines = contest.lines(dialect)
    recorder = Recorder()
    follower, board = make_follower(client, prefix, recorder)
    feed = Feed("wf", lines, user="jury", password="s3cret", drop_after=len(lines) // 2)
    server = FeedServer(feed)
    try:
        follow(server.base, follower, user="jury", password="s3cret", read_timeout=10)
    finally:
        server.close()
    # the drop cut line len/2+1 in half: the follower resumed after line len/2
    name = "since_id" if dialect == "2020-03" else "since_token"
    mark = orjson.loads(lines[len(lines) // 2 - 1])
    resume = mark["id"] if dialect == "2020-03" else mark["token"]
    assert feed.requests[0].endswith("/event-feed")
    assert feed.requests[1].endswith(f"?{name}={resume}")
    assert follower.finished
    check_boards(follower, board, lines, public=False)  # thawed: public is full

    # judge progress and verdicts: every submission's last verdict is its final one
    for sid, (team, _problem, _ms, verdict) in contest.truth.items():
        events = recorder.on(f"submission:{sid}")
        verdicts = [d["verdict"] for t, d in events if t == "judge.verdict"]
        assert verdicts and verdicts[-1] == verdict, sid
        assert events[0][0] == "judge.queued" or dialect != "2020-03"
        judged = [d for t, d in recorder.on(f"user:{team}") if t == "submission.judged"]
        assert any(d["submission"] == sid and d["verdict"] == verdict for d in judged)
    running = [
        d for c, t, d, _ in recorder.events if t == "judge.running" and c.startswith("submission:")
    ]
    assert len(running) > 2000
    assert all(1 <= d["test"] <= d["total"] and len(d["results"]) >= d["test"] - 1 for d in running)
    statuses = [d["status"] for t, d in recorder.on("contest:wf") if t == "contest.state"]
    for step in ("started", "frozen", "ended", "thawed", "finalized"):
        assert step in statuses
    assert statuses.index("frozen") < statuses.index("thawed")
    # the thaw published the final standings to the public channel
    assert any(t == "leaderboard.snapshot" for t, _ in recorder.on("leaderboard:wf"))


def run_until(follower: Follower, base: str, until: Any, timeout: float = 60) -> None:
    stop = threading.Event()
    thread = threading.Thread(
        target=follow, args=(base, follower), kwargs={"stop": stop, "read_timeout": 5}
    )
    thread.start()
    deadline = time.monotonic() + timeout
    try:
        while not until() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(10)
    assert until(), "the follower did not get there in time"


def test_freeze_then_thaw(contest: Contest, client: redis.Redis, prefix: str) -> None:
    """Up to the thaw the public views hide the last hour; the thaw reveals it."""
    lines = contest.lines("2023-06")
    thaw = next(i for i, line in enumerate(lines) if b'"thawed":"' in line)
    cut = lines[:thaw]
    last = orjson.loads(cut[-1])["token"]
    recorder = Recorder()
    follower, board = make_follower(client, prefix, recorder)
    server = FeedServer(Feed("wf", cut))
    try:
        run_until(follower, server.base, lambda: follower.state.token == last)
    finally:
        server.close()
    follower.flush()
    check_boards(follower, board, cut, public=True)
    served = orjson.loads(follower.store.doc("scoreboard:public") or b"null")
    assert served["state"]["frozen"] and not served["state"]["thawed"]

    # a new follower process resumes from the stored token and sees the thaw
    again, board = make_follower(client, prefix, recorder)
    assert again.state.token == last
    server = FeedServer(Feed("wf", lines))
    try:
        follow(server.base, again, read_timeout=10)
    finally:
        server.close()
    assert server.feed.requests == [f"/api/contests/wf/event-feed?since_token={last}"]
    check_boards(again, board, lines, public=False)


def test_refused_token_resyncs_from_the_start(
    contest: Contest, client: redis.Redis, prefix: str
) -> None:
    lines = contest.lines("2026-01")
    recorder = Recorder()
    follower, board = make_follower(client, prefix, recorder)
    feed = Feed("wf", lines, drop_after=2000, refuse=1)
    server = FeedServer(feed)
    try:
        follow(server.base, follower, read_timeout=10)
    finally:
        server.close()
    assert len(feed.requests) == 3
    assert "since_token=" in feed.requests[1]  # refused with 400
    assert feed.requests[2] == "/api/contests/wf/event-feed"  # from the start
    check_boards(follower, board, lines, public=False)
    # the replay of the first 2,000 lines republished nothing already published
    verdicts = [(c, d["judgement"]) for c, t, d, _ in recorder.events if t == "judge.verdict"]
    assert len(verdicts) == len(set(verdicts))


def test_bad_credentials_stop_the_follower(client: redis.Redis, prefix: str) -> None:
    follower, _ = make_follower(client, prefix, Recorder())
    server = FeedServer(
        Feed("wf", generate(submissions=20, rejudges=2).lines("2023-06"), user="a", password="b")
    )
    try:
        with pytest.raises(FollowError, match="401"):
            follow(server.base, follower, user="a", password="wrong", read_timeout=5)
    finally:
        server.close()


def test_malformed_lines_are_skipped_and_a_silent_server_is_not_hammered(
    client: redis.Redis, prefix: str
) -> None:
    lines = generate(seed=9, submissions=60, rejudges=3).lines("2023-06")
    bad = [*lines[:10], b"{not json", b'{"type": 5}', b"[1, 2]", *lines[10:]]
    follower, board = make_follower(client, prefix, Recorder())
    server = FeedServer(Feed("wf", bad))
    try:
        follow(server.base, follower, read_timeout=10)
    finally:
        server.close()
    assert server.feed.requests == ["/api/contests/wf/event-feed"]
    check_boards(follower, board, lines, public=False)

    # a server that answers 503 every time: retried with a growing back-off
    quiet, _ = make_follower(client, prefix + "q:", Recorder())
    feed = Feed("zz", lines)  # another contest: every request for "wf" is a 404...
    server = FeedServer(feed)
    stop = threading.Event()
    base = server.base.replace("/api", "/unavailable")
    thread = threading.Thread(target=follow, args=(base, quiet), kwargs={"stop": stop})
    try:
        with pytest.raises(FollowError):  # ...which stops at once: nothing to retry
            follow(server.base, quiet, read_timeout=5)
        thread.start()
        time.sleep(2.0)
    finally:
        stop.set()
        thread.join(5)
        server.close()
    retries = [r for r in feed.requests if r.startswith("/unavailable")]
    assert 1 <= len(retries) <= 4  # 0.5 s, 1 s, 2 s...: not a tight loop
