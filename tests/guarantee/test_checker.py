"""The checker catches a hand-made history breaking each rule; correct histories pass."""

from __future__ import annotations

import copy
import json
import random
from typing import Any

from tests.guarantee.checker import check, format_violations


def ev(channel: str, epoch: str, offset: int, state: bool = False) -> dict[str, Any]:
    return {
        "channel": channel,
        "epoch": epoch,
        "offset": offset,
        "type": "t",
        "data": {"n": f"{channel}/{epoch}/{offset}"},
        "state": state,
    }


def seen(rec: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "event",
        "channel": rec["channel"],
        "offset": rec["offset"],
        "type": rec["type"],
        "data": rec["data"],
    }


def subscribed(
    channel: str,
    epoch: str,
    offset: int,
    recovered: bool | None = None,
    missed: list[Any] | None = None,
    state: int | None = None,
    asked: bool = True,
) -> dict[str, Any]:
    return {
        "kind": "subscribed",
        "channel": channel,
        "epoch": epoch,
        "offset": offset,
        "recovered": recovered,
        "missed": missed or [],
        "state": None if state is None else {"offset": state},
        "asked": asked,
    }


C = "contest:1"
P = "user:alice"
L = "leaderboard:1"


def base() -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """A correct run: subscribe, events, reconnect with recovery, store loss and resync."""
    log = [ev(C, "A", 1, state=True), ev(C, "A", 2), ev(C, "A", 3), ev(C, "A", 4, state=True)]
    log += [ev(C, "A", 5), ev(C, "A", 6), ev(C, "B", 1), ev(C, "B", 2, state=True)]
    log += [ev(P, "X", 1), ev(P, "X", 2)]
    history = [
        {"kind": "connect"},
        subscribed(C, "A", 1, None, state=1),
        seen(log[1]),
        seen(log[2]),
        {"kind": "disconnect", "code": None},
        {"kind": "connect"},
        subscribed(C, "A", 5, True, [seen(log[3]), seen(log[4])], state=4),
        seen(log[5]),
        subscribed(C, "B", 1, False, state=None, asked=False),
        seen(log[7]),
        subscribed(P, "X", 0, None),
        seen(log[8]),
        seen(log[9]),
    ]
    return log, {"c1": history}


def test_correct_history_passes() -> None:
    log, hist = base()
    assert check(log, hist, {"c1": {P}}) == []
    # JSON round trip: the format is what a live run dumps
    assert check(json.loads(json.dumps(log)), json.loads(json.dumps(hist)), {"c1": [P]}) == []


def rules(log: list[dict[str, Any]], hist: dict[str, Any], **kw: Any) -> set[int]:
    found = check(log, hist, {"c1": {P}}, **kw)
    assert found, "expected a violation"
    assert format_violations(found, hist)
    return {v.rule for v in found}


def test_rule1_offsets_go_back() -> None:
    log, hist = base()
    hist["c1"].insert(4, seen(log[1]))  # event 2 again
    assert 1 in rules(log, hist)


def test_rule1_second_subscribed_while_subscribed() -> None:
    log, hist = base()
    hist["c1"].insert(2, subscribed(C, "A", 0, None))
    assert 1 in rules(log, hist)


def test_rule2_jump_without_resync() -> None:
    log, hist = base()
    del hist["c1"][3]  # event 3 never arrives, 4..5 come by recovery: 2 -> 4 is a jump
    assert 2 in rules(log, hist)


def test_rule2_recovery_leaves_a_hole() -> None:
    log, hist = base()
    hist["c1"][6] = subscribed(C, "A", 5, True, [seen(log[4])], state=4)  # 4 is missing
    assert 2 in rules(log, hist)


def test_rule2_recovery_too_short() -> None:
    log, hist = base()
    hist["c1"][6] = subscribed(C, "A", 5, True, [seen(log[3])], state=4)  # stops at 4
    assert 2 in rules(log, hist)


def test_relabelled_history_is_caught() -> None:
    # issue 13 defect 7: since 1 gave missed [1, 2, 4] with recovered true
    log = [ev(C, "A", o) for o in range(1, 5)]
    hist = {
        "c1": [
            subscribed(C, "A", 1, None),
            {"kind": "disconnect", "code": None},
            dict(subscribed(C, "A", 4, True, [1, 2, 4]), since={"epoch": "A", "offset": 1}),
        ]
    }
    assert {1, 2} <= rules(log, hist)
    # without `since` a repeated 1 may be an event the client had not read: 3 is still lost
    del hist["c1"][2]["since"]
    assert rules(log, hist) == {2}


def test_since_behind_the_wire_may_repeat() -> None:
    # resubscribed with since 1 while event 2 was still unread: 2 comes again, in order
    log = [ev(C, "A", o) for o in range(1, 4)]
    hist = {
        "c1": [
            subscribed(C, "A", 0, None),
            seen(log[0]),
            seen(log[1]),
            {"kind": "unsubscribed", "channel": C, "reason": None},
            dict(
                subscribed(C, "A", 3, True, [seen(log[1]), seen(log[2])]),
                since={"epoch": "A", "offset": 1},
            ),
        ]
    }
    assert check(log, hist) == []


def test_rule3_event_with_other_data() -> None:
    log, hist = base()
    hist["c1"][3] = dict(hist["c1"][3], data={"n": "stale"})
    assert 3 in rules(log, hist)


def test_rule3_old_epoch_event_after_resync() -> None:
    # issue 13 defect 1: after the resync into B, the old epoch's event 2 arrives
    log, hist = base()
    hist["c1"].insert(9, dict(seen(log[1])))
    assert 3 in rules(log, hist)


def test_rule3_event_outside_subscription() -> None:
    log, hist = base()
    hist["c1"].insert(5, seen(log[3]))  # after the disconnect, before the new subscribed
    assert 3 in rules(log, hist)


def test_rule3_event_not_logged() -> None:
    log, hist = base()
    hist["c1"].append({"kind": "event", "channel": C, "offset": 3, "type": "t", "data": 1})
    assert 3 in rules(log, hist)


def test_rule4_private_event_without_right() -> None:
    log, hist = base()
    assert 4 in {v.rule for v in check(log, hist, {"c1": set()})}
    # a right that ends before the last event (index ranges)
    assert {v.rule for v in check(log, hist, {"c1": {P: [[0, 11]]}})} == {4}
    assert check(log, hist, {"c1": {P: [[0, None]]}}) == []
    assert check(log, hist, {"c1": lambda channel, index: index < 99}) == []


def test_rule5_resync_with_stale_state() -> None:
    log, hist = base()
    hist["c1"][8] = subscribed(C, "B", 2, False, state=None, asked=False)  # B/2 is a state
    hist["c1"].pop(9)
    assert 5 in rules(log, hist)
    log, hist = base()
    hist["c1"][1] = subscribed(C, "A", 1, None, state=None)
    assert 5 in rules(log, hist)


def test_rule6_live_subscription_behind_at_the_end() -> None:
    log, hist = base()
    hist["c1"].pop()  # user:alice stops at 1
    assert rules(log, hist) == {6}
    assert check(log, hist, {"c1": {P}}, settled=False) == []


def test_rule6_ended_subscription_is_not_required() -> None:
    log, hist = base()
    hist["c1"].pop()
    hist["c1"].append({"kind": "unsubscribed", "channel": P, "reason": None})
    assert check(log, hist, {"c1": {P}}) == []


def test_coalesced_channel_may_skip_but_not_go_back() -> None:
    log = [ev(L, "A", o) for o in range(1, 6)]
    ok = [subscribed(L, "A", 1, None), seen(log[2]), seen(log[4])]
    assert check(log, {"c": ok}) == []
    bad = [subscribed(L, "A", 1, None), seen(log[4]), seen(log[2])]
    assert 1 in {v.rule for v in check(log, {"c": bad})}


def test_rollback_generation_reuses_offsets() -> None:
    # the store lost 3..4 (rollback to 2) and numbered new events 3..4 again under epoch A
    log = [ev(C, "A", o) for o in range(1, 5)]
    log.append({"channel": C, "epoch": "A", "rollback_to": 2})
    new3 = dict(ev(C, "A", 3), data={"n": "second 3"})
    new4 = dict(ev(C, "A", 4), data={"n": "second 4"})
    log += [new3, new4]
    good = [
        subscribed(C, "A", 0, None),
        *(seen(r) for r in log[:4]),
        subscribed(C, "A", 2, False, asked=False),
        seen(new3),
        seen(new4),
    ]
    assert check(log, {"c": good}) == []
    # silence: the node dropped the reused offsets as already delivered
    silent = [subscribed(C, "A", 0, None), *(seen(r) for r in log[:4])]
    assert 6 in {v.rule for v in check(log, {"c": silent})}
    # without a marker the reuse of offset 3 is the rollback
    unmarked = [r for r in log if "rollback_to" not in r]
    assert check(unmarked, {"c": good}) == []


def test_random_truncations_of_a_correct_history_never_false_alarm() -> None:
    # a prefix of a correct history is correct when not settled
    rng = random.Random(13)
    log, hist = base()
    for _ in range(50):
        cut = rng.randrange(len(hist["c1"]) + 1)
        part = {"c1": copy.deepcopy(hist["c1"][:cut])}
        assert check(log, part, {"c1": {P}}, settled=False) == []


def test_every_single_drop_is_caught_unless_a_resync_covers_it() -> None:
    log, hist = base()
    events = [i for i, r in enumerate(hist["c1"]) if r["kind"] == "event"]
    covered = 7  # A/6, followed by the resync into epoch B: the client was told to start over
    assert hist["c1"][covered + 1]["recovered"] is False
    for i in events:
        if i == covered:
            continue
        broken = {"c1": hist["c1"][:i] + hist["c1"][i + 1 :]}
        assert check(log, broken, {"c1": {P}}), f"dropping #{i} went unnoticed"


def test_renewed_epoch_after_a_noticed_rollback() -> None:
    # rollback to 2, the node asks for a new epoch B at 2, then 3 and 4 are numbered in B
    log = [ev(C, "A", o, state=o == 1) for o in range(1, 5)]
    log.append({"channel": C, "epoch": "A", "rollback_to": 2})
    log.append({"channel": C, "epoch": "B", "renewed_from": "A", "offset": 2})
    log += [ev(C, "B", 3), ev(C, "B", 4)]
    good = [
        subscribed(C, "A", 0, None),
        *(seen(r) for r in log[:4]),
        subscribed(C, "B", 2, False, state=1, asked=False),
        seen(log[6]),
        seen(log[7]),
    ]
    assert check(log, {"c": good}) == []
    stale_state = [*good[:5], subscribed(C, "B", 2, False, state=None, asked=False), *good[6:]]
    assert {v.rule for v in check(log, {"c": stale_state})} == {5}


def test_empty_epoch_continues_into_the_first_real_one() -> None:
    log = [ev(C, "A", 1), ev(C, "A", 2)]
    ok = [subscribed(C, "0", 0, None), seen(log[0]), seen(log[1])]
    assert check(log, {"c": ok}) == []
    # but only from offset 0 of the empty epoch, and only with the logged data
    wrong = [subscribed(C, "0", 0, None), dict(seen(log[0]), data="other"), seen(log[1])]
    assert 3 in {v.rule for v in check(log, {"c": wrong})}
