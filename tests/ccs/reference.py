"""A from-scratch computation of a feed's standings, written apart from django_bridge.ccs.

It reads the NDJSON lines itself (the last line per object wins, as the spec guarantees),
takes each submission's current judgement, and applies the ICPC rules of the CCS
requirements directly, to give what the served scoreboard and the bridge's leaderboard
must show.
"""

from __future__ import annotations

from typing import Any

import orjson


def ms(text: str) -> int:
    hours, minutes, seconds = text.split(":")
    return (int(hours) * 3600 + int(minutes) * 60) * 1000 + round(float(seconds) * 1000)


def latest(lines: list[bytes]) -> dict[tuple[str, str | None], Any]:
    """Return the last data per (type, object id) of the lines; deletions removed."""
    objects: dict[tuple[str, str | None], Any] = {}
    for line in lines:
        event = orjson.loads(line)
        kind = "contest" if event["type"] == "contests" else event["type"]
        data = event["data"]
        if "op" in event:
            oid = None if kind in ("contest", "state") else str(data["id"])
            data = None if event["op"] == "delete" else data
        else:
            oid = event["id"]
        objects[(kind, oid)] = data
    return {k: v for k, v in objects.items() if v is not None}


def submissions(objects: dict[tuple[str, str | None], Any]) -> dict[str, dict[str, Any]]:
    """Return submission id -> {team, problem, ms, verdict (None: pending)}."""
    chosen: dict[str, dict[str, Any]] = {}
    for (kind, _), j in objects.items():
        if kind != "judgements" or j.get("current") is False:
            continue
        sid = j["submission_id"]
        if sid not in chosen or (ms(j["start_contest_time"]), j["id"]) > (
            ms(chosen[sid]["start_contest_time"]),
            chosen[sid]["id"],
        ):
            chosen[sid] = j
    out = {}
    for (kind, sid), s in objects.items():
        if kind == "submissions":
            assert sid is not None
            out[sid] = {
                "team": s["team_id"],
                "problem": s["problem_id"],
                "ms": ms(s["contest_time"]),
                "verdict": chosen.get(sid, {}).get("judgement_type_id"),
            }
    return out


def scoreboard_rows(lines: list[bytes], *, public: bool) -> list[dict[str, Any]]:
    """Return the rows the scoreboard must serve (2023-06 integer minutes)."""
    objects = latest(lines)
    contest = objects[("contest", None)]
    penalty = contest["penalty_time"]
    if isinstance(penalty, str):
        penalty = ms(penalty) // 60_000
    freeze = ms(contest["duration"]) - ms(contest["scoreboard_freeze_duration"])
    thawed = bool(objects.get(("state", None), {}).get("thawed"))
    types = {oid: d for (k, oid), d in objects.items() if k == "judgement-types"}
    problems = sorted(
        (d for (k, _), d in objects.items() if k == "problems"), key=lambda p: p["ordinal"]
    )
    teams = {oid: d["name"] for (k, oid), d in objects.items() if k == "teams"}
    subs = submissions(objects)
    rows = []
    for team in teams:
        cells = []
        solved = total = last = 0
        for problem in problems:
            mine = sorted(
                (s for s in subs.values() if s["team"] == team and s["problem"] == problem["id"]),
                key=lambda s: s["ms"],
            )
            judged = pending = wrong = 0
            solved_at = None
            for s in mine:
                verdict = s["verdict"]
                if public and not thawed and s["ms"] >= freeze:
                    verdict = None
                if solved_at is not None and s["ms"] > solved_at:
                    break
                if verdict is None:
                    if solved_at is None:
                        pending += 1
                    continue
                if types[verdict]["solved"]:
                    if solved_at is None:
                        solved_at = s["ms"]
                        judged += 1
                    continue
                if solved_at is None:
                    judged += 1
                    wrong += types[verdict]["penalty"]
            cell: dict[str, Any] = {
                "problem_id": problem["id"],
                "num_judged": judged,
                "num_pending": pending,
                "solved": solved_at is not None,
            }
            if solved_at is not None:
                minute = solved_at // 60_000
                cell["time"] = minute
                cell["_ms"] = solved_at
                solved += 1
                total += minute + penalty * wrong
                last = max(last, minute)
            cells.append(cell)
        score: dict[str, Any] = {"num_solved": solved, "total_time": total}
        if solved:
            score["time"] = last
        rows.append(
            {"team_id": team, "score": score, "problems": cells, "_key": (-solved, total, last)}
        )
    rows.sort(key=lambda r: (r["_key"], teams[r["team_id"]]))
    for i, row in enumerate(rows):
        tie = i and row["_key"] == rows[i - 1]["_key"]
        row["rank"] = rows[i - 1]["rank"] if tie else i + 1
    first: dict[str, int] = {}
    for row in rows:
        for cell in row["problems"]:
            if "_ms" in cell:
                first[cell["problem_id"]] = min(first.get(cell["problem_id"], 1 << 62), cell["_ms"])
    for row in rows:
        del row["_key"]
        for cell in row["problems"]:
            if "_ms" in cell:
                cell["first_to_solve"] = cell.pop("_ms") == first[cell["problem_id"]]
    return [
        {"rank": r["rank"], "team_id": r["team_id"], "score": r["score"], "problems": r["problems"]}
        for r in rows
    ]


def leaderboard_rows(
    lines: list[bytes], *, public: bool
) -> dict[str, tuple[int, int, dict[str, list[Any]]]]:
    """Return team -> (solved, penalty, cells) as the bridge's leaderboard must hold them.

    The leaderboard sees judged submissions only; its public view counts those made before
    the freeze until the thaw; its cells are ``[wrong attempts before the first solve (all
    of them if unsolved), minute or None]`` for problems with a counted attempt.
    """
    objects = latest(lines)
    contest = objects[("contest", None)]
    penalty = contest["penalty_time"]
    if isinstance(penalty, str):
        penalty = ms(penalty) // 60_000
    freeze = ms(contest["duration"]) - ms(contest["scoreboard_freeze_duration"])
    thawed = bool(objects.get(("state", None), {}).get("thawed"))
    types = {oid: d for (k, oid), d in objects.items() if k == "judgement-types"}
    by_team: dict[str, dict[str, list[tuple[int, str]]]] = {}
    for s in submissions(objects).values():
        if s["verdict"] is None:
            continue
        by_team.setdefault(s["team"], {}).setdefault(s["problem"], []).append(
            (s["ms"], s["verdict"])
        )
    out = {}
    for team, problems in by_team.items():
        cells: dict[str, list[Any]] = {}
        solved = total = 0
        for problem, attempts in problems.items():
            seen = [a for a in attempts if not public or thawed or a[0] < freeze]
            if not seen:
                continue
            solves = [t for t, v in seen if types[v]["solved"]]
            first = min(solves) if solves else None
            wrong = sum(
                1
                for t, v in seen
                if not types[v]["solved"] and types[v]["penalty"] and (first is None or t < first)
            )
            cells[problem] = [wrong, None if first is None else first // 60_000]
            if first is not None:
                solved += 1
                total += first // 60_000 + penalty * wrong
        if cells:
            out[team] = (solved, total, cells)
    return out
