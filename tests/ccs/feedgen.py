"""Generate a recorded-format Contest API event feed (seeded): the contest and its truth.

A contest of ``teams`` teams and ``problems`` problems, 5 hours with a 1-hour freeze, and
about ``submissions`` submissions, each with a judgement, its runs test by test and a final
verdict; some submissions are rejudged later (the old judgement stops being current, a new
one with a different verdict replaces it); the feed then repeats some lines and swaps some
neighbours. ``lines(dialect)`` renders it as 2020-03 (``op``, ``since_id``) or 2023-06
(``token``, ``since_token``) NDJSON.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

START = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
DURATION_MS = 5 * 3600 * 1000
FREEZE_MS = 4 * 3600 * 1000
TYPES = {
    "AC": (True, False),
    "WA": (False, True),
    "TLE": (False, True),
    "RTE": (False, True),
    "CE": (False, False),
}


def reltime(ms: int) -> str:
    seconds, millis = divmod(ms, 1000)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}.{millis:03d}"


def abstime(ms: int) -> str:
    when = START + timedelta(milliseconds=ms)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Event:
    """One notification before rendering: at contest time ``ms``."""

    ms: int
    type: str
    id: str | None
    data: Any


@dataclass
class Contest:
    """The generated contest: its events in feed order and the final truth."""

    contest_id: str
    events: list[Event] = field(default_factory=list)
    teams: dict[str, str] = field(default_factory=dict)  # id -> name
    problems: list[str] = field(default_factory=list)
    # submission id -> (team, problem, ms, final verdict)
    truth: dict[str, tuple[str, str, int, str]] = field(default_factory=dict)
    rejudged: list[str] = field(default_factory=list)
    penalty: int = 20

    def lines(self, dialect: str) -> list[bytes]:
        """Render the events as NDJSON lines (no keep-alives; the server adds those).

        ``dialect``: "2020-03" (``op``, event ids), "2023-06" (tokens, integer
        ``penalty_time``) or "2026-01" (tokens, RELTIME ``penalty_time``).
        """
        out = []
        for i, event in enumerate(self.events):
            data = event.data
            if dialect == "2020-03":
                kind = "contests" if event.type == "contest" else event.type
                if isinstance(data, dict):
                    data = {k: v for k, v in data.items() if k != "current"}
                    if kind == "contests":
                        data["penalty_time"] = self.penalty
                line = {"type": kind, "id": f"ev{i}", "op": "create", "data": data}
                if event.type in ("state", "contest") or (
                    event.type == "judgements" and data.get("judgement_type_id")
                ):
                    line["op"] = "update"
            else:
                if dialect != "2023-06" and event.type == "contest":
                    # newer than 2023-06: penalty_time is a RELTIME
                    data = {**data, "penalty_time": reltime(self.penalty * 60_000)}
                line = {"type": event.type, "id": event.id, "data": data, "token": f"tk{i}"}
            out.append(orjson.dumps(line))
        return out


def generate(
    seed: int = 18,
    teams: int = 50,
    problems: int = 10,
    submissions: int = 1000,
    rejudges: int = 40,
    repeats: float = 0.04,
    swaps: float = 0.04,
    contest_id: str = "wf",
) -> Contest:
    """Return a seeded contest (see the module docstring)."""
    rng = random.Random(seed)
    contest = Contest(contest_id)
    ev = contest.events
    ev.append(
        Event(
            -3_600_000,
            "contest",
            None,
            {
                "id": contest_id,
                "name": "Generated contest",
                "formal_name": "Generated contest",
                "start_time": abstime(0),
                "duration": reltime(DURATION_MS),
                "scoreboard_freeze_duration": reltime(DURATION_MS - FREEZE_MS),
                "scoreboard_type": "pass-fail",
                "penalty_time": contest.penalty,
            },
        )
    )
    for type_id, (solved, penalty) in TYPES.items():
        ev.append(
            Event(
                -3_500_000,
                "judgement-types",
                type_id,
                {"id": type_id, "name": type_id, "solved": solved, "penalty": penalty},
            )
        )
    tests: dict[str, int] = {}
    for p in range(problems):
        pid = chr(ord("A") + p)
        tests[pid] = rng.randint(3, 8)
        contest.problems.append(pid)
        ev.append(
            Event(
                -3_400_000,
                "problems",
                pid,
                {
                    "id": pid,
                    "label": pid,
                    "name": f"Problem {pid}",
                    "ordinal": p,
                    "test_data_count": tests[pid],
                },
            )
        )
    skill = {}
    for t in range(1, teams + 1):
        tid = f"t{t}"
        contest.teams[tid] = f"Team {t:02d}"
        skill[tid] = rng.random()
        ev.append(Event(-3_300_000, "teams", tid, {"id": tid, "name": contest.teams[tid]}))
    status: dict[str, Any] = dict.fromkeys(
        ("started", "frozen", "ended", "thawed", "finalized", "end_of_updates")
    )

    def state_event(ms: int, **fields: str) -> None:
        status.update(fields)
        ev.append(Event(ms, "state", None, dict(status)))

    state_event(-1_000_000)
    state_event(0, started=abstime(0))
    state_event(FREEZE_MS, frozen=abstime(FREEZE_MS))
    state_event(DURATION_MS, ended=abstime(DURATION_MS))
    judgement_no = 0
    run_no = 0

    def judge(sid: str, at: int, verdict: str, problem: str) -> tuple[str, int]:
        nonlocal judgement_no, run_no
        judgement_no += 1
        jid = f"j{judgement_no}"
        start = at + rng.randint(1_000, 20_000)
        base = {
            "id": jid,
            "submission_id": sid,
            "judgement_type_id": None,
            "start_time": abstime(start),
            "start_contest_time": reltime(start),
            "end_time": None,
            "end_contest_time": None,
            "current": True,
        }
        ev.append(Event(start, "judgements", jid, base))
        count = (
            0
            if verdict == "CE"
            else tests[problem]
            if verdict == "AC"
            else rng.randint(1, tests[problem])
        )
        t = start
        for ordinal in range(1, count + 1):
            run_no += 1
            t += rng.randint(200, 3_000)
            result = "AC" if verdict == "AC" or ordinal < count else verdict
            ev.append(
                Event(
                    t,
                    "runs",
                    f"r{run_no}",
                    {
                        "id": f"r{run_no}",
                        "judgement_id": jid,
                        "ordinal": ordinal,
                        "judgement_type_id": result,
                        "time": abstime(t),
                        "contest_time": reltime(t),
                        "run_time": rng.randint(1, 2000) / 1000,
                    },
                )
            )
        end = t + rng.randint(100, 2_000)
        done = {
            **base,
            "judgement_type_id": verdict,
            "end_time": abstime(end),
            "end_contest_time": reltime(end),
        }
        ev.append(Event(end, "judgements", jid, done))
        return jid, end

    def pick_verdict(team: str) -> str:
        roll = rng.random()
        if roll < 0.25 + 0.4 * skill[team]:
            return "AC"
        return rng.choice(["WA", "WA", "TLE", "RTE", "CE"])

    judgements: dict[str, str] = {}
    times = sorted(rng.randrange(0, DURATION_MS - 60_000) for _ in range(submissions))
    for n, at in enumerate(times, 1):
        sid = f"s{n}"
        team = rng.choice(list(contest.teams))
        problem = rng.choice(contest.problems)
        verdict = pick_verdict(team)
        ev.append(
            Event(
                at,
                "submissions",
                sid,
                {
                    "id": sid,
                    "language_id": "cpp",
                    "problem_id": problem,
                    "team_id": team,
                    "time": abstime(at),
                    "contest_time": reltime(at),
                    "files": [],
                },
            )
        )
        judgements[sid], _ = judge(sid, at, verdict, problem)
        contest.truth[sid] = (team, problem, at, verdict)
    # rejudges: after the contest (and some during it), replacing the verdict
    for sid in rng.sample(sorted(contest.truth), rejudges):
        team, problem, at, verdict = contest.truth[sid]
        when = max(at + 60_000, rng.randrange(at, DURATION_MS + 1_800_000))
        new = rng.choice([v for v in TYPES if v != verdict])
        old = judgements[sid]
        old_done = next(e for e in reversed(ev) if e.type == "judgements" and e.id == old)
        ev.append(Event(when, "judgements", old, {**old_done.data, "current": False}))
        # the new judgement starts after the old one (the 2020-03 rendering has no `current`)
        judgements[sid], _ = judge(sid, when, new, problem)
        contest.truth[sid] = (team, problem, at, new)
        contest.rejudged.append(sid)
    ev.sort(key=lambda e: e.ms)  # stable: a judgement's steps keep their order
    last = max(e.ms for e in ev)
    state_event(last + 1_000, thawed=abstime(last + 1_000))
    state_event(last + 2_000, finalized=abstime(last + 2_000))
    state_event(last + 3_000, end_of_updates=abstime(last + 3_000))

    # repeats and neighbour swaps (not of the very last event: end_of_updates stays last).
    # The spec guarantees that an object's latest notification is its current state, so a
    # repeat never lands after a newer version of its object and a swap never reorders two
    # notifications of one object.
    def key(e: Event) -> tuple[str, str | None]:
        return (e.type, e.id)

    for i in sorted(rng.sample(range(len(ev) - 3), int(len(ev) * repeats)), reverse=True):
        j = rng.randint(i + 1, min(len(ev) - 3, i + 50))
        if all(key(e) != key(ev[i]) for e in ev[i + 1 : j]):
            ev.insert(j, ev[i])
    for _ in range(int(len(ev) * swaps)):
        i = rng.randrange(1, len(ev) - 4)
        if key(ev[i]) != key(ev[i + 1]):
            ev[i], ev[i + 1] = ev[i + 1], ev[i]
    return contest
