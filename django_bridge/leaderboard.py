"""Live contest leaderboards: ICPC and IOI rules, ranks in Redis, pushed to watchers.

Two layers:

* The rules (pure functions, no Redis): a contestant's attempts per problem become cells,
  cells become totals, totals become one exact integer ``key`` (higher is better) that
  orders exactly like the rules, and keys become ranks (standard competition ranking:
  ties share a rank, 1, 2, 2, 4).
* ``Leaderboard``: the store (one Redis hash per contestant, one sorted set per view; see
  ``leaderboard_scripts``) and the publishing. Recording a verdict re-reads one
  contestant, recomputes that contestant's row from all of its attempts (so duplicates are
  no-ops, rejudges replace, and arrival order does not matter), and writes it with one
  atomic script: O(log n) in the number of contestants.

Every event on ``leaderboard:<contest>`` and ``jury:<contest>`` is self-sufficient: it
carries the whole top-N board (``data.top``) besides the rows that changed
(``data.changed``), and it is published as the channel's state. A watcher whose server skips
intermediate events (coalescing, a slow client) still shows the right board from the latest
event alone. See docs/LEADERBOARDS.md.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import orjson
import redis

from django_bridge import leaderboard_scripts as scripts
from django_bridge import redis_client

logger = logging.getLogger(__name__)

RulesName = Literal["icpc", "ioi"]
View = Literal["jury", "public"]
ACCEPTED = "AC"
COMPILE_ERROR = "CE"

# Exact integer keys must stay below 2**53 (Redis scores are doubles): the limits below
# keep every key representable, so equal totals give bit-equal scores and ties are exact.
ICPC_PENALTY_LIMIT = 10**9  # minutes
ICPC_SOLVED_LIMIT = 10**6
# with the last-accepted tie-break the key holds three parts: smaller ranges, same 2**53
ICPC_TB_MINUTE_LIMIT = 10**5  # minutes since the start (about 69 days)
ICPC_TB_PENALTY_LIMIT = 10**6
ICPC_TB_SOLVED_LIMIT = 2**53 // (ICPC_TB_PENALTY_LIMIT * ICPC_TB_MINUTE_LIMIT)
IOI_TIME_LIMIT = 10**8  # seconds since the start (about 3 years)
IOI_TOTAL_LIMIT = 2**53 // IOI_TIME_LIMIT  # hundredths of a point (~900,000 points)

_ID_RE = re.compile(r"[A-Za-z0-9_.\-]{1,100}")  # always fullmatch()


# ---------------------------------------------------------------------------- the rules


@dataclass(frozen=True, slots=True)
class Contest:
    """A contest's rules and clock.

    ``start`` and ``freeze_at`` are epoch seconds or aware datetimes. From ``freeze_at``
    the public board counts only attempts submitted before it; ``penalty`` is the minutes
    added per wrong attempt before the first accepted one (ICPC); ``ce_counts`` makes a
    compile error count as a wrong attempt; ``last_ac_tiebreak`` (ICPC) breaks a tie in
    solved and penalty by the earlier last accepted minute (the World Finals rule), and
    rows then carry ``last``. ``top_n`` rows are published.
    """

    id: str
    rules: RulesName = "icpc"
    start: float | datetime = 0.0
    freeze_at: float | datetime | None = None
    penalty: int = 20
    ce_counts: bool = False
    top_n: int = 50
    last_ac_tiebreak: bool = False

    def elapsed_ms(self, at: float | datetime) -> int:
        """Return whole milliseconds from the start to ``at`` (the floor, never rounded up).

        Computed on integer microseconds, so that 59.9996 s after the start is minute 0 and
        second 59, not minute 1.

        Raises:
            ValueError: ``at`` is before the start.
        """
        elapsed = (_micros(at) - _micros(self.start)) // 1000
        if elapsed < 0:
            raise ValueError(f"verdict time {at!r} is before the contest start")
        return elapsed

    @property
    def freeze_ms(self) -> int | None:
        """Return the freeze time in ms since the start, or None without a freeze."""
        if self.freeze_at is None:
            return None
        return max(0, (_micros(self.freeze_at) - _micros(self.start)) // 1000)


def _seconds(value: float | datetime) -> float:
    return value.timestamp() if isinstance(value, datetime) else float(value)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _micros(value: float | datetime) -> int:
    """Return epoch microseconds: exact for aware datetimes, the nearest for numbers."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return (value - _EPOCH) // _MICROSECOND
    # a float's last bits are noise below the microsecond: round there, floor later
    return round(_seconds(value) * 1_000_000)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One judged submission: ``at_ms`` since the start, ICPC ``verdict`` or IOI ``score``.

    ``score`` is in hundredths of a point (IOI); ``verdict`` is "" for IOI.
    """

    at_ms: int
    verdict: str = ""
    score: int = 0


@dataclass(frozen=True, slots=True)
class IcpcCell:
    """One problem of an ICPC row: ``wrong`` counted attempts, ``minute`` of the first AC."""

    wrong: int
    minute: int | None

    @property
    def solved(self) -> bool:
        """True when the problem has an accepted attempt."""
        return self.minute is not None


@dataclass(frozen=True, slots=True)
class IoiCell:
    """One problem of an IOI row: ``best`` score (hundredths), ``second`` it was first reached."""

    best: int
    second: int | None


def icpc_cell(attempts: Iterable[Attempt], *, ce_counts: bool = False) -> IcpcCell:
    """Summarise a problem's attempts by the ICPC rules.

    The first accepted attempt (earliest ``at_ms``) solves the problem; wrong attempts
    count only when strictly before it; attempts after it are ignored; a compile error
    counts only with ``ce_counts``. The result does not depend on the attempts' order.
    """
    items = list(attempts)
    accepted = [a.at_ms for a in items if a.verdict == ACCEPTED]
    first = min(accepted) if accepted else None
    wrong = sum(
        1
        for a in items
        if a.verdict != ACCEPTED
        and (ce_counts or a.verdict != COMPILE_ERROR)
        and (first is None or a.at_ms < first)
    )
    return IcpcCell(wrong=wrong, minute=None if first is None else first // 60_000)


def icpc_totals(cells: Iterable[IcpcCell], *, penalty: int = 20) -> tuple[int, int]:
    """Return (solved, penalty minutes): minute of each AC + ``penalty`` per wrong before it."""
    solved = total = 0
    for cell in cells:
        if cell.minute is not None:
            solved += 1
            total += cell.minute + penalty * cell.wrong
    return solved, total


def icpc_key(solved: int, penalty: int) -> int:
    """Return the ordering key: more solved first, then less penalty.

    Raises:
        ValueError: a total beyond the exact range (see ``ICPC_*_LIMIT``).
    """
    if not (0 <= penalty < ICPC_PENALTY_LIMIT and 0 <= solved < ICPC_SOLVED_LIMIT):
        raise ValueError(f"ICPC totals out of range: solved={solved} penalty={penalty}")
    return solved * ICPC_PENALTY_LIMIT - penalty


def icpc_tiebreak_key(solved: int, penalty: int, last_minute: int) -> int:
    """Return the ordering key with the last-accepted tie-break: more solved, then less
    penalty, then the earlier minute of the last accepted problem.

    Raises:
        ValueError: a total beyond the exact range (see ``ICPC_TB_*_LIMIT``).
    """
    if not (
        0 <= last_minute < ICPC_TB_MINUTE_LIMIT
        and 0 <= penalty < ICPC_TB_PENALTY_LIMIT
        and 0 <= solved < ICPC_TB_SOLVED_LIMIT
    ):
        raise ValueError(
            f"ICPC totals out of range: solved={solved} penalty={penalty} last={last_minute}"
        )
    return (solved * ICPC_TB_PENALTY_LIMIT - penalty) * ICPC_TB_MINUTE_LIMIT - last_minute


def ioi_cell(attempts: Iterable[Attempt]) -> IoiCell:
    """Summarise a problem's attempts by the IOI rules: best score, when first reached."""
    items = list(attempts)
    best = max((a.score for a in items), default=0)
    if best <= 0:
        return IoiCell(best=0, second=None)
    first = min(a.at_ms for a in items if a.score == best)
    return IoiCell(best=best, second=first // 1000)


def ioi_totals(cells: Iterable[IoiCell]) -> tuple[int, int]:
    """Return (total hundredths, second of the last improvement; 0 without any score)."""
    total = last = 0
    for cell in cells:
        if cell.second is not None:
            total += cell.best
            last = max(last, cell.second)
    return total, last


def ioi_key(total: int, last_second: int) -> int:
    """Return the ordering key: higher total first, then earlier last improvement.

    Raises:
        ValueError: a total beyond the exact range (see ``IOI_*_LIMIT``).
    """
    if not (0 <= last_second < IOI_TIME_LIMIT and 0 <= total < IOI_TOTAL_LIMIT):
        raise ValueError(f"IOI totals out of range: total={total} last={last_second}")
    return total * IOI_TIME_LIMIT - last_second


def competition_ranks(
    keys: Sequence[int], start: int = 0, first_rank: int | None = None
) -> list[int]:
    """Rank keys already sorted best first: equal keys share a rank (1, 2, 2, 4).

    For a window of a longer board, ``start`` is the 0-based position of ``keys[0]`` and
    ``first_rank`` its rank (smaller than ``start + 1`` when it ties rows above the window).
    """
    ranks: list[int] = []
    for i, key in enumerate(keys):
        if i == 0:
            ranks.append(start + 1 if first_rank is None else first_rank)
        else:
            ranks.append(ranks[-1] if key == keys[i - 1] else start + i + 1)
    return ranks


def rank_board(keys: Mapping[str, int]) -> list[tuple[int, str]]:
    """Return (rank, user) best first; ties share a rank and are listed by user id."""
    order = sorted(keys, key=lambda user: (-keys[user], user))
    return list(zip(competition_ranks([keys[u] for u in order]), order, strict=True))


def points(hundredths: int) -> int | float:
    """Return a score for display: an int when whole, else a float with two decimals."""
    return hundredths // 100 if hundredths % 100 == 0 else hundredths / 100


def build_row(
    contest: Contest,
    user: str,
    attempts: Mapping[str, Iterable[Attempt]],
    *,
    until_ms: int | None = None,
    name: str | None = None,
) -> tuple[int, dict[str, Any]]:
    """Compute a contestant's ordering key and display row (without rank).

    ``attempts`` maps problem to attempts; ``until_ms`` keeps only attempts before it
    (the frozen public view). ICPC rows: ``solved``, ``penalty`` and ``cells`` of
    ``[wrong, minute or null]``; IOI rows: ``score``, ``last`` (second of the last
    improvement) and ``cells`` of ``[score, second or null]``.
    """
    row: dict[str, Any] = {"user": user}
    if name:
        row["name"] = name
    visible = {
        problem: [a for a in items if until_ms is None or a.at_ms < until_ms]
        for problem, items in attempts.items()
    }
    if contest.rules == "icpc":
        icpc = {p: icpc_cell(items, ce_counts=contest.ce_counts) for p, items in visible.items()}
        solved, penalty = icpc_totals(icpc.values(), penalty=contest.penalty)
        row.update(
            solved=solved,
            penalty=penalty,
            cells={p: [c.wrong, c.minute] for p, c in icpc.items() if visible[p]},
        )
        if contest.last_ac_tiebreak:
            last = max((c.minute for c in icpc.values() if c.minute is not None), default=0)
            row["last"] = last
            return icpc_tiebreak_key(solved, penalty, last), row
        return icpc_key(solved, penalty), row
    ioi = {p: ioi_cell(items) for p, items in visible.items()}
    total, last = ioi_totals(ioi.values())
    row.update(
        score=points(total),
        last=last,
        cells={p: [points(c.best), c.second] for p, c in ioi.items() if visible[p]},
    )
    return ioi_key(total, last), row


def make_attempt(contest: Contest, result: str | float, at_ms: int) -> Attempt:
    """Turn a verdict (ICPC: "AC", "WA", "CE", ...) or a score (IOI) into an attempt.

    Raises:
        TypeError: a score for an ICPC contest or a verdict for an IOI one.
        ValueError: a negative score.
    """
    if contest.rules == "icpc":
        if not isinstance(result, str):
            raise TypeError("an ICPC contest takes a verdict string such as 'AC' or 'WA'")
        return Attempt(at_ms=at_ms, verdict=result.strip().upper())
    if isinstance(result, str | bool):
        raise TypeError("an IOI contest takes a numeric score")
    score = round(result * 100)
    if score < 0:
        raise ValueError(f"negative score {result!r}")
    return Attempt(at_ms=at_ms, score=score)


# ---------------------------------------------------------------------------- the store


PublishFn = Callable[..., object]


@dataclass(frozen=True, slots=True)
class Recorded:
    """What ``record_verdict`` did: ranks and versions are 0 for a duplicate (nothing changed).

    ``public_v`` / ``jury_v``: the board's version once this verdict is in it (the version it
    produced, or the current one when the row did not change), so that a log of verdicts
    with their versions gives the board at any version.
    """

    duplicate: bool
    public_changed: bool = False
    jury_changed: bool = False
    public_rank: int = 0
    jury_rank: int = 0
    public_v: int = 0
    jury_v: int = 0


class LeaderboardConflict(RuntimeError):
    """A contestant's row kept changing under us (more than ``max_retries`` writers)."""


def _default_publish(
    channel: str, type_: str, data: Any, state: bool = False, version: int | None = None
) -> None:
    from django_bridge import publish  # late: the bridge's publish needs Django settings

    publish(channel, type_, data, state=state, version=version)


def _publish_batch(items: Sequence[tuple[str, str, Any, bool, int | None]]) -> None:
    """Publish one verdict's events with the bridge in one send (one round trip).

    Inside a transaction, or with the outbox, each goes through ``publish`` as usual.
    """
    from django.db import transaction

    from django_bridge.conf import get_settings
    from django_bridge.publishing import make_envelope, publish, send

    if get_settings().outbox or transaction.get_connection().in_atomic_block:
        for channel, type_, data, state, version in items:
            publish(channel, type_, data, state=state, version=version)
        return
    send([make_envelope(c, t, d, s, version=v) for c, t, d, s, v in items])


def standings_channel(contest_id: str) -> str:
    """Return ``standings:<contest>``: every change of the public board as a small move."""
    return f"standings:{contest_id}"


class Leaderboard:
    """Standings of contests in Redis, published to ``leaderboard:``, ``jury:``, ``user:``.

    Thread-safe as far as the Redis client is; any number of processes may record
    verdicts for the same contest at once.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = scripts.DEFAULT_PREFIX,
        publish: PublishFn | None = None,
        max_retries: int = 50,
    ) -> None:
        """Use ``client`` (bytes responses) under key ``prefix``.

        ``publish(channel, type, data, state=False, version=None)`` defaults to the bridge's.
        """
        self._redis = client
        self._prefix = prefix
        self._publish = publish or _default_publish
        self._batched = publish is None
        self._max_retries = max_retries
        self._record = client.register_script(scripts.RECORD_SCRIPT)
        self._unfreeze = client.register_script(scripts.UNFREEZE_SCRIPT)
        self._top = client.register_script(scripts.TOP_SCRIPT)
        self._range = client.register_script(scripts.RANGE_SCRIPT)

    @classmethod
    def from_settings(cls) -> Leaderboard:
        """Build from ``REALTIME``: ``LEADERBOARD_REDIS_URL`` (else ``REDIS_URL``, else a
        redis ``BROKER_URL``) and ``LEADERBOARD_PREFIX`` (default ``lb:``).

        Raises:
            django.core.exceptions.ImproperlyConfigured: no Redis URL is configured.
        """
        from django.core.exceptions import ImproperlyConfigured

        from django_bridge.conf import raw_settings

        raw = raw_settings()
        url = redis_client.standings_url(raw)
        if not url:
            raise ImproperlyConfigured(
                "REALTIME['LEADERBOARD_REDIS_URL'] (or REDIS_URL / a redis BROKER_URL) "
                "is required for leaderboards"
            )
        prefix = str(raw.get("LEADERBOARD_PREFIX") or scripts.DEFAULT_PREFIX)
        return cls.from_url(url, prefix=prefix)

    @classmethod
    def from_url(
        cls, url: str, *, prefix: str = scripts.DEFAULT_PREFIX, publish: PublishFn | None = None
    ) -> Leaderboard:
        """Build on ``url``: one Redis, ``redis+sentinel://`` or ``redis+cluster://`` (every
        key of a contest shares one hash slot, so each script runs on one shard).

        Raises:
            RedisURLError: the URL is not valid (one line).
        """
        client = redis_client.connect(url, redis_client.STANDINGS_TIMEOUT)
        return cls(client, prefix=prefix, publish=publish)

    # -- writing

    def record_verdict(
        self,
        contest: Contest,
        user: str | int,
        problem: str,
        result: str | float,
        at: float | datetime,
        *,
        submission: str | int | None = None,
        name: str | None = None,
    ) -> Recorded:
        """Record one judged submission and publish what changed.

        ``result`` is the ICPC verdict ("AC", "WA", "CE", ...) or the IOI score. A
        ``submission`` id makes the call idempotent and lets a rejudge replace an earlier
        result; without one, the attempt is identified by its time and result. Call it
        after the verdict's transaction commits (the standings are not transactional).

        Raises:
            ValueError / TypeError: a bad id, time or result.
            LeaderboardConflict: the row was rewritten concurrently too many times.
            redis.RedisError: Redis is unreachable.
        """
        uid = _check_id("user", user)
        cid = _check_id("contest", contest.id)
        attempt = make_attempt(contest, result, contest.elapsed_ms(at))
        sid = str(submission) if submission is not None else _attempt_id(attempt)
        encoded = [attempt.at_ms, attempt.verdict, attempt.score]
        user_key = scripts.user_prefix(self._prefix, cid) + uid
        meta = scripts.meta_key(self._prefix, cid)
        for _ in range(self._max_retries):
            pipe = self._redis.pipeline(transaction=False)
            pipe.hgetall(user_key)
            pipe.hget(meta, "unfrozen")
            fields, unfrozen = pipe.execute()
            stored = {k.decode(): v for k, v in fields.items()}
            by_problem = {k[2:]: orjson.loads(v) for k, v in stored.items() if k.startswith("a:")}
            stored_name = stored["name"].decode() if "name" in stored else None
            cell: dict[str, list[Any]] = by_problem.setdefault(problem, {})
            if cell.get(sid) == encoded and name in (None, stored_name):
                return Recorded(duplicate=True)
            cell[sid] = encoded
            attempts = {
                p: [Attempt(int(a[0]), str(a[1]), int(a[2])) for a in items.values()]
                for p, items in by_problem.items()
            }
            label = name or stored_name
            jury_key, jury_row = build_row(contest, uid, attempts, name=label)
            freeze = None if unfrozen == b"1" else contest.freeze_ms
            pub_key, pub_row = build_row(contest, uid, attempts, until_ms=freeze, name=label)
            # first seen after the freeze: stay off the public board until the unfreeze
            hidden = freeze is not None and all(
                a.at_ms >= freeze for items in attempts.values() for a in items
            )
            reply = self._record(
                keys=[
                    user_key,
                    scripts.rank_key(self._prefix, cid, "jury"),
                    scripts.rank_key(self._prefix, cid, "public"),
                    meta,
                ],
                args=[
                    int(stored.get("ver", b"0")),
                    uid,
                    f"a:{problem}",
                    orjson.dumps(cell),
                    -jury_key,
                    _dumps(jury_row),
                    -pub_key,
                    b"" if hidden else _dumps(pub_row),
                    contest.top_n,
                    scripts.user_prefix(self._prefix, cid),
                    name or "",
                ],
            )
            if reply[0] == 0:
                continue  # another writer changed this contestant: re-read and redo
            return self._after_record(contest, uid, reply, (jury_key, jury_row), (pub_key, pub_row))
        raise LeaderboardConflict(f"contestant {uid} of contest {cid}: too many concurrent writes")

    def _after_record(
        self,
        contest: Contest,
        user: str,
        reply: list[Any],
        jury: tuple[int, dict[str, Any]],
        public: tuple[int, dict[str, Any]],
    ) -> Recorded:
        _, jury_changed, pub_changed, jury_rank, pub_rank, jury_v, pub_v, unfrozen = reply[:8]
        old_pos, old_score, new_pos, size = reply[8:12]
        rest = reply[12:]
        if unfrozen:
            public = jury  # the script published the jury row as the public one
        out: list[tuple[str, str, Any, bool, int | None]] = []
        if jury_changed:
            top, rest = _take_rows(rest)
            mine = {**jury[1], "rank": int(jury_rank)}
            data = _board(contest, "jury", int(jury_v), bool(unfrozen), top, [mine])
            out.append((f"jury:{contest.id}", "leaderboard.delta", data, True, int(jury_v)))
        if pub_changed:
            top, rest = _take_rows(rest)
            v = int(pub_v)
            mine = {**public[1], "rank": int(pub_rank)}
            data = _board(contest, "public", v, bool(unfrozen), top, [mine])
            out.append((f"leaderboard:{contest.id}", "leaderboard.delta", data, True, v))
            move = {
                "contest": contest.id,
                "v": v,
                "user": user,
                "from": None if old_score in (b"", "") else -int(float(old_score)),
                "to": public[0],
                "old": None if int(old_pos) < 0 else int(old_pos),
                "pos": int(new_pos),
                "rank": int(pub_rank),
                "n": int(size),
                "row": public[1],
            }
            out.append((standings_channel(contest.id), "leaderboard.move", move, False, None))
            rank = {"contest": contest.id, "v": v, **mine}
            out.append((f"user:{user}", "leaderboard.rank", rank, False, None))
        self._emit(out)
        return Recorded(
            duplicate=False,
            public_changed=bool(pub_changed),
            jury_changed=bool(jury_changed),
            public_rank=int(pub_rank),
            jury_rank=int(jury_rank),
            public_v=int(pub_v),
            jury_v=int(jury_v),
        )

    def _emit(self, items: list[tuple[str, str, Any, bool, int | None]]) -> None:
        if not items:
            return
        if self._batched:
            _publish_batch(items)
            return
        for channel, type_, data, state, version in items:
            if version is None:
                self._publish(channel, type_, data, state=state)
            else:
                self._publish(channel, type_, data, state=state, version=version)

    def unfreeze(self, contest: Contest, *, notify_users: bool = True) -> dict[str, Any]:
        """Make the public board the jury board for good and publish the final standings.

        Publishes ``leaderboard.snapshot`` (state) to ``leaderboard:<contest>``,
        ``leaderboard.reset`` to ``standings:<contest>`` and, with
        ``notify_users``, each contestant's final row to its ``user:`` channel (O(n)).
        Idempotent. Returns the published data.
        """
        cid = _check_id("contest", contest.id)
        reply = self._unfreeze(
            keys=[
                scripts.meta_key(self._prefix, cid),
                scripts.rank_key(self._prefix, cid, "jury"),
                scripts.rank_key(self._prefix, cid, "public"),
            ],
            args=[scripts.user_prefix(self._prefix, cid), contest.top_n],
        )
        top, _ = _take_rows(reply[1:])
        v = int(reply[0])
        data = _board(contest, "public", v, True, top, [])
        self._publish(f"leaderboard:{cid}", "leaderboard.snapshot", data, state=True, version=v)
        # every position may have changed: watchers of the moves re-read their rows
        self._publish(standings_channel(cid), "leaderboard.reset", {"contest": cid, "v": v})
        if notify_users:
            for row in self.standings(contest, view="public"):
                self._publish(
                    f"user:{row['user']}", "leaderboard.rank", {"contest": cid, "v": v, **row}
                )
        return data

    # -- reading

    def snapshot(self, contest: Contest, *, view: View = "public") -> dict[str, Any]:
        """Return the board as published (``top`` of ``contest.top_n`` rows), for a page."""
        cid = _check_id("contest", contest.id)
        reply = self._top(
            keys=[scripts.meta_key(self._prefix, cid), scripts.rank_key(self._prefix, cid, view)],
            args=[scripts.user_prefix(self._prefix, cid), view, contest.top_n],
        )
        top, _ = _take_rows(reply[2:])
        return _board(contest, view, int(reply[0]), reply[1] == b"1", top, [])

    def top(self, contest: Contest, n: int, *, view: View = "public") -> list[dict[str, Any]]:
        """Return the best ``n`` rows with ranks (ties share a rank, listed by user id)."""
        cid = _check_id("contest", contest.id)
        reply = self._top(
            keys=[scripts.meta_key(self._prefix, cid), scripts.rank_key(self._prefix, cid, view)],
            args=[scripts.user_prefix(self._prefix, cid), view, n],
        )
        return _take_rows(reply[2:])[0]

    def standings(self, contest: Contest, *, view: View = "public") -> list[dict[str, Any]]:
        """Return every row with its rank (O(n): for exports and unfreeze, not per verdict)."""
        return self.top(contest, 2**31 - 1, view=view)

    def around(
        self, contest: Contest, user: str | int, k: int = 2, *, view: View = "public"
    ) -> list[dict[str, Any]]:
        """Return the user's row with up to ``k`` rows on each side; [] without a row."""
        rows = self.window(contest, around=user, k=k, view=view)["rows"]
        return [{f: value for f, value in row.items() if f != "key"} for row in rows]

    def page(
        self, contest: Contest, number: int, *, size: int | None = None, view: View = "public"
    ) -> dict[str, Any]:
        """Return page ``number`` (1-based; ``size`` rows, default ``contest.top_n``).

        The result is a ``window`` (rows with ranks, ``v``, ``n``, ``start``).
        """
        size = size or contest.top_n
        if number < 1 or size < 1:
            raise ValueError("pages are numbered from 1 and hold at least one row")
        return self.window(contest, (number - 1) * size, size, view=view)

    def window(
        self,
        contest: Contest,
        start: int = 0,
        count: int = 50,
        *,
        around: str | int | None = None,
        k: int = 2,
        view: View = "public",
    ) -> dict[str, Any]:
        """Read consecutive rows of a board in one step, with the board version they show.

        Rows ``start`` .. ``start + count - 1`` (0-based positions), or with ``around`` the
        user's row and up to ``k`` rows on each side. Returns ``{"contest", "view", "v",
        "unfrozen", "n" (rows on the board), "start" (position of the first row; -1 when
        ``around`` has no row), "rows"}``, each row with its ordering ``key``: what a
        watcher of ``standings:<contest>`` starts from (moves with a higher ``v`` apply on
        top; see docs/LEADERBOARDS.md).
        """
        cid = _check_id("contest", contest.id)
        user = "" if around is None else _check_id("user", around)
        reply = self._range(
            keys=[scripts.meta_key(self._prefix, cid), scripts.rank_key(self._prefix, cid, view)],
            args=[
                scripts.user_prefix(self._prefix, cid),
                view,
                max(0, start),
                max(0, count),
                user,
                max(0, k),
            ],
        )
        first, first_rank = int(reply[3]), int(reply[4])
        rows = _take_rows(reply[5:], first, first_rank, keys=True)[0] if first >= 0 else []
        return {
            "contest": cid,
            "view": view,
            "v": int(reply[0]),
            "unfrozen": reply[1] == b"1",
            "n": int(reply[2]),
            "start": first,
            "rows": rows,
        }

    def row(
        self, contest: Contest, user: str | int, *, view: View = "public"
    ) -> dict[str, Any] | None:
        """Return the user's row with its rank, or None when it has none."""
        uid = _check_id("user", user)
        rows = self.around(contest, uid, 0, view=view)
        return rows[0] if rows else None

    def delete(self, contest: Contest | str) -> int:
        """Delete every key of a contest (SCAN + UNLINK, never FLUSH); return how many."""
        cid = _check_id("contest", contest.id if isinstance(contest, Contest) else contest)
        pattern = _glob_escape(scripts.contest_base(self._prefix, cid)) + ":*"
        deleted = 0
        batch: list[bytes] = []
        for key in self._redis.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 500:
                deleted += int(self._redis.unlink(*batch))
                batch = []
        if batch:
            deleted += int(self._redis.unlink(*batch))
        return deleted


def _take_rows(
    reply: list[Any], start: int = 0, first_rank: int | None = None, *, keys: bool = False
) -> tuple[list[dict[str, Any]], list[Any]]:
    """Decode ``n, member, score, row ...`` into rows with ranks (and ordering ``key``s)."""
    count = int(reply[0])
    flat = reply[1 : 1 + 3 * count]
    # scores are -key: exact integers below 2**53, so float() loses nothing
    ordering = [-int(float(flat[i + 1])) for i in range(0, len(flat), 3)]
    ranks = competition_ranks(ordering, start, first_rank)
    rows = []
    for rank, key, i in zip(ranks, ordering, range(0, len(flat), 3), strict=True):
        row = orjson.loads(flat[i + 2])
        row["rank"] = rank
        if keys:
            row["key"] = key
        rows.append(row)
    return rows, reply[1 + 3 * count :]


def _board(
    contest: Contest,
    view: View,
    version: int,
    unfrozen: bool,
    top: list[dict[str, Any]],
    changed: list[dict[str, Any]],
) -> dict[str, Any]:
    """Return the data of a board event (docs/LEADERBOARDS.md lists the fields)."""
    freeze = contest.freeze_at
    return {
        "contest": contest.id,
        "rules": contest.rules,
        "view": view,
        "v": version,
        "freeze_at": None if freeze is None else round(_seconds(freeze) * 1000),
        "unfrozen": unfrozen,
        "top": top,
        "changed": changed,
    }


def _dumps(row: dict[str, Any]) -> bytes:
    # sorted keys: the script compares stored and new rows byte for byte to detect a change
    return orjson.dumps(row, option=orjson.OPT_SORT_KEYS)


def _attempt_id(attempt: Attempt) -> str:
    return f"{attempt.at_ms}:{attempt.verdict}:{attempt.score}"


def _check_id(what: str, value: str | int) -> str:
    text = str(value)
    if not _ID_RE.fullmatch(text):
        raise ValueError(f"{what} id {text!r} must match {_ID_RE.pattern}")
    return text


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)
