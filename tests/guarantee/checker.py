"""Check recorded client histories against the delivery guarantee (issue 13).

Pure functions over JSON-like data, no I/O: a simulation passes its records directly, a live
run can dump them to a file and check them later. The format (see /work/briefs/checker.md):

``published``: the store's log, in the order the store accepted the events, one record per
event: ``{"channel", "epoch", "offset", "type", "data", "state"}``. A store that went back to
an older snapshot under the same epoch is written either as a marker
``{"channel", "epoch", "rollback_to": n}`` or simply by the reuse of an offset: either starts a
new *generation* of that epoch (offsets above the rollback point are lost). A store loss is a
new epoch and needs no marker. A store renumbered into a new epoch at the same offset (what
the node asks for when it notices a rollback) is ``{"channel", "epoch": new, "renewed_from":
old, "offset": n}``.

``histories``: per client id, what it saw, in arrival order, all channels mixed:

- ``{"kind": "connect"}``, ``{"kind": "disconnect", "code": int | None}``;
- ``{"kind": "subscribed", "channel", "epoch", "offset", "recovered": bool | None, "missed",
  "state", "asked"}``: ``recovered`` None is a subscribe without ``since`` (the reply has no
  ``missed``); ``missed`` lists offsets, or ``{"offset", "type", "data"}`` records (then their
  data is checked too); ``state`` is None or ``{"offset"}`` (optionally ``"type"``, ``"data"``);
  ``asked`` False marks the unasked resync notice; optional ``"since": {"epoch", "offset"}``,
  what the subscribe command carried (then ``missed`` must start right after it; without it,
  ``missed`` may repeat offsets the client had not read yet when it resubscribed);
- ``{"kind": "event", "channel", "offset", "type", "data"}``;
- ``{"kind": "unsubscribed", "channel", "reason"}``, ``{"kind": "error", "channel", "code"}``.

Extra keys (a time stamp, say) are allowed and ignored.

``rights``: per client id, which private channels it may read: a collection of channel names,
a ``{channel: [[first_index, last_index_or_None], ...]}`` mapping of history index ranges, or
a callable ``(channel, index) -> bool``. None: rule 4 is not checked.

Rules, per client and channel (a *run* starts at a ``subscribed`` with ``recovered`` false or
None and goes on through ``recovered: true`` replies after reconnects or resubscribes):

1. within a run, delivered offsets (events and ``missed``) strictly increase, and a second
   asked ``subscribed`` never arrives while the channel is subscribed;
2. a jump (an offset other than last + 1) only happens across a new run; on coalesced channels
   events may skip offsets, but ``missed`` lists may not;
3. every delivered event is in the log with the same type and data, and only while
   subscribed: with rules 1 and 2 this makes every logged event of a run's window delivered
   exactly once;
4. no private channel's event, state or ``subscribed`` reaches a client without the right;
5. a ``subscribed`` that starts a run carries the newest state event at or below its offset;
6. at the end (``settled``), every live subscription is at the channel's last logged
   epoch and offset.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

RULES = {
    1: "offsets strictly increase",
    2: "no uncovered jump",
    3: "logged events, exactly once, only while subscribed",
    4: "no private event without the right",
    5: "a resync carries the latest state",
    6: "quiescence: every live subscription is up to date",
}

Record = Mapping[str, Any]
Rights = Collection[str] | Mapping[str, Sequence[Sequence[int | None]]] | Callable[[str, int], bool]
PRIVATE_NAMESPACES = ("user", "submission", "jury")
COALESCED_NAMESPACES = ("leaderboard", "jury")


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken rule: who, where (index into the client's history; its length at the end)."""

    client: str
    channel: str | None
    rule: int
    detail: str
    index: int


def in_namespaces(names: Iterable[str]) -> Callable[[str], bool]:
    """Return a predicate: is a channel in one of these namespaces."""
    wanted = frozenset(names)
    return lambda channel: channel.split(":", 1)[0] in wanted


@dataclass(slots=True)
class _Log:
    """The published log indexed for the checks."""

    versions: dict[tuple[str, str, int], list[Record]] = field(default_factory=dict)
    # per (channel, epoch): every generation, each a map offset -> record
    generations: dict[tuple[str, str], list[dict[int, Record]]] = field(default_factory=dict)
    final: dict[str, tuple[str, int]] = field(default_factory=dict)
    final_record: dict[str, Record | None] = field(default_factory=dict)
    epochs: dict[tuple[str, int], list[str]] = field(default_factory=dict)

    @classmethod
    def build(cls, published: Iterable[Record]) -> _Log:
        log = cls()
        for rec in published:
            channel, epoch = rec["channel"], rec["epoch"]
            gens = log.generations.setdefault((channel, epoch), [{}])
            current = gens[-1]
            if "renewed_from" in rec:
                # the same store, renumbered into a new epoch (after a rollback was noticed)
                point = int(rec["offset"])
                old = log.generations.get((channel, rec["renewed_from"]), [{}])[-1]
                gens[-1] = {o: r for o, r in old.items() if o <= point}
                log.final[channel] = (epoch, point)
                log.final_record[channel] = gens[-1].get(point)
                continue
            if "rollback_to" in rec:
                point = int(rec["rollback_to"])
                gens.append({o: r for o, r in current.items() if o <= point})
                if log.final.get(channel, (None, 0))[0] == epoch:
                    log.final[channel] = (epoch, point)
                    log.final_record[channel] = current.get(point)
                continue
            offset = int(rec["offset"])
            if current and offset <= max(current):
                # an offset used again: the store went back without a marker
                current = {o: r for o, r in current.items() if o < offset}
                gens.append(current)
            current[offset] = rec
            log.versions.setdefault((channel, epoch, offset), []).append(rec)
            log.epochs.setdefault((channel, offset), []).append(epoch)
            log.final[channel] = (epoch, offset)
            log.final_record[channel] = rec
        return log

    def matches(self, channel: str, epoch: str | None, offset: int, event: Record) -> bool | None:
        """True/False: the event equals a logged version; None: nothing logged there."""
        if epoch is None:
            return None
        versions = self.versions.get((channel, epoch, offset))
        if not versions:
            return None
        return any(
            v.get("type") == event.get("type") and v.get("data") == event.get("data")
            for v in versions
        )

    def states_at(self, channel: str, epoch: str, offset: int) -> list[Record | None] | None:
        """The newest state event at or below ``offset`` in every generation that had it.

        None when no generation of that epoch reached ``offset`` (nothing to compare with).
        """
        gens = self.generations.get((channel, epoch))
        if not gens:
            return None
        found: list[Record | None] = []
        for gen in gens:
            if offset and offset not in gen:
                continue
            states = [o for o, r in gen.items() if o <= offset and r.get("state")]
            found.append(gen[max(states)] if states else None)
        return found or None


@dataclass(slots=True)
class _Chan:
    live: bool = False
    epoch: str | None = None
    last: int | None = None
    seen: Record | None = None  # the event that set ``last``; None: a `subscribed` did


class _Checker:
    def __init__(
        self,
        log: _Log,
        rights: Mapping[str, Rights] | None,
        private: Callable[[str], bool],
        coalesced: Callable[[str], bool],
        allow_unlogged: bool,
        empty_epoch: str | None,
    ) -> None:
        self.empty_epoch = empty_epoch
        self.log = log
        self.rights = rights
        self.private = private
        self.coalesced = coalesced
        self.allow_unlogged = allow_unlogged
        self.out: list[Violation] = []
        self.client = ""

    def fail(self, channel: str | None, rule: int, index: int, detail: str) -> None:
        self.out.append(Violation(self.client, channel, rule, detail, index))

    def allowed(self, channel: str, index: int) -> bool:
        if self.rights is None or not self.private(channel):
            return True
        right = self.rights.get(self.client)
        if right is None:
            return False
        if callable(right):
            return bool(right(channel, index))
        if isinstance(right, Mapping):
            return any(
                lo <= index and (hi is None or index <= hi) for lo, hi in right.get(channel, ())
            )
        return channel in right

    def run(self, client: str, history: Sequence[Record], settled: bool) -> None:
        self.client = client
        chans: dict[str, _Chan] = {}
        for index, rec in enumerate(history):
            kind = rec.get("kind")
            if kind == "disconnect":
                for ch in chans.values():
                    ch.live = False
                continue
            channel = rec.get("channel")
            if not isinstance(channel, str):
                continue
            ch = chans.setdefault(channel, _Chan())
            if kind == "subscribed":
                self.subscribed(channel, ch, rec, index)
            elif kind == "event":
                self.event(channel, ch, rec, index)
            elif kind == "unsubscribed":
                ch.live = False
        if settled:
            for channel, ch in sorted(chans.items()):
                final = self.log.final.get(channel)
                if not ch.live or final is None:
                    continue
                if (ch.epoch, ch.last) != final:
                    self.fail(
                        channel,
                        6,
                        len(history),
                        f"live subscription ends at {ch.epoch}/{ch.last}, "
                        f"the store at {final[0]}/{final[1]}",
                    )
                elif ch.seen is not None and not _same(ch.seen, self.log.final_record[channel]):
                    self.fail(
                        channel,
                        6,
                        len(history),
                        f"live subscription ends on an older version of {final[0]}/{final[1]} "
                        "(a rollback reused the offset)",
                    )

    def subscribed(self, channel: str, ch: _Chan, rec: Record, index: int) -> None:
        asked = rec.get("asked", True) is not False
        if not asked and not ch.live:
            return  # a resync notice racing an unsubscribe: the client ignores it
        if asked and ch.live:
            self.fail(channel, 1, index, "a second `subscribed` while already subscribed")
        if not self.allowed(channel, index):
            self.fail(channel, 4, index, "`subscribed` to a private channel without the right")
        epoch, offset = str(rec["epoch"]), int(rec["offset"])
        ch.live = True
        if rec.get("recovered") is True:
            self.recovered(channel, ch, rec, index, epoch, offset)
            return
        self.check_state(channel, rec, index, epoch, offset)
        ch.epoch, ch.last, ch.seen = epoch, offset, None

    def recovered(
        self, channel: str, ch: _Chan, rec: Record, index: int, epoch: str, offset: int
    ) -> None:
        missed = [m if isinstance(m, Mapping) else {"offset": m} for m in rec.get("missed") or ()]
        since = rec.get("since")
        floor = int(since["offset"]) if isinstance(since, Mapping) else None
        if isinstance(since, Mapping) and str(since.get("epoch")) != epoch and floor != 0:
            self.fail(channel, 2, index, f"recovered:true from since {since} into {epoch}")
            floor = None
        if ch.epoch is None or ch.last is None:
            last = None  # a position from outside this history
        elif ch.epoch != epoch:
            # from offset 0 (nothing delivered yet) any epoch continues without a loss
            if ch.last != 0:
                self.fail(channel, 2, index, f"recovered:true from epoch {ch.epoch} into {epoch}")
            last = 0
        else:
            last = ch.last
        prev = floor
        covered: set[int] = set()
        for item in missed:
            got = int(item["offset"])
            if prev is not None and got <= prev:
                what = "since" if prev == floor and not covered else "the previous entry"
                self.fail(channel, 1, index, f"missed offset {got} at or below {what} ({prev})")
                continue
            if got > offset:
                self.fail(channel, 1, index, f"missed offset {got} past the reply's {offset}")
            if "data" in item or "type" in item:
                self.check_logged(channel, epoch, got, item, index, "missed")
                ch.seen = item
            else:
                ch.seen = None
            covered.add(got)
            prev = got
        # everything after the client's position (or its `since`, if lower) up to the reply's
        # offset must be in `missed`; a `since` behind the wire (events still unread when it
        # was sent) legitimately brings some again
        lower = (
            min(x for x in (floor, last) if x is not None)
            if (floor, last) != (None, None)
            else None
        )
        if lower is None:
            lower = min(covered) - 1 if covered else offset
        left_out = [o for o in range(lower + 1, offset + 1) if o not in covered]
        if left_out:
            self.fail(channel, 2, index, f"recovered:true leaves {left_out[0]}..{left_out[-1]} out")
            ch.seen = None
        if not missed and last is not None and offset < last and ch.epoch == epoch:
            self.fail(channel, 1, index, f"recovered:true at {offset}, behind {last}")
        ch.epoch, ch.last = epoch, offset

    def check_state(self, channel: str, rec: Record, index: int, epoch: str, offset: int) -> None:
        candidates = self.log.states_at(channel, epoch, offset)
        if candidates is None:
            if offset and not self.allow_unlogged:
                self.fail(channel, 5, index, f"`subscribed` at {epoch}/{offset}: not in the log")
            return
        state = rec.get("state")
        for cand in candidates:
            if cand is None and state is None:
                return
            if cand is not None and state is not None:
                if int(state["offset"]) != int(cand["offset"]):
                    continue
                if "data" in state and (
                    state.get("data") != cand.get("data") or state.get("type") != cand.get("type")
                ):
                    continue
                return
        want = sorted({c["offset"] if c is not None else None for c in candidates}, key=str)
        got = None if state is None else state.get("offset")
        self.fail(channel, 5, index, f"state at {got}, the newest at {epoch}/{offset} is {want}")

    def check_logged(
        self, channel: str, epoch: str | None, offset: int, rec: Record, index: int, what: str
    ) -> None:
        match = self.log.matches(channel, epoch, offset, rec)
        if match is None and not self.allow_unlogged:
            self.fail(channel, 3, index, f"{what} {epoch}/{offset} is not in the log")
        elif match is False:
            self.fail(
                channel,
                3,
                index,
                f"{what} {epoch}/{offset} carries {rec.get('type')}:{rec.get('data')!r}, "
                "not what was published there",
            )

    def event(self, channel: str, ch: _Chan, rec: Record, index: int) -> None:
        offset = int(rec["offset"])
        if ch.epoch == self.empty_epoch and ch.last == 0:
            # a channel nobody had published on: its first epoch continues it unannounced
            for epoch in self.log.epochs.get((channel, offset), ()):
                if self.log.matches(channel, epoch, offset, rec):
                    ch.epoch = epoch
                    break
        if not ch.live:
            self.fail(channel, 3, index, f"event {offset} outside a subscription")
        if not self.allowed(channel, index):
            self.fail(channel, 4, index, f"private event {offset} without the right")
        if ch.last is not None:
            if offset <= ch.last:
                self.fail(channel, 1, index, f"event {offset} after {ch.last}")
                return
            if offset != ch.last + 1 and not self.coalesced(channel):
                self.fail(channel, 2, index, f"jump from {ch.last} to {offset} without a resync")
        self.check_logged(channel, ch.epoch, offset, rec, index, "event")
        ch.last, ch.seen = offset, rec


def _same(a: Record, b: Record | None) -> bool:
    return b is not None and a.get("type") == b.get("type") and a.get("data") == b.get("data")


IS_PRIVATE = in_namespaces(PRIVATE_NAMESPACES)
IS_COALESCED = in_namespaces(COALESCED_NAMESPACES)


def check(
    published: Iterable[Record],
    histories: Mapping[str, Sequence[Record]],
    rights: Mapping[str, Rights] | None = None,
    *,
    private: Callable[[str], bool] = IS_PRIVATE,
    coalesced: Callable[[str], bool] = IS_COALESCED,
    settled: bool = True,
    allow_unlogged: bool = False,
    empty_epoch: str | None = "0",
) -> list[Violation]:
    """Check every client's history; an empty list means the guarantee held.

    ``settled``: the run ended in quiescence, so rule 6 applies. ``allow_unlogged``: events
    missing from the log are not violations (a live run whose publish replies were lost).
    ``empty_epoch``: the epoch a store reports for a channel nobody published on
    (``realtime.brokers.base.EMPTY_EPOCH``); a client at offset 0 of it continues into the
    channel's first real epoch without a resync.
    """
    checker = _Checker(
        _Log.build(published), rights, private, coalesced, allow_unlogged, empty_epoch
    )
    for client in sorted(histories):
        checker.run(client, histories[client], settled)
    return checker.out


def format_violations(
    violations: Sequence[Violation],
    histories: Mapping[str, Sequence[Record]] | None = None,
    context: int = 3,
    limit: int = 20,
) -> str:
    """Render violations, with the history records around each one when given."""
    if not violations:
        return "no violations"
    lines = [f"{len(violations)} violation(s):"]
    for v in violations[:limit]:
        lines.append(
            f"- client {v.client} channel {v.channel} rule {v.rule} ({RULES.get(v.rule, '?')}) "
            f"at #{v.index}: {v.detail}"
        )
        history = histories.get(v.client) if histories is not None else None
        if history:
            for i in range(max(0, v.index - context), min(len(history), v.index + 1)):
                text = str(dict(history[i]))
                text = text if len(text) <= 300 else text[:297] + "..."
                lines.append(f"    {'>' if i == v.index else ' '} #{i} {text}")
    if len(violations) > limit:
        lines.append(f"... and {len(violations) - limit} more")
    return "\n".join(lines)
