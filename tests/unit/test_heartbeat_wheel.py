"""The heartbeat wheel: everyone pinged once per interval, a group per tick."""

from __future__ import annotations

import pytest

from realtime.heartbeat import HeartbeatWheel


class Member:
    def __init__(self, wheel: HeartbeatWheel | None = None) -> None:
        self.pings = 0
        self.wheel = wheel
        self.group = -1

    def heartbeat(self) -> None:
        self.pings += 1
        if self.wheel is not None:  # a dead peer removes itself while being pinged
            self.wheel.remove(self, self.group)


def test_each_member_is_pinged_once_per_interval_in_balanced_groups() -> None:
    wheel = HeartbeatWheel(interval=5, tick=1)
    members = [Member() for _ in range(23)]
    groups = [wheel.add(m) for m in members]
    assert sorted(groups.count(g) for g in range(5)) == [4, 4, 5, 5, 5]
    pinged_per_tick = []
    for _ in range(5):
        before = sum(m.pings for m in members)
        wheel.tick()
        pinged_per_tick.append(sum(m.pings for m in members) - before)
    assert [m.pings for m in members] == [1] * 23
    assert max(pinged_per_tick) <= 5  # never everyone at once
    for _ in range(10):
        wheel.tick()
    assert [m.pings for m in members] == [3] * 23


def test_removed_members_are_not_pinged_and_new_ones_fill_the_smallest_group() -> None:
    wheel = HeartbeatWheel(interval=2, tick=0.5)
    a, b, c = Member(), Member(), Member()
    ga, gb = wheel.add(a), wheel.add(b)
    assert ga != gb
    wheel.remove(a, ga)
    wheel.remove(a, ga)  # twice is harmless
    assert wheel.add(c) == ga  # the emptied group is the smallest again
    for _ in range(4):
        wheel.tick()
    assert (a.pings, b.pings, c.pings) == (0, 1, 1)
    assert len(wheel) == 2


def test_a_member_may_leave_while_its_group_is_pinged() -> None:
    wheel = HeartbeatWheel(interval=1, tick=1)
    members = [Member(wheel) for _ in range(5)]
    for m in members:
        m.group = wheel.add(m)
    wheel.tick()
    assert [m.pings for m in members] == [1] * 5 and len(wheel) == 0


def test_an_interval_shorter_than_the_tick_is_one_group() -> None:
    wheel = HeartbeatWheel(interval=0.2, tick=0.5)
    assert wheel.tick_seconds == 0.2
    member = Member()
    wheel.add(member)
    wheel.tick()
    wheel.tick()
    assert member.pings == 2


@pytest.mark.parametrize(("interval", "tick"), [(0, 0.5), (-1, 0.5), (5, 0)])
def test_non_positive_periods_are_refused(interval: float, tick: float) -> None:
    with pytest.raises(ValueError):
        HeartbeatWheel(interval=interval, tick=tick)
