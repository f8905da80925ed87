"""Moves keep every watcher's own row, pages and rows around it equal to the board.

A seeded simulation against real Redis: verdicts of several contestants are recorded, the
``standings:`` moves they publish reach each simulated watcher in a shuffled order (as from
several recording processes), and at checkpoints every watcher's tracks must equal a fresh
read of the board at the same version. Re-reads happen only when a track asks for one.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from django_bridge.leaderboard import Contest, Leaderboard
from django_bridge.leaderboard_view import StandingsView
from tests.conftest import REDIS_URL, require_service

SEEDS = range(6)


class Moves:
    """Collects the moves; ignores the other events."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, channel: str, type_: str, data: Any, state: bool = False, **_: Any) -> None:
        if channel.startswith("standings:"):
            self.events.append({"type": type_, "data": data})


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    conn: redis.Redis = redis.Redis.from_url(require_service(REDIS_URL, 6379))
    yield conn
    conn.close()


def _strip(rows: list[dict[str, Any]] | None) -> list[tuple[Any, ...]]:
    assert rows is not None
    return [(r["rank"], r["user"], r["key"], r.get("solved"), r.get("score")) for r in rows]


def _reload(board: Leaderboard, contest: Contest, view: StandingsView) -> int:
    reads = view.requests()
    for name, kwargs in reads.items():
        view.load(name, board.window(contest, **kwargs))
    return len(reads)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("rules", ["icpc", "ioi"])
def test_moves_keep_views_equal_to_the_board(client: redis.Redis, seed: int, rules: str) -> None:
    """After every burst of moves, each view's tracks equal the board read at their version."""
    rng = random.Random(seed)
    prefix = f"test-sv-{uuid.uuid4().hex[:8]}:"
    moves = Moves()
    board = Leaderboard(client, prefix=prefix, publish=moves)
    contest = Contest(id="s", rules=rules, top_n=10, freeze_at=None)  # type: ignore[arg-type]
    users = [f"u{i:02d}" for i in range(60)]
    views = []
    for i in range(8):
        view = StandingsView(users[i * 7])
        view.follow_own()
        view.follow_page("page", rng.randrange(0, 50), 10, margin=rng.choice([0, 3, 10]))
        view.follow_around("around", 2)
        views.append(view)
    reads = 0
    try:
        delivered = 0
        for step in range(400):
            user = rng.choice(users)
            result: Any = rng.choice(["AC", "WA", "CE"]) if rules == "icpc" else rng.randint(0, 100)
            board.record_verdict(contest, user, rng.choice("ABCD"), result, step * 7.5)
            if step % 25 != 24:
                continue
            batch = moves.events[delivered:]
            delivered = len(moves.events)
            for view in views:
                shuffled = batch[:]
                rng.shuffle(shuffled)  # several publishers: any order within the burst
                for event in shuffled:
                    view.feed(event)
                reads += _reload(board, contest, view)
                for name in ("own", "page", "around"):
                    v = view.version(name)
                    assert v == board.snapshot(contest)["v"]
                    want = board.window(contest, **view.shown(name))["rows"]
                    got = view.rows(name)
                    assert _strip(got) == _strip(want), f"seed {seed} step {step} {name}"
        # the views lived on moves: far fewer reads than checkpoints x tracks x views
        assert reads < 16 * 3 * len(views) / 2
    finally:
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            client.unlink(key)
