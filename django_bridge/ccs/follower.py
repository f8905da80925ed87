"""Keep a followed contest: apply notifications, feed the leaderboard, publish progress.

``Follower.handle`` takes one parsed notification (sans I/O); ``follow`` (in ``http``)
reads the feed and calls it. What goes where (docs/CONTEST-API.md):

* a judged submission (its current judgement) -> ``Leaderboard.record_verdict`` with the
  submission id, so a rejudge replaces and a repeat is a no-op; ``state.thawed`` ->
  ``Leaderboard.unfreeze``;
* ``submissions`` / ``runs`` / ``judgements`` -> ``judge.queued`` / ``judge.running`` /
  ``judge.verdict`` as the state of ``submission:<id>``, and ``submission.judged`` on the
  team's ``user:<team id>``;
* ``state`` -> ``contest.state`` as the state of ``contest:<id>``;
* the served scoreboard and awards (``scoring``) -> Redis, at most every ``flush_interval``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from django_bridge.ccs import scoring
from django_bridge.ccs.feed import Notification
from django_bridge.ccs.state import Change, ContestState
from django_bridge.ccs.store import ContestStore
from django_bridge.ccs.times import parse_reltime, parse_time
from django_bridge.leaderboard import Contest, Leaderboard

logger = logging.getLogger(__name__)

PublishFn = Callable[..., object]
STATE_FIELDS = ("started", "frozen", "ended", "thawed", "finalized", "end_of_updates")


def _default_publish(
    channel: str, type_: str, data: Any, state: bool = False, *, envelope_id: str | None = None
) -> None:
    from django_bridge.publishing import publish  # late: needs Django settings

    publish(channel, type_, data, state, envelope_id=envelope_id)


def contest_status(status: dict[str, Any]) -> str:
    """Return the latest reached of upcoming, started, frozen, ended, thawed, finalized."""
    name = "upcoming"
    for field in ("started", "frozen", "ended", "thawed", "finalized"):
        if status.get(field):
            name = field
    return name


class Follower:
    """One contest's followed state and what it publishes."""

    def __init__(
        self,
        contest_id: str,
        store: ContestStore,
        board: Leaderboard | None,
        *,
        publish: PublishFn | None = None,
        medals: tuple[int, int, int] | None = None,
        top_n: int = 50,
        flush_interval: float = 0.5,
    ) -> None:
        """Follow ``contest_id`` into ``store`` (loaded now) and ``board`` (None: no board)."""
        self.contest_id = contest_id
        self.store = store
        self.board = board
        self.medals = medals
        self.top_n = top_n
        self.flush_interval = flush_interval
        self._publish = publish or _default_publish
        self.state: ContestState = store.load()
        self._judgements: dict[str, set[str]] = {}  # submission id -> judgement ids
        for jid, judgement in self.state.all("judgements").items():
            self._judgements.setdefault(str(judgement.get("submission_id")), set()).add(jid)
        self._runs: dict[str, set[str]] = {}  # judgement id -> run ids
        for rid, run in self.state.all("runs").items():
            self._runs.setdefault(str(run.get("judgement_id")), set()).add(rid)
        self._shown: dict[str, int] = {}  # judgement id -> highest test published
        self._recorded: dict[str, Any] = {}  # submission id -> result given to the board
        self._dirty = True
        self._flushed = 0.0

    # -- the leaderboard's view of the contest

    def board_contest(self) -> Contest:
        """Return the leaderboard ``Contest`` for the followed contest's settings."""
        contest = self.state.get("contest") or {}
        start = contest.get("start_time")
        start_s = parse_time(start).timestamp() if isinstance(start, str) else 0.0
        freeze = scoring.freeze_ms(self.state)
        return Contest(
            id=self.contest_id,
            rules="ioi" if contest.get("scoreboard_type") == "score" else "icpc",
            start=start_s,
            freeze_at=None if freeze is None else start_s + freeze / 1000,
            penalty=scoring.penalty_time(self.state),
            top_n=self.top_n,
        )

    # -- input

    def handle(self, note: Notification) -> list[Change]:
        """Apply one notification, publish what it changed; return the changes."""
        changes = self.state.apply(note)
        for change in changes:
            self._react(change)
        # saved after the reactions: a crash in between replays them on restart (recording
        # is idempotent per submission, events carry stable envelope ids), never skips them
        self.store.save(changes, self.state.token)
        if changes:
            self._dirty = True
        if self._dirty and time.monotonic() - self._flushed >= self.flush_interval:
            self.flush()
        return changes

    def idle(self) -> None:
        """A keep-alive or a pause: write the served documents if they are stale."""
        if self._dirty:
            self.flush()

    def forget_token(self) -> None:
        """The server refused the token: the next connection starts from the beginning."""
        self.state.token = None
        self.store.save([], None)

    @property
    def finished(self) -> bool:
        """True once ``state.end_of_updates`` is set (the feed's last event)."""
        return bool((self.state.get("state") or {}).get("end_of_updates"))

    def flush(self) -> None:
        """Compute and store the served scoreboards and awards (public and full), and the
        problem ids in order (``problems``, for pages)."""
        problems = scoring.problem_order(self.state)
        docs: dict[str, Any] = {"problems": problems}
        for view in ("public", "full"):
            board = scoring.scoreboard(self.state, view=view)
            docs[f"scoreboard:{view}"] = board
            docs[f"awards:{view}"] = scoring.awards(board, problems, self.medals)
        self.store.put_docs(docs)
        self._dirty = False
        self._flushed = time.monotonic()

    # -- reactions

    def _react(self, change: Change) -> None:
        if change.type == "state":
            self._on_state(change)
        elif change.type == "submissions":
            if change.old is None and change.new is not None:
                self._progress(change.id, "judge.queued", {"status": "queued"}, "queued")
            self._evaluate(change.id)
        elif change.type == "judgements":
            data = change.new or change.old
            sid = str(data.get("submission_id"))
            known = self._judgements.setdefault(sid, set())
            if change.new is None:
                known.discard(change.id)
            else:
                known.add(change.id)
            self._evaluate(sid)
        elif change.type == "runs":
            jid = str((change.new or change.old).get("judgement_id"))
            if change.new is None:
                self._runs.get(jid, set()).discard(change.id)
            else:
                self._runs.setdefault(jid, set()).add(change.id)
                self._on_run(change.new)

    def _on_state(self, change: Change) -> None:
        status = {field: (change.new or {}).get(field) for field in STATE_FIELDS}
        data = {"contest": self.contest_id, "status": contest_status(status), **status}
        self._publish(f"contest:{self.contest_id}", "contest.state", data, True)
        was_thawed = bool((change.old or {}).get("thawed"))
        if status["thawed"] and not was_thawed and self.board is not None:
            self.board.unfreeze(self.board_contest())

    def _current(self, sid: str) -> dict[str, Any] | None:
        best: tuple[tuple[int, str], dict[str, Any]] | None = None
        for jid in self._judgements.get(sid, ()):
            judgement = self.state.get("judgements", jid)
            if judgement is None or judgement.get("current") is False:
                continue
            start = judgement.get("start_contest_time")
            order = (parse_reltime(start) if isinstance(start, str) else 0, jid)
            if best is None or order > best[0]:
                best = (order, judgement)
        return None if best is None else best[1]

    def _evaluate(self, sid: str) -> None:
        submission = self.state.get("submissions", sid)
        judgement = self._current(sid)
        if submission is None or judgement is None:
            return
        type_id = judgement.get("judgement_type_id")
        if type_id is None or type_id in scoring.PENDING_TYPES:
            return
        team = str(submission.get("team_id"))
        team_data = self.state.get("teams", team) or {}
        score = judgement.get("score")
        verdict = {
            "submission": sid,
            "problem": submission.get("problem_id"),
            "verdict": type_id,
            "score": score,
            "judgement": judgement.get("id"),
        }
        if self._recorded.get(sid) == verdict:
            return
        self._recorded[sid] = verdict
        self._progress(
            sid, "judge.verdict", {"status": "done", **verdict}, f"{verdict['judgement']}.v"
        )
        self._publish(
            f"user:{team}",
            "submission.judged",
            verdict,
            False,
            envelope_id=f"user:{team}#ccs.{sid}.{verdict['judgement']}.{type_id}",
        )
        if self.board is None or team_data.get("hidden") or not team_data:
            return
        contest = self.board_contest()
        at = float(contest.start) + parse_reltime(str(submission["contest_time"])) / 1000  # type: ignore[arg-type]
        result: str | float
        if contest.rules == "ioi":
            result = float(score or 0)
        else:
            solved, penalty = scoring.judgement_type_info(self.state, str(type_id))
            result = "AC" if solved else ("WA" if penalty else "CE")
        self.board.record_verdict(
            contest,
            team,
            str(submission.get("problem_id")),
            result,
            at,
            submission=sid,
            name=str(team_data.get("display_name") or team_data.get("name") or team),
        )

    def _on_run(self, run: dict[str, Any]) -> None:
        judgement: dict[str, Any] | None = self.state.get(
            "judgements", str(run.get("judgement_id"))
        )
        if judgement is None:
            return  # out of order: the judgement's own notification publishes its state
        sid = str(judgement.get("submission_id"))
        current = self._current(sid) or {}
        if current.get("id") != judgement.get("id") or judgement.get("judgement_type_id"):
            return  # an old judgement's run, or the verdict is already out
        submission = self.state.get("submissions", sid) or {}
        problem = self.state.get("problems", str(submission.get("problem_id"))) or {}
        found = (self.state.get("runs", rid) for rid in self._runs.get(str(judgement["id"]), ()))
        runs = sorted((r for r in found if r), key=lambda r: r.get("ordinal", 0))
        results = [
            {
                "test": r.get("ordinal"),
                "verdict": r.get("judgement_type_id"),
                "time_ms": round(float(r.get("run_time") or 0) * 1000),
            }
            for r in runs
        ]
        # runs may arrive out of order: progress only moves forward (the highest test seen)
        test = max((int(r.get("ordinal") or 0) for r in runs), default=0)
        if test <= self._shown.get(str(judgement["id"]), 0):
            return
        self._shown[str(judgement["id"])] = test
        data = {
            "status": "running",
            "test": test,
            "total": problem.get("test_data_count"),
            "results": results,
        }
        self._progress(sid, "judge.running", data, f"{judgement['id']}.{test}")

    def _progress(self, sid: str, type_: str, data: dict[str, Any], step: str) -> None:
        channel = f"submission:{sid}"
        payload = {"submission": sid, **data}
        self._publish(channel, type_, payload, True, envelope_id=f"{channel}#ccs.{step}")
