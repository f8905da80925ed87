"""The leaderboard rules (ICPC, IOI, ranking) against hand-worked examples."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta

import pytest

from django_bridge.leaderboard import (
    Attempt,
    Contest,
    IcpcCell,
    build_row,
    competition_ranks,
    icpc_cell,
    icpc_key,
    icpc_totals,
    ioi_cell,
    ioi_key,
    ioi_totals,
    make_attempt,
    rank_board,
)

MIN = 60_000  # ms


def wa(minute: float) -> Attempt:
    return Attempt(at_ms=round(minute * MIN), verdict="WA")


def ac(minute: float) -> Attempt:
    return Attempt(at_ms=round(minute * MIN), verdict="AC")


def ce(minute: float) -> Attempt:
    return Attempt(at_ms=round(minute * MIN), verdict="CE")


def scored(second: int, points: float) -> Attempt:
    return Attempt(at_ms=second * 1000, score=round(points * 100))


def test_icpc_cell_counts_wrong_attempts_before_first_accepted() -> None:
    """Two WAs, then AC at minute 30.5, then a WA: 2 wrong, solved at minute 30."""
    cell = icpc_cell([wa(10), wa(20), ac(30.5), wa(40)])
    assert cell == IcpcCell(wrong=2, minute=30)


def test_icpc_cell_uses_earliest_accepted_whatever_the_order() -> None:
    """Every order of the same attempts gives the same cell (earliest AC wins)."""
    attempts = [wa(5), ac(50), wa(30), ac(20), wa(25)]
    cells = {icpc_cell(order) for order in itertools.permutations(attempts)}
    assert cells == {IcpcCell(wrong=1, minute=20)}


def test_icpc_compile_error_counts_only_when_configured() -> None:
    """CE before the AC is free by default and costs a wrong attempt with ce_counts."""
    attempts = [ce(1), wa(2), ce(3), ac(4)]
    assert icpc_cell(attempts) == IcpcCell(wrong=1, minute=4)
    assert icpc_cell(attempts, ce_counts=True) == IcpcCell(wrong=3, minute=4)


def test_icpc_penalty_sums_solve_minutes_and_twenty_per_wrong() -> None:
    """Solved at 30 (2 wrong) and 95 (0 wrong), unsolved with 4 wrong: 2 solved, 165."""
    cells = [IcpcCell(2, 30), IcpcCell(0, 95), IcpcCell(4, None)]
    assert icpc_totals(cells) == (2, 30 + 40 + 95)
    assert icpc_totals(cells, penalty=10) == (2, 30 + 20 + 95)


def test_icpc_ranking_orders_by_solved_then_penalty_with_shared_ranks() -> None:
    """3/150 first; two 3/200 tie at rank 2; 2/10 is 4th; 0/0 is 5th."""
    keys = {
        "ann": icpc_key(3, 200),
        "bob": icpc_key(3, 200),
        "cid": icpc_key(3, 150),
        "dan": icpc_key(2, 10),
        "eve": icpc_key(0, 0),
    }
    assert rank_board(keys) == [(1, "cid"), (2, "ann"), (2, "bob"), (4, "dan"), (5, "eve")]


def test_icpc_full_rows_rank_like_a_hand_worked_board() -> None:
    """Three contestants from raw attempts: penalties 85, 85 and 40 (one fewer solved)."""
    contest = Contest(id="1")
    boards = {
        # A: minute 20 after 1 WA (40) + minute 45 (45) = 2 solved, 85
        "a": {"A": [wa(10), ac(20)], "B": [ac(45)]},
        # B: minute 25 (25) + minute 20 after 2 WA and a free CE (60) = 2 solved, 85
        "b": {"A": [ac(25)], "B": [wa(5), ce(6), wa(7), ac(20), wa(21)]},
        # C: minute 40 only, many WA elsewhere = 1 solved, 40
        "c": {"A": [ac(40)], "B": [wa(1), wa(2), wa(3)]},
    }
    rows = {user: build_row(contest, user, attempts) for user, attempts in boards.items()}
    assert rows["a"][1]["penalty"] == rows["b"][1]["penalty"] == 85
    assert rows["b"][1]["cells"] == {"A": [0, 25], "B": [2, 20]}
    assert rank_board({u: key for u, (key, _) in rows.items()}) == [(1, "a"), (1, "b"), (3, "c")]


def test_ioi_cell_keeps_best_score_and_when_it_was_first_reached() -> None:
    """Scores 30, 70, 50, 70: best 70, first reached at second 200."""
    cell = ioi_cell([scored(100, 30), scored(200, 70), scored(300, 50), scored(400, 70)])
    assert (cell.best, cell.second) == (7000, 200)


def test_ioi_ranking_breaks_total_ties_by_last_improvement() -> None:
    """Equal totals: the earlier last improvement wins; equal times share a rank."""
    rows = {
        "x": [ioi_cell([scored(100, 100)]), ioi_cell([scored(900, 50)])],  # 150, last 900
        "y": [ioi_cell([scored(800, 100)]), ioi_cell([scored(300, 50)])],  # 150, last 800
        "z": [ioi_cell([scored(800, 150)])],  # 150, last 800: ties y
        "w": [ioi_cell([scored(5000, 100)]), ioi_cell([scored(5000, 100)])],  # 200
        "v": [ioi_cell([scored(10, 0)])],  # 0
    }
    keys = {user: ioi_key(*ioi_totals(cells)) for user, cells in rows.items()}
    assert rank_board(keys) == [(1, "w"), (2, "y"), (2, "z"), (4, "x"), (5, "v")]


def test_ioi_zero_score_has_no_improvement_time() -> None:
    """A contestant with only zero scores has total 0 and last improvement 0."""
    assert ioi_totals([ioi_cell([scored(500, 0)])]) == (0, 0)


def test_competition_ranks_share_and_skip() -> None:
    """Keys 9, 7, 7, 5, 5, 5, 1 rank 1, 2, 2, 4, 4, 4, 7; windows keep board ranks."""
    assert competition_ranks([9, 7, 7, 5, 5, 5, 1]) == [1, 2, 2, 4, 4, 4, 7]
    assert competition_ranks([5, 5, 1], start=4, first_rank=4) == [4, 4, 7]


def test_keys_stay_exact_as_redis_doubles() -> None:
    """Keys at the range limits differ by one penalty minute or second even as floats."""
    assert float(icpc_key(999_999, 1)) != float(icpc_key(999_999, 2))
    assert float(icpc_key(999_999, 1)) > float(icpc_key(999_998, 0))
    big = 89_000_000
    assert float(ioi_key(big, 99_999_998)) != float(ioi_key(big, 99_999_999))
    assert float(ioi_key(big, 99_999_999)) > float(ioi_key(big - 1, 0))


def test_keys_reject_totals_beyond_the_exact_range() -> None:
    """Totals that could lose precision in a double are refused."""
    with pytest.raises(ValueError):
        icpc_key(1, 10**9)
    with pytest.raises(ValueError):
        ioi_key(10**8, 0)


def test_frozen_view_counts_only_attempts_before_the_freeze() -> None:
    """With the freeze at minute 60, an AC at minute 70 leaves only the WA visible."""
    contest = Contest(id="1", start=0, freeze_at=3600)
    attempts = {"A": [wa(50), ac(70)]}
    _, public = build_row(contest, "u", attempts, until_ms=contest.freeze_ms)
    _, jury = build_row(contest, "u", attempts)
    assert (public["solved"], public["cells"]) == (0, {"A": [1, None]})
    assert (jury["solved"], jury["penalty"]) == (1, 90)


def test_make_attempt_converts_scores_to_hundredths_and_checks_types() -> None:
    """IOI 37.5 becomes 3750 hundredths; ICPC verdicts are upper-cased; wrong types fail."""
    ioi = Contest(id="1", rules="ioi")
    assert make_attempt(ioi, 37.5, 10).score == 3750
    assert make_attempt(Contest(id="1"), "ac", 10).verdict == "AC"
    with pytest.raises(TypeError):
        make_attempt(ioi, "AC", 10)
    with pytest.raises(TypeError):
        make_attempt(Contest(id="1"), 100, 10)


def test_contest_clock_accepts_datetimes_and_rejects_times_before_start() -> None:
    """Elapsed time is measured from the start; a verdict before the start is refused."""
    start = datetime(2030, 1, 1, 10, 0, tzinfo=UTC)
    contest = Contest(id="1", start=start, freeze_at=start + timedelta(hours=4))
    assert contest.elapsed_ms(start + timedelta(minutes=3, seconds=1)) == 181_000
    assert contest.freeze_ms == 4 * 3600 * 1000
    with pytest.raises(ValueError):
        contest.elapsed_ms(start - timedelta(seconds=1))


@pytest.mark.parametrize("seed", range(5))
def test_elapsed_time_is_floored_never_rounded_up(seed: int) -> None:
    """ICPC minutes and IOI seconds are floors of the time since the start (59.9996 s is 0:59)."""
    rng = random.Random(seed)
    for _ in range(2000):
        start_us = rng.randrange(1_700_000_000_000_000, 1_800_000_000_000_000)
        elapsed_us = rng.choice(
            [rng.randrange(0, 10**10), 60_000_000 * rng.randrange(1, 300) - 400]
        )
        start = datetime.fromtimestamp(0, UTC) + timedelta(microseconds=start_us)
        at = start + timedelta(microseconds=elapsed_us)
        contest = Contest(id="f", start=start)
        assert contest.elapsed_ms(at) == elapsed_us // 1000
        row = build_row(contest, "u", {"A": [make_attempt(contest, "AC", contest.elapsed_ms(at))]})[
            1
        ]
        assert row["cells"]["A"][1] == elapsed_us // 60_000_000
        ioi = Contest(id="f", rules="ioi", start=start)
        cell = build_row(ioi, "u", {"A": [make_attempt(ioi, 5, ioi.elapsed_ms(at))]})[1]
        assert cell["cells"]["A"][1] == elapsed_us // 1_000_000


def test_epoch_float_times_floor_at_the_minute() -> None:
    """With epoch floats too, a verdict 0.4 ms before a minute is in the earlier minute."""
    contest = Contest(id="f", start=1_795_000_000.0)
    assert contest.elapsed_ms(1_795_000_059.9996) == 59_999
    assert contest.elapsed_ms(1_795_000_060.0) == 60_000


def test_icpc_last_accepted_tiebreak_is_an_option() -> None:
    """With ``last_ac_tiebreak`` equal solved and penalty rank by the earlier last AC."""
    boards = {
        # both 2 solved, 85 penalty; a's last AC at minute 45, b's at minute 25
        "a": {"A": [wa(10), ac(20)], "B": [ac(45)]},
        "b": {"A": [ac(25)], "B": [wa(5), ce(6), wa(7), ac(20), wa(21)]},
        "c": {"A": [ac(40)]},
    }
    plain, tiebreak = Contest(id="1"), Contest(id="1", last_ac_tiebreak=True)
    keys = {u: build_row(plain, u, a)[0] for u, a in boards.items()}
    assert rank_board(keys) == [(1, "a"), (1, "b"), (3, "c")]
    rows = {u: build_row(tiebreak, u, a) for u, a in boards.items()}
    assert rank_board({u: key for u, (key, _) in rows.items()}) == [(1, "b"), (2, "a"), (3, "c")]
    assert (rows["a"][1]["last"], rows["b"][1]["last"], rows["c"][1]["last"]) == (45, 25, 40)
    # the three-part key stays exact and ordered at the edges of its range
    from django_bridge.leaderboard import ICPC_TB_SOLVED_LIMIT, icpc_tiebreak_key

    top = icpc_tiebreak_key(ICPC_TB_SOLVED_LIMIT - 1, 0, 0)
    assert top < 2**53 and float(top) == top
    assert icpc_tiebreak_key(3, 100, 50) > icpc_tiebreak_key(3, 100, 51)
    assert icpc_tiebreak_key(3, 100, 99_999) > icpc_tiebreak_key(3, 101, 0)
    assert icpc_tiebreak_key(4, 999_999, 99_999) > icpc_tiebreak_key(3, 0, 0)
    with pytest.raises(ValueError):
        icpc_tiebreak_key(1, 0, 100_000)
