"""Hand-worked feeds: score contests, hidden teams, deletions, judging errors, a resync."""

from __future__ import annotations

from typing import Any

import orjson

from django_bridge.ccs import scoring
from django_bridge.ccs.feed import parse_line
from django_bridge.ccs.state import ContestState
from tests.ccs.helpers import validator


def feed(*events: tuple[str, str | None, Any]) -> ContestState:
    state = ContestState()
    for n, (kind, oid, data) in enumerate(events):
        line = orjson.dumps({"type": kind, "id": oid, "data": data, "token": str(n)})
        note = parse_line(line)
        assert note is not None
        state.apply(note)
    return state


def base(score: bool = False) -> list[tuple[str, str | None, Any]]:
    contest: dict[str, Any] = {
        "id": "c",
        "name": "c",
        "start_time": "2026-01-01T10:00:00Z",
        "duration": "5:00:00",
        "scoreboard_type": "score" if score else "pass-fail",
    }
    if not score:
        contest["penalty_time"] = "0:20:00"
    return [
        ("contest", None, contest),
        ("judgement-types", None, [
            {"id": "AC", "name": "ok", "solved": True, "penalty": False},
            {"id": "WA", "name": "wrong", "solved": False, "penalty": True},
            {"id": "CE", "name": "ce", "solved": False, "penalty": False},
            {"id": "JE", "name": "je", "solved": False, "penalty": False},
        ]),
        ("problems", None, [{"id": "A", "ordinal": 1}, {"id": "B", "ordinal": 2}]),
        ("teams", "1", {"id": "1", "name": "Zeta"}),
        ("teams", "2", {"id": "2", "name": "Alpha"}),
        ("teams", "3", {"id": "3", "name": "Hidden", "hidden": True}),
    ]  # fmt: skip


def sub(
    sid: str, team: str, problem: str, minute: int, verdict: str | None, **extra: Any
) -> list[tuple[str, str | None, Any]]:
    at = f"{minute // 60}:{minute % 60:02d}:30.000"
    judgement = {
        "id": f"j{sid}",
        "submission_id": sid,
        "judgement_type_id": verdict,
        "start_contest_time": at,
        **extra,
    }
    return [
        (
            "submissions",
            sid,
            {"id": sid, "team_id": team, "problem_id": problem, "contest_time": at},
        ),
        ("judgements", f"j{sid}", judgement),
    ]


def cells(board: dict[str, Any], team: str) -> dict[str, dict[str, Any]]:
    row = next(r for r in board["rows"] if r["team_id"] == team)
    return {c["problem_id"]: c for c in row["problems"]}


def test_pass_fail_by_hand() -> None:
    state = feed(
        *base(),
        *sub("1", "1", "A", 10, "WA"),
        *sub("2", "1", "A", 15, "CE"),  # no penalty, but judged
        *sub("3", "1", "A", 20, "AC"),
        *sub("4", "1", "A", 30, "WA"),  # after the solve: ignored
        *sub("5", "2", "A", 25, "AC"),
        *sub("6", "2", "B", 40, "JE"),  # a judging error is pending
        *sub("7", "2", "B", 41, None),  # not judged yet
        *sub("8", "3", "A", 1, "AC"),  # hidden team
        *sub("9", "1", "B", 50, "AC"),
        ("submissions", "9", None),  # deleted: gone from the board
    )
    board = scoring.scoreboard(state)
    validator("2023-06", "scoreboard").validate(board)
    assert [r["team_id"] for r in board["rows"]] == ["2", "1"]  # 25 < 20 + 20, no hidden team
    assert [r["rank"] for r in board["rows"]] == [1, 2]
    assert board["rows"][0]["score"] == {"num_solved": 1, "total_time": 25, "time": 25}
    assert board["rows"][1]["score"] == {"num_solved": 1, "total_time": 40, "time": 20}
    assert cells(board, "1")["A"] == {
        "problem_id": "A", "num_judged": 3, "num_pending": 0, "solved": True, "time": 20,
        "first_to_solve": True,
    }  # fmt: skip
    assert cells(board, "1")["B"] == {
        "problem_id": "B",
        "num_judged": 0,
        "num_pending": 0,
        "solved": False,
    }
    assert cells(board, "2")["B"]["num_pending"] == 2
    assert cells(board, "2")["A"]["first_to_solve"] is False
    newer = scoring.scoreboard(state, version="2026-01")
    validator("master", "scoreboard").validate(newer)
    assert newer["rows"][1]["score"]["total_time"] == "0:40:00.000"


def test_ties_share_a_rank_and_list_by_name() -> None:
    state = feed(*base(), *sub("1", "1", "A", 10, "AC"), *sub("2", "2", "A", 10, "AC"))
    board = scoring.scoreboard(state)
    assert [(r["rank"], r["team_id"]) for r in board["rows"]] == [(1, "2"), (1, "1")]  # Alpha, Zeta
    awards = {a["id"]: a["team_ids"] for a in scoring.awards(board, ["A", "B"])}
    assert sorted(awards["winner"]) == ["1", "2"] and sorted(awards["first-to-solve-A"]) == [
        "1",
        "2",
    ]
    assert awards["first-to-solve-B"] == []
    validator("2023-06", "awards").validate(scoring.awards(board, ["A", "B"], (1, 1, 1)))


def test_rejudge_current_judgement() -> None:
    events = [*base(), *sub("1", "1", "A", 10, "AC")]
    # rejudged: the old judgement is no longer current, the new one says WA
    events.append(("judgements", "j1", {**events[-1][2], "current": False}))
    new = {"id": "k1", "submission_id": "1", "judgement_type_id": "WA"}
    events.append(("judgements", "k1", {**new, "start_contest_time": "3:00:00"}))
    board = scoring.scoreboard(feed(*events))
    assert cells(board, "1")["A"] == {
        "problem_id": "A",
        "num_judged": 1,
        "num_pending": 0,
        "solved": False,
    }


def test_score_contest() -> None:
    state = feed(
        *base(score=True),
        *sub("1", "1", "A", 10, "WA", score=30),
        *sub("2", "1", "A", 20, "AC", score=100),
        *sub("3", "2", "A", 5, "WA", score=60),
        *sub("4", "2", "B", 50, "WA", score=40),
        *sub("5", "2", "B", 60, "WA", score=40),  # no improvement
    )
    board = scoring.scoreboard(state)
    validator("2023-06", "scoreboard").validate(board)
    # equal totals: the earlier last improvement (minute 20 against 50) ranks first
    assert [(r["rank"], r["team_id"], r["score"]) for r in board["rows"]] == [
        (1, "1", {"score": 100.0, "time": 20}),
        (2, "2", {"score": 100.0, "time": 50}),
    ]
    assert cells(board, "2")["B"] == {
        "problem_id": "B", "num_judged": 2, "num_pending": 0, "score": 40.0, "time": 50,
    }  # fmt: skip


def test_freeze_follows_state_frozen() -> None:
    """The public view hides from the moment ``state.frozen`` says (here before the plan)."""
    events = base()
    events[0] = ("contest", None, {**events[0][2], "scoreboard_freeze_duration": "1:00:00"})
    frozen = {"started": "2026-01-01T10:00:00Z", "frozen": "2026-01-01T13:00:00Z"}
    state = feed(*events, *sub("1", "1", "A", 170, "AC"), *sub("2", "1", "B", 200, "AC"))
    assert scoring.freeze_ms(state) == 4 * 3600_000  # planned: duration - freeze duration
    state = feed(
        *events,
        ("state", None, frozen),
        *sub("1", "1", "A", 170, "AC"),
        *sub("2", "1", "B", 200, "AC"),
    )
    assert scoring.freeze_ms(state) == 3 * 3600_000
    public = cells(scoring.scoreboard(state), "1")
    full = cells(scoring.scoreboard(state, view="full"), "1")
    assert public["A"]["solved"] and not public["B"]["solved"] and public["B"]["num_pending"] == 1
    assert full["B"]["solved"]
