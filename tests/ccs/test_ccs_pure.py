"""The feed parser, the state keeping and the scoring, without I/O (seeded feeds)."""

from __future__ import annotations

import random

import orjson
import pytest

from django_bridge.ccs import scoring
from django_bridge.ccs.feed import FeedError, parse_line
from django_bridge.ccs.state import ContestState
from django_bridge.ccs.times import duration_minutes, format_reltime, parse_reltime, parse_time
from tests.ccs import reference
from tests.ccs.feedgen import generate

DIALECTS = ["2020-03", "2023-06", "2026-01"]


def follow_lines(lines: list[bytes]) -> ContestState:
    state = ContestState()
    for line in lines:
        note = parse_line(line)
        if note is not None:
            state.apply(note)
    return state


def test_reltime_round_trip_and_forms() -> None:
    rng = random.Random(1)
    for _ in range(500):
        ms = rng.randrange(-(10**9), 10**9)
        assert parse_reltime(format_reltime(ms)) == ms
    assert parse_reltime("1:22:48.427") == 4_968_427
    assert parse_reltime("-0:00:05") == -5000
    assert parse_reltime("0:00:01.5") == 1500
    with pytest.raises(ValueError):
        parse_reltime("1:60:00")
    # penalty_time: integer minutes up to 2023-06, a RELTIME in the newer versions
    assert duration_minutes(20) == 20
    assert duration_minutes("0:20:00") == 20
    assert duration_minutes(None) == 20
    assert parse_time("2014-06-25T11:22:48.427+01").utcoffset().total_seconds() == 3600  # type: ignore[union-attr]
    assert parse_time("2014-06-25T10:22:48Z") == parse_time("2014-06-25T11:22:48+01:00")


def test_parse_both_dialects() -> None:
    old = parse_line(b'{"type":"teams","id":"ev7","op":"update","data":{"id":"11","name":"x"}}')
    assert old is not None
    assert (old.type, old.id, old.token, old.dialect) == ("teams", "11", "ev7", "2020-03")
    gone = parse_line(b'{"type":"teams","id":"ev8","op":"delete","data":{"id":"11"}}')
    assert gone is not None and gone.data is None and gone.id == "11"
    contest = parse_line(b'{"type":"contests","id":"ev1","op":"create","data":{"id":"wf"}}')
    assert contest is not None and (contest.type, contest.id) == ("contest", None)
    new = parse_line(b'{"type":"teams","id":"11","data":{"id":"11"},"token":"abc"}')
    assert new is not None and (new.type, new.id, new.token, new.dialect) == (
        "teams",
        "11",
        "abc",
        "2022-07",
    )
    collection = parse_line(b'{"type":"problems","id":null,"data":[{"id":"A"},{"id":"B"}]}')
    assert collection is not None and collection.id is None and len(collection.data) == 2
    assert parse_line(b"\n") is None and parse_line(b"  \r\n") is None  # keep-alives
    for bad in (b"{", b"[1]", b'{"type":"teams","id":null,"data":{"id":"1"}}'):
        with pytest.raises(FeedError):
            parse_line(bad)


def test_collection_replaces_and_deletes() -> None:
    state = ContestState()
    state.apply(parse_line(b'{"type":"problems","id":null,"data":[{"id":"A"},{"id":"B"}]}'))  # type: ignore[arg-type]
    changes = state.apply(
        parse_line(b'{"type":"problems","id":null,"data":[{"id":"B","x":1},{"id":"C"}]}')  # type: ignore[arg-type]
    )
    assert sorted((c.id, c.new is None) for c in changes) == [
        ("A", True),
        ("B", False),
        ("C", False),
    ]
    assert sorted(state.all("problems")) == ["B", "C"]
    assert state.apply(parse_line(b'{"type":"problems","id":"B","data":{"id":"B","x":1}}')) == []  # type: ignore[arg-type]
    assert state.apply(parse_line(b'{"type":"problems","id":"B","data":null}'))[0].new is None  # type: ignore[arg-type,index]


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_latest_state_whatever_the_interleaving(seed: int) -> None:
    """Each object's versions in order, interleaved at random and repeated: same state."""
    rng = random.Random(seed)
    versions = {
        f"o{i}": [{"id": f"o{i}", "v": v} for v in range(rng.randint(1, 4))] for i in range(60)
    }
    queues = {oid: list(vs) for oid, vs in versions.items()}
    lines = []
    while queues:
        oid = rng.choice(sorted(queues))
        data = queues[oid].pop(0)
        lines.append(orjson.dumps({"type": "teams", "id": oid, "data": data}))
        if rng.random() < 0.3:
            lines.append(lines[-1])  # a repeat right away
        if not queues[oid]:
            del queues[oid]
    state = follow_lines(lines)
    assert state.all("teams") == {oid: vs[-1] for oid, vs in versions.items()}


@pytest.mark.parametrize("dialect", DIALECTS)
def test_scoreboard_equals_reference(dialect: str) -> None:
    contest = generate(seed=18, submissions=1000)
    lines = contest.lines(dialect)
    state = follow_lines(lines)
    board = scoring.scoreboard(state, view="public")
    assert board["rows"] == reference.scoreboard_rows(lines, public=True)
    assert board["state"]["thawed"] is not None
    assert scoring.scoreboard(state, view="full")["rows"] == board["rows"]  # thawed
    assert sum(r["score"]["num_solved"] for r in board["rows"]) > 100


@pytest.mark.parametrize("seed", [7, 8])
def test_frozen_public_view_equals_reference(seed: int) -> None:
    """Cut the feed before the thaw: the public view hides submissions from the freeze on."""
    contest = generate(seed=seed, submissions=600)
    lines = contest.lines("2023-06")
    thaw = next(
        i for i, line in enumerate(lines) if b'"thawed":"' in line and b'"type":"state"' in line
    )
    cut = lines[:thaw]
    state = follow_lines(cut)
    public = scoring.scoreboard(state, view="public")["rows"]
    full = scoring.scoreboard(state, view="full")["rows"]
    assert public == reference.scoreboard_rows(cut, public=True)
    assert full == reference.scoreboard_rows(cut, public=False)
    assert public != full
    assert sum(c["num_pending"] for r in public for c in r["problems"]) > sum(
        c["num_pending"] for r in full for c in r["problems"]
    )


def test_awards_from_the_board() -> None:
    contest = generate(seed=21, submissions=400)
    state = follow_lines(contest.lines("2023-06"))
    board = scoring.scoreboard(state)
    awards = {a["id"]: a["team_ids"] for a in scoring.awards(board, contest.problems, (4, 4, 4))}
    leaders = [r["team_id"] for r in board["rows"] if r["rank"] == 1]
    assert awards["winner"] == leaders
    gold = [r["team_id"] for r in board["rows"] if r["rank"] <= 4]
    assert awards["gold-medal"] == gold
    for problem in contest.problems:
        times = [
            (c["time"], r["team_id"])
            for r in board["rows"]
            for c in r["problems"]
            if c["problem_id"] == problem and c["solved"]
        ]
        firsts = set(awards[f"first-to-solve-{problem}"])
        assert (firsts and min(times)[1] in firsts) or not times


def test_newer_version_writes_reltimes() -> None:
    contest = generate(seed=2, submissions=200)
    state = follow_lines(contest.lines("2026-01"))
    old = scoring.scoreboard(state)
    new = scoring.scoreboard(state, version="2026-01")
    for a, b in zip(old["rows"], new["rows"], strict=True):
        assert parse_reltime(b["score"]["total_time"]) == a["score"]["total_time"] * 60_000
        for ca, cb in zip(a["problems"], b["problems"], strict=True):
            if "time" in ca:
                assert parse_reltime(cb["time"]) == ca["time"] * 60_000
