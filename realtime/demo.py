"""The simulated contest behind ``realtime serve --demo``.

A built-in publisher (no Django, no Redis): 25 contestants work through 5 problems, their
submissions are judged test by test, and the standings are republished after every change.

Channels (both public, so the demo page needs no token):

``contest:demo``
    ``contest.clock`` (state): round number, title, problems, start/end in server ms, phase
    ``"running"`` or ``"over"`` and, when over, the next round's start.
    ``submission.progress``: one per step of judging ("compiling", then "running" test k of n).
    ``submission.verdict``: the final verdict (AC, WA, TLE, RE, CE) and the test it stopped at.
``leaderboard:demo``
    ``leaderboard.snapshot`` (state): the full standings, ICPC rules (solved, then penalty =
    minutes to each accepted solution + 20 per rejected attempt before it).

Rounds last ``ROUND_MINUTES``; after ``INTERMISSION_S`` of final standings a new round
starts. The first round begins a few minutes in the past (simulated instantly) so that a
visitor sees a populated board at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from realtime.envelope import Envelope, Published

logger = logging.getLogger(__name__)

CONTEST_CHANNEL = "contest:demo"
LEADERBOARD_CHANNEL = "leaderboard:demo"

ROUND_MINUTES = 15
INTERMISSION_S = 30
FIRST_ROUND_HEAD_START_S = 5 * 60
HEAD_START_FEED = 20  # verdicts of the head start published for the feed
TICK_S = 0.05
BOARD_INTERVAL_MS = 300  # at most ~3 standings snapshots a second
PENALTY_MINUTES = 20

VERDICTS_REJECTED = (("WA", 0.6), ("TLE", 0.2), ("RE", 0.12), ("CE", 0.08))
LANGUAGES = (("C++17", 0.45), ("Python 3", 0.25), ("Java 21", 0.12), ("Rust", 0.1), ("Go", 0.08))


class Publisher(Protocol):
    """What the demo needs from the node (``realtime.node.Node`` satisfies it)."""

    async def publish(self, envelope: Envelope) -> Published:
        """Publish one envelope."""


@dataclass(frozen=True, slots=True)
class Problem:
    id: str
    name: str
    tests: int
    difficulty: float  # 0 (trivial) .. 1 (very hard)


@dataclass(frozen=True, slots=True)
class Contestant:
    id: str
    name: str
    affiliation: str
    skill: float  # 0 .. 1


PROBLEMS = (
    Problem("A", "Two Buttons", 6, 0.08),
    Problem("B", "Queue at the Judge", 8, 0.28),
    Problem("C", "Balanced Brackets", 10, 0.48),
    Problem("D", "Shortest Relay", 12, 0.66),
    Problem("E", "Lattice Paths Mod P", 14, 0.85),
)

_PEOPLE = (
    ("Aiko Tanaka", "Kyoto University"),
    ("Mateus Oliveira", "USP São Paulo"),
    ("Lena Fischer", "TU München"),
    ("Arjun Mehta", "IIT Bombay"),
    ("Chloé Martin", "École Polytechnique"),
    ("Wei Zhang", "Tsinghua University"),
    ("Olga Petrova", "ITMO University"),
    ("Samuel Okafor", "University of Lagos"),
    ("Emma Johansson", "KTH Stockholm"),
    ("Diego Hernández", "UNAM"),
    ("Hana Kim", "KAIST"),
    ("Tomás Novák", "Charles University"),
    ("Priya Nair", "IISc Bangalore"),
    ("Lucas Dubois", "ENS Paris"),
    ("Sofia Rossi", "Politecnico di Milano"),
    ("Jakub Kowalski", "University of Warsaw"),
    ("Nguyen Van An", "VNU Hanoi"),
    ("Fatima Zahra", "Cairo University"),
    ("Oliver Smith", "University of Cambridge"),
    ("Yuki Sato", "University of Tokyo"),
    ("Ana García", "UPC Barcelona"),
    ("Mikko Virtanen", "Aalto University"),
    ("Ivan Horvat", "University of Zagreb"),
    ("Noa Levi", "Technion"),
    ("Ethan Brown", "MIT"),
)


def _contestants(rng: random.Random) -> tuple[Contestant, ...]:
    count = len(_PEOPLE)
    people = list(_PEOPLE)
    rng.shuffle(people)
    result = []
    for i, (name, affiliation) in enumerate(people):
        # skills spread from strong to weak, with noise so the order is not fixed
        skill = 0.95 - 0.62 * i / (count - 1) + rng.uniform(-0.05, 0.05)
        result.append(Contestant(f"u{i + 1:02d}", name, affiliation, min(max(skill, 0.2), 0.99)))
    return tuple(result)


def _weighted(rng: random.Random, choices: tuple[tuple[str, float], ...]) -> str:
    x = rng.random() * sum(weight for _, weight in choices)
    for value, weight in choices:
        x -= weight
        if x <= 0:
            return value
    return choices[-1][0]


@dataclass(slots=True)
class Cell:
    """One contestant's result on one problem."""

    rejected: int = 0  # rejected attempts (before acceptance)
    solved_at: int | None = None  # ms since the round start
    pending: int = 0  # submissions being judged
    first: bool = False  # first to solve this problem in the round

    def to_json(self) -> dict[str, Any]:
        return {
            "solved": self.solved_at is not None,
            "minute": None if self.solved_at is None else self.solved_at // 60000,
            "rejected": self.rejected,
            "pending": self.pending,
            "first": self.first,
        }


@dataclass(slots=True)
class Agent:
    """A contestant's plan: the problem being worked on and when the next submission comes."""

    contestant: Contestant
    order: list[Problem]
    next_at: int  # server ms of the next submission
    judging: bool = False
    cells: dict[str, Cell] = field(default_factory=dict)


@dataclass(slots=True)
class Submission:
    id: int
    agent: Agent
    problem: Problem
    language: str
    verdict: str
    stop_test: int  # the last test run (the failing one, or the last test when accepted)
    created_at: int  # server ms
    test: int = 0  # 0 = compiling
    next_step_at: int = 0

    def payload(self, round_no: int, start: int) -> dict[str, Any]:
        return {
            "id": self.id,
            "round": round_no,
            "user": self.agent.contestant.id,
            "name": self.agent.contestant.name,
            "problem": self.problem.id,
            "language": self.language,
            "tests": self.problem.tests,
            "submitted_minute": (self.created_at - start) // 60000,
        }


class Contest:
    """One round's state and rules; pure logic driven by the times it is given (no I/O)."""

    def __init__(self, rng: random.Random, round_no: int, start_ms: int, next_id: int) -> None:
        self.rng = rng
        self.round = round_no
        self.start = start_ms
        self.end = start_ms + ROUND_MINUTES * 60_000
        self.next_id = next_id
        self.agents: list[Agent] = []
        for contestant in _contestants(rng):
            order = sorted(PROBLEMS, key=lambda p: p.difficulty + rng.uniform(-0.15, 0.15))
            agent = Agent(contestant, order, 0, cells={p.id: Cell() for p in PROBLEMS})
            agent.next_at = start_ms + self._think_ms(agent, order[0], retry=False)
            self.agents.append(agent)

    # -- the simulation

    def _think_ms(self, agent: Agent, problem: Problem, *, retry: bool) -> int:
        skill = agent.contestant.skill
        if retry:
            mean = 3 + 9 * problem.difficulty / skill
        else:
            mean = 8 + 300 * problem.difficulty**2 / skill
        return int(self.rng.expovariate(1 / mean) * 1000) + 1500

    def _accept_probability(self, agent: Agent, problem: Problem) -> float:
        tries = agent.cells[problem.id].rejected
        p = 0.16 + 0.6 * (agent.contestant.skill - problem.difficulty) + 0.04 * tries
        return min(max(p, 0.04), 0.75)

    def due(self, now: int) -> list[Submission]:
        """Create the submissions whose time has come (none after the round's end)."""
        created: list[Submission] = []
        if now >= self.end:
            return created
        for agent in self.agents:
            if agent.judging or not agent.order or agent.next_at > now:
                continue
            problem = agent.order[0]
            accepted = self.rng.random() < self._accept_probability(agent, problem)
            if accepted:
                verdict, stop_test = "AC", problem.tests
            else:
                verdict = _weighted(self.rng, VERDICTS_REJECTED)
                stop_test = (
                    0 if verdict == "CE" else 1 + int(self.rng.random() ** 1.6 * problem.tests)
                )
            sub = Submission(
                id=self.next_id,
                agent=agent,
                problem=problem,
                language=_weighted(self.rng, LANGUAGES),
                verdict=verdict,
                stop_test=min(stop_test, problem.tests),
                created_at=now,
                next_step_at=now + self.rng.randint(150, 500),
            )
            self.next_id += 1
            agent.judging = True
            agent.cells[problem.id].pending += 1
            created.append(sub)
        return created

    def step_ms(self, sub: Submission) -> int:
        """How long the next judging step takes (a TLE's last test runs to the limit)."""
        if sub.verdict == "TLE" and sub.test + 1 == sub.stop_test:
            return self.rng.randint(900, 1100)
        return self.rng.randint(100, 400)

    def finish(self, sub: Submission, now: int) -> None:
        """Apply a verdict to the standings and plan the contestant's next move."""
        agent = sub.agent
        cell = agent.cells[sub.problem.id]
        cell.pending = max(cell.pending - 1, 0)
        agent.judging = False
        if cell.solved_at is not None:
            return
        if sub.verdict == "AC":
            cell.solved_at = max(sub.created_at - self.start, 0)
            cell.first = not any(
                other.cells[sub.problem.id].solved_at is not None
                for other in self.agents
                if other is not agent
            )
            agent.order.pop(0)
            if agent.order:
                agent.next_at = now + self._think_ms(agent, agent.order[0], retry=False)
            return
        if sub.verdict != "CE":  # a compilation error costs no penalty
            cell.rejected += 1
        if cell.rejected >= 6 and len(agent.order) > 1 and self.rng.random() < 0.5:
            agent.order.append(agent.order.pop(0))  # stuck: try another problem first
        agent.next_at = now + self._think_ms(agent, agent.order[0], retry=True)

    def fast_forward(self, until: int, keep: int = 0) -> list[Submission]:
        """Simulate the round up to ``until`` at once, judging instantly (a head start).

        Returns the last ``keep`` submissions judged, oldest first.
        """
        judged: list[Submission] = []
        now = self.start
        while now < until:
            for sub in self.due(now):
                sub.test = sub.stop_test
                self.finish(sub, now)
                judged.append(sub)
            now += 1000
        return judged[-keep:] if keep else []

    # -- what gets published

    def standings(self) -> list[dict[str, Any]]:
        rows: list[tuple[tuple[int, int, int, str], dict[str, Any]]] = []
        for agent in self.agents:
            solved = 0
            penalty = 0
            last = 0
            for cell in agent.cells.values():
                if cell.solved_at is not None:
                    solved += 1
                    penalty += cell.solved_at // 60000 + PENALTY_MINUTES * cell.rejected
                    last = max(last, cell.solved_at)
            row = {
                "user": agent.contestant.id,
                "name": agent.contestant.name,
                "affiliation": agent.contestant.affiliation,
                "solved": solved,
                "penalty": penalty,
                "cells": {pid: cell.to_json() for pid, cell in agent.cells.items()},
            }
            rows.append(((-solved, penalty, last, agent.contestant.name), row))
        rows.sort(key=lambda item: item[0])
        result: list[dict[str, Any]] = []
        previous: tuple[int, int] | None = None
        rank = 0
        for position, (order, row) in enumerate(rows, start=1):
            key = (order[0], order[1])  # equal solved and penalty share a rank
            if key != previous:
                rank, previous = position, key
            row["rank"] = rank
            result.append(row)
        return result

    def snapshot(self, now: int) -> dict[str, Any]:
        return {
            "round": self.round,
            "updated": now,
            "problems": [p.id for p in PROBLEMS],
            "rows": self.standings(),
        }

    def clock(self, phase: str, next_start: int | None) -> dict[str, Any]:
        return {
            "round": self.round,
            "title": f"Demo Round #{self.round}",
            "start": self.start,
            "end": self.end,
            "phase": phase,
            "next_start": next_start,
            "penalty_minutes": PENALTY_MINUTES,
            "problems": [{"id": p.id, "name": p.name, "tests": p.tests} for p in PROBLEMS],
        }


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class DemoRunner:
    """Drive rounds of the contest in real time and publish what happens."""

    def __init__(self, node: Publisher, rng: random.Random | None = None) -> None:
        self.node = node
        self.rng = rng or random.Random()
        self.contest: Contest | None = None
        self.judging: list[Submission] = []
        self.next_round_at: int | None = None
        self.board_dirty = False
        self.board_at = 0

    async def _publish(self, channel: str, type_: str, data: Any, *, state: bool = False) -> None:
        await self.node.publish(
            Envelope(channel=channel, type=type_, data_json=orjson.dumps(data), state=state)
        )

    async def start_round(self, now: int, head_start_ms: int = 0) -> None:
        previous = self.contest
        round_no = previous.round + 1 if previous else 1
        next_id = previous.next_id if previous else 1001
        contest = Contest(self.rng, round_no, now - head_start_ms, next_id)
        recent = contest.fast_forward(now, keep=HEAD_START_FEED) if head_start_ms else []
        self.contest = contest
        self.judging = []
        self.next_round_at = None
        logger.info("demo: round %d started", round_no)
        await self._publish(
            CONTEST_CHANNEL, "contest.clock", contest.clock("running", None), state=True
        )
        for sub in recent:  # into the channel's history, so that a new page's feed is not empty
            await self._verdict(contest, sub)
        await self._publish(
            LEADERBOARD_CHANNEL, "leaderboard.snapshot", contest.snapshot(now), state=True
        )

    async def tick(self, now: int) -> None:
        """Advance everything that is due at ``now``: one iteration of the demo loop."""
        contest = self.contest
        if contest is None or (self.next_round_at is not None and now >= self.next_round_at):
            await self.start_round(now, FIRST_ROUND_HEAD_START_S * 1000 if contest is None else 0)
            return
        for sub in contest.due(now):
            self.judging.append(sub)
            self.board_dirty = True
            await self._progress(contest, sub, "compiling")
        for sub in list(self.judging):
            if sub.next_step_at > now:
                continue
            if sub.test >= sub.stop_test:
                self.judging.remove(sub)
                contest.finish(sub, now)
                self.board_dirty = True
                await self._verdict(contest, sub)
                continue
            sub.test += 1
            sub.next_step_at = now + contest.step_ms(sub)
            await self._progress(contest, sub, "running")
        if self.board_dirty and now - self.board_at >= BOARD_INTERVAL_MS:
            self.board_dirty = False
            self.board_at = now
            await self._publish(
                LEADERBOARD_CHANNEL, "leaderboard.snapshot", contest.snapshot(now), state=True
            )
        if self.next_round_at is None and now >= contest.end and not self.judging:
            self.next_round_at = now + INTERMISSION_S * 1000
            logger.info("demo: round %d over", contest.round)
            await self._publish(
                CONTEST_CHANNEL,
                "contest.clock",
                contest.clock("over", self.next_round_at),
                state=True,
            )

    async def _progress(self, contest: Contest, sub: Submission, status: str) -> None:
        data = sub.payload(contest.round, contest.start)
        data.update(status=status, test=sub.test)
        await self._publish(CONTEST_CHANNEL, "submission.progress", data)

    async def _verdict(self, contest: Contest, sub: Submission) -> None:
        data = sub.payload(contest.round, contest.start)
        limit = 1000 if sub.verdict == "TLE" else 0
        data.update(
            verdict=sub.verdict,
            test=sub.stop_test,
            time_ms=limit or self.rng.randint(15, 850),
            memory_kb=self.rng.randint(900, 65000),
        )
        await self._publish(CONTEST_CHANNEL, "submission.verdict", data)


async def run_demo(node: Publisher, stop: asyncio.Event) -> None:
    """Run the simulated contest until ``stop`` is set.

    Each iteration is guarded: an error is logged and the demo goes on (it must never die
    while the server runs). Cancellation is honoured.
    """
    runner = DemoRunner(node)
    failures = 0
    while not stop.is_set():
        try:
            await runner.tick(_now_ms())
            failures = 0
        except asyncio.CancelledError:
            raise
        except Exception:
            failures += 1
            # log the first failure of a streak in full, then stay quiet but alive
            if failures == 1:
                logger.exception("demo: iteration failed; going on")
            await _wait(stop, min(0.5 * failures, 5.0))
            continue
        await _wait(stop, TICK_S)
    logger.info("demo: stopped")


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
