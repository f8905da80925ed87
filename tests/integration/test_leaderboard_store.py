"""The Redis leaderboard store: ranks, idempotence, freeze and unfreeze (real Redis)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from django_bridge.leaderboard import Contest, Leaderboard
from tests.conftest import REDIS_URL, require_service

MIN = 60.0


class Sent:
    """Collects what the leaderboard publishes (stands in for ``django_bridge.publish``)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, Any, bool]] = []

    def __call__(
        self, channel: str, type_: str, data: Any, state: bool = False, version: Any = None
    ) -> None:
        self.events.append((channel, type_, data, state))

    def on(self, channel: str) -> list[tuple[str, Any, bool]]:
        return [(t, d, s) for c, t, d, s in self.events if c == channel]


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    conn: redis.Redis = redis.Redis.from_url(require_service(REDIS_URL, 6379))
    yield conn
    conn.close()


@pytest.fixture
def sent() -> Sent:
    return Sent()


@pytest.fixture
def board(client: redis.Redis, sent: Sent) -> Iterator[Leaderboard]:
    prefix = f"test-lb-{uuid.uuid4().hex[:10]}:"
    lb = Leaderboard(client, prefix=prefix, publish=sent)
    yield lb
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        client.unlink(key)


def test_tied_contestants_share_a_rank(board: Leaderboard) -> None:
    """Two contestants with equal solved and penalty share rank 1; the next is 3rd."""
    contest = Contest(id="c1")
    board.record_verdict(contest, "bob", "A", "AC", 10 * MIN)
    board.record_verdict(contest, "amy", "A", "AC", 10 * MIN)
    board.record_verdict(contest, "cat", "A", "WA", 5 * MIN)
    board.record_verdict(contest, "cat", "A", "AC", 9 * MIN)
    rows = board.top(contest, 10)
    assert [(r["rank"], r["user"], r["penalty"]) for r in rows] == [
        (1, "amy", 10),
        (1, "bob", 10),
        (3, "cat", 29),
    ]


def test_duplicate_verdict_changes_nothing_and_publishes_nothing(
    board: Leaderboard, sent: Sent
) -> None:
    """Recording the same submission twice is a no-op the second time."""
    contest = Contest(id="c1")
    first = board.record_verdict(contest, "u1", "A", "WA", 5 * MIN, submission=7)
    count = len(sent.events)
    again = board.record_verdict(contest, "u1", "A", "WA", 5 * MIN, submission=7)
    assert (first.duplicate, again.duplicate) == (False, True)
    assert len(sent.events) == count
    assert board.row(contest, "u1") == {
        "user": "u1",
        "rank": 1,
        "solved": 0,
        "penalty": 0,
        "cells": {"A": [1, None]},
    }


def test_rejudge_of_a_submission_replaces_its_verdict(board: Leaderboard) -> None:
    """The same submission id with a new verdict replaces the old one (WA -> AC)."""
    contest = Contest(id="c1")
    board.record_verdict(contest, "u1", "A", "WA", 30 * MIN, submission=1)
    board.record_verdict(contest, "u1", "A", "AC", 30 * MIN, submission=1)
    row = board.row(contest, "u1")
    assert row is not None and (row["solved"], row["penalty"]) == (1, 30)


def test_out_of_order_verdicts_give_the_same_row(board: Leaderboard) -> None:
    """An early WA arriving after the AC still counts; a late WA does not."""
    contest = Contest(id="c1")
    board.record_verdict(contest, "u1", "A", "AC", 40 * MIN)
    board.record_verdict(contest, "u1", "A", "WA", 50 * MIN)
    board.record_verdict(contest, "u1", "A", "WA", 20 * MIN)
    row = board.row(contest, "u1")
    assert row is not None and row["cells"] == {"A": [1, 40]} and row["penalty"] == 60


def test_delta_event_carries_top_snapshot_and_changed_row(board: Leaderboard, sent: Sent) -> None:
    """Each public event is the channel state and holds the whole top N plus the changed row."""
    contest = Contest(id="c1", top_n=2)
    for user, minute in (("a", 10), ("b", 20), ("c", 30)):
        board.record_verdict(contest, user, "A", "AC", minute * MIN)
    type_, data, state = sent.on("leaderboard:c1")[-1]
    assert (type_, state) == ("leaderboard.delta", True)
    assert [(r["rank"], r["user"]) for r in data["top"]] == [(1, "a"), (2, "b")]
    assert [(r["rank"], r["user"]) for r in data["changed"]] == [(3, "c")]
    assert data["v"] == 3
    own = sent.on("user:c")[-1]
    assert (own[0], own[1]["rank"], own[1]["contest"]) == ("leaderboard.rank", 3, "c1")


def test_freeze_stops_public_board_while_jury_stays_live(board: Leaderboard, sent: Sent) -> None:
    """After the freeze time an AC reaches jury:<c> but not leaderboard:<c> or user:<id>."""
    contest = Contest(id="c1", start=0, freeze_at=60 * MIN)
    board.record_verdict(contest, "u1", "A", "AC", 10 * MIN)
    before = len(sent.on("leaderboard:c1")), len(sent.on("user:u1"))
    result = board.record_verdict(contest, "u1", "B", "AC", 70 * MIN)
    assert (result.public_changed, result.jury_changed) == (False, True)
    assert (len(sent.on("leaderboard:c1")), len(sent.on("user:u1"))) == before
    assert sent.on("jury:c1")[-1][1]["top"][0]["solved"] == 2
    public = board.row(contest, "u1")
    assert public is not None and public["solved"] == 1


def test_record_returns_the_board_versions_changed_or_not(board: Leaderboard) -> None:
    """Each record reports the versions its verdict is in: new ones, or the current ones."""
    contest = Contest(id="c1", start=0, freeze_at=60 * MIN)
    first = board.record_verdict(contest, "u1", "A", "AC", 10 * MIN)
    second = board.record_verdict(contest, "u2", "A", "WA", 11 * MIN)
    frozen = board.record_verdict(contest, "u1", "B", "AC", 70 * MIN)  # jury only
    again = board.record_verdict(contest, "u1", "B", "AC", 70 * MIN)  # a duplicate
    assert (first.public_v, first.jury_v) == (1, 1)
    assert (second.public_v, second.jury_v) == (2, 2)
    assert (frozen.public_changed, frozen.public_v, frozen.jury_v) == (False, 2, 3)
    assert again.duplicate and (again.public_v, again.jury_v) == (0, 0)
    assert board.snapshot(contest)["v"] == 2


def test_contestant_first_seen_after_freeze_stays_off_public_board(
    board: Leaderboard, sent: Sent
) -> None:
    """A contestant whose first submission is after the freeze appears only on the jury board."""
    contest = Contest(id="c1", start=0, freeze_at=60 * MIN)
    board.record_verdict(contest, "u1", "A", "AC", 10 * MIN)
    result = board.record_verdict(contest, "late", "A", "AC", 61 * MIN)
    assert (result.public_changed, result.public_rank, result.jury_rank) == (False, 0, 2)
    assert [r["user"] for r in board.top(contest, 10)] == ["u1"]
    assert [r["user"] for r in board.top(contest, 10, view="jury")] == ["u1", "late"]
    assert sent.on("user:late") == []


def test_unfreeze_publishes_final_standings(board: Leaderboard, sent: Sent) -> None:
    """Unfreezing publishes the jury board as the public snapshot; later verdicts go live."""
    contest = Contest(id="c1", start=0, freeze_at=60 * MIN)
    board.record_verdict(contest, "u1", "A", "AC", 10 * MIN)
    board.record_verdict(contest, "u2", "A", "AC", 65 * MIN)
    board.record_verdict(contest, "u2", "B", "AC", 66 * MIN)
    board.unfreeze(contest)
    type_, data, state = sent.on("leaderboard:c1")[-1]
    assert (type_, state, data["unfrozen"]) == ("leaderboard.snapshot", True, True)
    assert [(r["rank"], r["user"], r["solved"]) for r in data["top"]] == [
        (1, "u2", 2),
        (2, "u1", 1),
    ]
    assert sent.on("user:u2")[-1][1]["rank"] == 1
    after = board.record_verdict(contest, "u1", "B", "AC", 80 * MIN)
    assert after.public_changed and after.public_rank == 1


def test_around_returns_neighbours_with_true_ranks(board: Leaderboard) -> None:
    """Rows around a user carry board ranks, including a tie that starts above the window."""
    contest = Contest(id="c1")
    for user, minute in (("a", 1), ("b", 2), ("c", 2), ("d", 2), ("e", 3)):
        board.record_verdict(contest, user, "A", "AC", minute * MIN)
    rows = board.around(contest, "d", 1)
    assert [(r["rank"], r["user"]) for r in rows] == [(2, "c"), (2, "d"), (5, "e")]
    assert board.around(contest, "nobody", 1) == []


def test_ioi_board_ranks_by_total_then_last_improvement(board: Leaderboard) -> None:
    """IOI: equal totals order by the earlier last improvement; scores keep decimals."""
    contest = Contest(id="c2", rules="ioi")
    board.record_verdict(contest, "x", "A", 60.5, 100)
    board.record_verdict(contest, "x", "B", 40, 300)
    board.record_verdict(contest, "y", "A", 100.5, 200)
    board.record_verdict(contest, "y", "A", 20, 400)  # worse: no improvement
    rows = board.top(contest, 5)
    assert [(r["rank"], r["user"], r["score"], r["last"]) for r in rows] == [
        (1, "y", 100.5, 200),
        (2, "x", 100.5, 300),
    ]


def test_jury_reads_show_the_unfrozen_board(board: Leaderboard) -> None:
    """snapshot, top, row, around, page and window read the jury board with view="jury"."""
    contest = Contest(id="c9", start=0, freeze_at=60 * MIN, top_n=2)
    board.record_verdict(contest, "a", "A", "AC", 10 * MIN)
    board.record_verdict(contest, "b", "A", "AC", 20 * MIN)
    board.record_verdict(contest, "c", "A", "AC", 30 * MIN)
    board.record_verdict(contest, "c", "B", "AC", 70 * MIN)  # after the freeze: jury only
    assert [r["user"] for r in board.top(contest, 3)] == ["a", "b", "c"]
    assert [r["user"] for r in board.top(contest, 3, view="jury")] == ["c", "a", "b"]
    assert board.snapshot(contest, view="jury")["top"][0]["user"] == "c"
    assert board.snapshot(contest, view="jury")["v"] == 4
    jury_row = board.row(contest, "c", view="jury")
    assert jury_row is not None and (jury_row["rank"], jury_row["solved"]) == (1, 2)
    assert [r["user"] for r in board.around(contest, "a", 1, view="jury")] == ["c", "a", "b"]
    page = board.page(contest, 2, view="jury")
    assert (page["start"], page["n"], [r["user"] for r in page["rows"]]) == (2, 3, ["b"])
    assert page["rows"][0]["rank"] == 3 and page["view"] == "jury"
    window = board.window(contest, around="b", k=0)
    assert (window["start"], window["rows"][0]["rank"], window["v"]) == (1, 2, 3)


def test_moves_carry_positions_keys_and_versions(board: Leaderboard, sent: Sent) -> None:
    """Each public change is one move with its version: newcomer, overtaking, no-key change."""
    contest = Contest(id="c8")
    board.record_verdict(contest, "a", "A", "AC", 10 * MIN)
    board.record_verdict(contest, "b", "A", "WA", 11 * MIN)
    board.record_verdict(contest, "b", "A", "AC", 12 * MIN)
    board.record_verdict(contest, "b", "B", "WA", 13 * MIN)  # row changes, key does not
    moves = [d for t, d, _ in sent.on("standings:c8")]
    assert [m["v"] for m in moves] == [1, 2, 3, 4]
    assert [(m["user"], m["old"], m["pos"], m["rank"], m["n"]) for m in moves] == [
        ("a", None, 0, 1, 1),
        ("b", None, 1, 2, 2),
        ("b", 1, 1, 2, 2),
        ("b", 1, 1, 2, 2),
    ]
    assert moves[1]["from"] is None and moves[2]["from"] == 0
    assert moves[2]["to"] == moves[3]["from"] == moves[3]["to"] == 1 * 10**9 - 32
