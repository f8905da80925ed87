"""The Contest API scoreboard and awards, computed from a followed contest's state (pure).

Rules (Contest_Control_System_Requirements.md, "Scoring"): a submission counts through its
current judgement (the latest started one not marked ``current: false``); a submission
without a finished judgement, or with a Judging Error, is pending. A problem is solved at the
minute (floor) of its earliest solving submission; each earlier judgement whose type has
``penalty`` adds ``penalty_time`` minutes; later submissions are ignored. Teams are ordered
by problems solved, then total time, then the minute of the last solve; equal teams share a
rank and are listed by name. The public view of a frozen contest shows submissions made
from the freeze on as pending until ``state.thawed``. ``scoreboard_type: score`` sums each
problem's best judgement score instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from django_bridge.ccs.state import ContestState
from django_bridge.ccs.times import (
    duration_minutes,
    duration_ms,
    format_reltime,
    parse_reltime,
    parse_time,
)

View = Literal["public", "full"]
Version = Literal["2023-06", "2026-01"]
PENDING_TYPES = frozenset({"JE"})  # a judging error leaves the submission pending
MEDALS = ("gold", "silver", "bronze")


@dataclass(frozen=True, slots=True)
class Verdict:
    """A submission's scoring input: ``ms`` contest time, ``type`` None while pending."""

    submission: str
    team: str
    problem: str
    ms: int
    type: str | None
    score: float = 0.0


def penalty_time(state: ContestState) -> int:
    """Return the contest's penalty in minutes (integer or RELTIME in the feed; default 20)."""
    contest = state.get("contest") or {}
    return duration_minutes(contest.get("penalty_time"), 20)


def freeze_ms(state: ContestState) -> int | None:
    """Return the freeze's contest time in ms, or None when the contest has no freeze.

    The time ``state.frozen`` says when it is set (and the contest has a start time), else
    ``duration - scoreboard_freeze_duration`` from the contest.
    """
    contest = state.get("contest") or {}
    frozen = (state.get("state") or {}).get("frozen")
    start = contest.get("start_time")
    if isinstance(frozen, str) and isinstance(start, str):
        return round((parse_time(frozen) - parse_time(start)).total_seconds() * 1000)
    duration = duration_ms(contest.get("duration"))
    freeze = duration_ms(contest.get("scoreboard_freeze_duration"))
    if duration is None or freeze is None:
        return None
    return duration - freeze


def is_thawed(state: ContestState) -> bool:
    """True once ``state.thawed`` is set."""
    return bool((state.get("state") or {}).get("thawed"))


def current_judgements(state: ContestState) -> dict[str, dict[str, Any]]:
    """Return each submission's current judgement: the latest started one that is not
    marked ``current: false`` (order independent: ties go to the larger id)."""
    best: dict[str, tuple[tuple[int, str], dict[str, Any]]] = {}
    for jid, judgement in state.all("judgements").items():
        if judgement.get("current") is False:
            continue
        sid = str(judgement.get("submission_id"))
        start = judgement.get("start_contest_time")
        order = (parse_reltime(start) if isinstance(start, str) else 0, jid)
        if sid not in best or order > best[sid][0]:
            best[sid] = (order, judgement)
    return {sid: item[1] for sid, item in best.items()}


def judgement_type_info(state: ContestState, type_id: str) -> tuple[bool, bool]:
    """Return (solved, penalty) of a judgement type (known defaults when not in the feed)."""
    data = state.get("judgement-types", type_id) or {}
    solved = bool(data.get("solved", type_id == "AC"))
    penalty = bool(data.get("penalty", not solved and type_id not in ("CE", "CTL")))
    return solved, penalty


def verdicts(state: ContestState) -> list[Verdict]:
    """Return every submission of a visible team with its current verdict."""
    teams = visible_teams(state)
    judged = current_judgements(state)
    out = []
    for sid, sub in state.all("submissions").items():
        team = str(sub.get("team_id"))
        if team not in teams or not isinstance(sub.get("contest_time"), str):
            continue
        judgement = judged.get(sid) or {}
        type_id = judgement.get("judgement_type_id")
        if type_id in PENDING_TYPES:
            type_id = None
        score = judgement.get("score")
        out.append(
            Verdict(
                sid,
                team,
                str(sub.get("problem_id")),
                parse_reltime(sub["contest_time"]),
                None if type_id is None else str(type_id),
                float(score) if isinstance(score, int | float) else 0.0,
            )
        )
    return out


def visible_teams(state: ContestState) -> dict[str, dict[str, Any]]:
    """Return the teams that are not ``hidden``."""
    return {tid: t for tid, t in state.all("teams").items() if not t.get("hidden")}


def problem_order(state: ContestState) -> list[str]:
    """Return problem ids by ordinal (then label, then id)."""
    problems = state.all("problems")
    return sorted(
        problems,
        key=lambda p: (problems[p].get("ordinal", 0), str(problems[p].get("label", "")), p),
    )


def scoreboard(
    state: ContestState, *, view: View = "public", version: Version = "2023-06"
) -> dict[str, Any]:
    """Return the ``/scoreboard`` object of the Contest API for ``view``.

    ``version`` "2023-06" writes times as integer minutes; "2026-01" as RELTIME strings.
    """
    hide_from = None if view == "full" or is_thawed(state) else freeze_ms(state)
    contest = state.get("contest") or {}
    score_type = contest.get("scoreboard_type", "pass-fail") == "score"
    penalty = penalty_time(state)
    problems = problem_order(state)
    teams = visible_teams(state)
    by_cell: dict[tuple[str, str], list[Verdict]] = {}
    latest = 0
    for verdict in verdicts(state):
        latest = max(latest, verdict.ms)
        by_cell.setdefault((verdict.team, verdict.problem), []).append(verdict)
    rows = []
    for tid in teams:
        cells = []
        for pid in problems:
            items = by_cell.get((tid, pid), [])
            cells.append(_cell(state, pid, items, hide_from, penalty, score_type))
        rows.append(_row(tid, cells, score_type))
    _rank(rows, teams, score_type)
    _first_to_solve(rows)
    for row in rows:
        row["score"].pop("_key", None)
        for cell in row["problems"]:
            cell.pop("_ms", None)
    status = {
        k: (state.get("state") or {}).get(k)
        for k in ("started", "frozen", "ended", "thawed", "finalized", "end_of_updates")
    }
    board = {
        "time": _event_time(state),
        "contest_time": format_reltime(latest),
        "state": status,
        "rows": rows,
    }
    return board if version == "2023-06" else with_reltimes(board)


def with_reltimes(board: dict[str, Any]) -> dict[str, Any]:
    """Return a 2023-06 scoreboard (integer minutes) with the newer RELTIME times."""
    rows = []
    for row in board["rows"]:
        score = {
            k: format_reltime(v * 60_000) if k in ("total_time", "time") else v
            for k, v in row["score"].items()
        }
        if "num_solved" in score:
            score.setdefault("time", None)  # newer versions: null iff nothing is solved
        cells = [
            {k: format_reltime(v * 60_000) if k == "time" else v for k, v in cell.items()}
            for cell in row["problems"]
        ]
        rows.append({**row, "score": score, "problems": cells})
    return {**board, "rows": rows}


def _cell(
    state: ContestState,
    pid: str,
    items: list[Verdict],
    hide_from: int | None,
    penalty: int,
    score_type: bool,
) -> dict[str, Any]:
    shown = [v if hide_from is None or v.ms < hide_from else _pending(v) for v in items]
    judged = [v for v in shown if v.type is not None]
    if score_type:
        best = max((v.score for v in judged), default=0.0)
        cell: dict[str, Any] = {
            "problem_id": pid,
            "num_judged": len(judged),
            "num_pending": len(shown) - len(judged),
            "score": best,
        }
        if best > 0:
            reached = min(v.ms for v in judged if v.score == best)
            cell.update(time=reached // 60_000, _ms=reached)
        return cell
    solves = [v.ms for v in judged if judgement_type_info(state, v.type or "")[0]]
    first = min(solves) if solves else None
    before = [v for v in shown if first is None or v.ms < first]
    wrong = sum(1 for v in before if v.type is not None and judgement_type_info(state, v.type)[1])
    cell = {
        "problem_id": pid,
        "num_judged": sum(1 for v in before if v.type is not None) + (first is not None),
        "num_pending": sum(1 for v in before if v.type is None),
        "solved": first is not None,
    }
    if first is not None:
        cell.update(time=first // 60_000, _ms=first, _penalty=penalty * wrong)
    return cell


def _pending(verdict: Verdict) -> Verdict:
    return Verdict(verdict.submission, verdict.team, verdict.problem, verdict.ms, None)


def _row(tid: str, cells: list[dict[str, Any]], score_type: bool) -> dict[str, Any]:
    times = [c["time"] for c in cells if "time" in c]
    if score_type:
        total = sum(float(c["score"]) for c in cells)
        score: dict[str, Any] = {"score": total}
        if times:
            score["time"] = max(times)
        score["_key"] = (-total, max(times, default=0))
    else:
        solved = sum(1 for c in cells if c["solved"])
        penalty_total = sum(c["time"] + c.pop("_penalty", 0) for c in cells if c["solved"])
        score = {"num_solved": solved, "total_time": penalty_total}
        if solved:
            score["time"] = max(times)
        score["_key"] = (-solved, penalty_total, max(times, default=0))
    return {"rank": 0, "team_id": tid, "score": score, "problems": cells}


def _rank(rows: list[dict[str, Any]], teams: dict[str, dict[str, Any]], score_type: bool) -> None:
    def name(tid: str) -> str:
        return str(teams[tid].get("display_name") or teams[tid].get("name") or tid).casefold()

    rows.sort(key=lambda r: (r["score"]["_key"], name(r["team_id"]), r["team_id"]))
    for i, row in enumerate(rows):
        same = i > 0 and row["score"]["_key"] == rows[i - 1]["score"]["_key"]
        row["rank"] = rows[i - 1]["rank"] if same else i + 1


def _first_to_solve(rows: list[dict[str, Any]]) -> None:
    first: dict[str, int] = {}
    for row in rows:
        for cell in row["problems"]:
            if cell.get("solved"):  # pass-fail only: a score contest has no "solved"
                ms = cell["_ms"]
                first[cell["problem_id"]] = min(first.get(cell["problem_id"], ms), ms)
    for row in rows:
        for cell in row["problems"]:
            if cell.get("solved"):
                cell["first_to_solve"] = cell["_ms"] == first[cell["problem_id"]]


def _event_time(state: ContestState) -> str:
    status = state.get("state") or {}
    for field in ("end_of_updates", "finalized", "thawed", "ended", "frozen", "started"):
        if status.get(field):
            return str(status[field])
    contest = state.get("contest") or {}
    return str(contest.get("start_time") or "1970-01-01T00:00:00Z")


def _scored(row: dict[str, Any]) -> bool:
    score = row["score"]
    return bool(score.get("num_solved") or score.get("score"))


def awards(
    board: dict[str, Any], problems: list[str], medals: tuple[int, int, int] | None = None
) -> list[dict[str, Any]]:
    """Return the ``/awards`` array for a scoreboard from ``scoreboard()``.

    ``winner`` (the current leaders), ``first-to-solve-<problem>`` for every problem, and
    with ``medals`` = (gold, silver, bronze) counts the ``<colour>-medal`` awards by rank.
    Awards list teams that scored only (a board where nobody scored has no winner).
    """
    rows = [row for row in board["rows"] if _scored(row)]
    out = [
        {
            "id": "winner",
            "citation": "Contest winner",
            "team_ids": [row["team_id"] for row in rows if row["rank"] == 1],
        }
    ]
    if medals is not None:
        low = 0
        for colour, count in zip(MEDALS, medals, strict=True):
            high = low + count
            out.append(
                {
                    "id": f"{colour}-medal",
                    "citation": f"{colour.capitalize()} medal winner",
                    "team_ids": [row["team_id"] for row in rows if low < row["rank"] <= high],
                }
            )
            low = high
    for pid in problems:
        teams = [
            row["team_id"]
            for row in rows
            for cell in row["problems"]
            if cell["problem_id"] == pid and cell.get("first_to_solve")
        ]
        out.append(
            {"id": f"first-to-solve-{pid}", "citation": f"First to solve {pid}", "team_ids": teams}
        )
    return out
