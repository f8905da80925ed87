"""A watcher's live view of a public board, kept from the moves on ``standings:<contest>``.

Pure logic, no I/O: the Python twin of ``static/standings.js`` (the browser's), used by
bots and by the tests as the client whose views are checked against a reference.

Every change of the public board is one ``leaderboard.move`` with the board version ``v``
it produced (one per version, none skipped): user X went from key ``from`` at position
``old`` to key ``to`` at position ``pos``, its new ``rank``, the board's size ``n`` and X's
row. Rank is 1 + the number of rows with a higher key, so a row of key k changes rank by
``[to > k] - [from > k]`` when another row moves. A *track* (the own row, a page, the rows
around the watcher) starts from a read of the board at some version (``Leaderboard.window``
or an HTTP view of it) and applies the moves above that version in version order. Moves may
arrive out of version order (several recording processes): they wait in a buffer.

A track asks to be read again (``needs_reload``) when the moves cannot keep it: its page
slid out of the rows it holds, a version stays missing for ``gap_timeout`` seconds (a move
lost or merged away by the server's cap), or the board was reset (unfreeze).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

ReadRequest = dict[str, Any]  # {"start", "count"} or {"around", "k"}: Leaderboard.window kwargs


@dataclass(slots=True)
class Track:
    """One part of the view: ``rows`` at positions ``start``.. of board version ``v``.

    ``page``: keep positions ``page_start`` .. ``page_start + size - 1``; ``around``: keep the
    user's row with ``size`` rows on each side; ``own``: only the user's row (``size`` 0).
    """

    kind: str  # "page" | "around" | "own"
    size: int
    page_start: int = 0
    margin: int = 0
    v: int = -1  # -1: not loaded
    start: int = 0
    n: int = 0  # rows on the board at version v
    rows: list[dict[str, Any]] = field(default_factory=list)
    stale: bool = True


class StandingsView:
    """Tracks of one public board for one watcher (``me``: its user id or None)."""

    def __init__(self, me: str | None = None, *, gap_timeout: float = 2.0, keep: int = 5000):
        self.me = me
        self.tracks: dict[str, Track] = {}
        self._newest = -1
        self._moves: dict[int, Mapping[str, Any]] = {}
        self._gap_timeout = gap_timeout
        self._gap_since: float | None = None
        self._keep = keep

    # -- what to follow

    def follow_page(self, name: str, start: int, size: int, margin: int | None = None) -> None:
        """Follow positions ``start`` .. ``start + size - 1`` (a page of the board)."""
        margin = size if margin is None else margin
        self.tracks[name] = Track("page", size, page_start=start, margin=margin)

    def follow_around(self, name: str, k: int) -> None:
        """Follow the watcher's row with ``k`` rows on each side."""
        self.tracks[name] = Track("around", k, margin=2 * k + 10)

    def follow_own(self, name: str = "own") -> None:
        """Follow the watcher's own row (kept by counting: never needs a re-read)."""
        self.tracks[name] = Track("own", 0)

    def reset(self) -> None:
        """Read every track again (the channel was resynced: moves may be missing)."""
        for t in self.tracks.values():
            t.stale = True
        self._moves.clear()
        self._gap_since = None

    def requests(self) -> dict[str, ReadRequest]:
        """Return the reads the stale tracks need (``Leaderboard.window`` keyword arguments)."""
        out: dict[str, ReadRequest] = {}
        for name, t in self.tracks.items():
            if not t.stale:
                continue
            if t.kind == "page":
                first = max(0, t.page_start - t.margin)
                out[name] = {"start": first, "count": t.page_start + t.size + t.margin - first}
            elif self.me is not None:
                out[name] = {"around": self.me, "k": t.margin if t.kind == "around" else 0}
        return out

    def shown(self, name: str) -> ReadRequest:
        """Return the read that gives exactly what ``rows(name)`` shows (for checks)."""
        t = self.tracks[name]
        if t.kind == "page":
            return {"start": t.page_start, "count": t.size}
        return {"around": self.me, "k": t.size}

    def load(self, name: str, window: Mapping[str, Any]) -> None:
        """Start a track from a read (``Leaderboard.window``'s result), then catch up."""
        t = self.tracks[name]
        t.v, t.start, t.stale = int(window["v"]), max(0, int(window["start"])), False
        t.n = int(window["n"])
        # rows need their keys: a read gives them (Leaderboard.window), a move computes them
        t.rows = [dict(r) for r in window["rows"]] if int(window["start"]) >= 0 else []
        self._catch_up(t)
        self._prune()

    # -- the moves

    def feed(self, event: Mapping[str, Any], now: float = 0.0) -> None:
        """Take one event of ``standings:<contest>`` (``leaderboard.move`` or ``.reset``)."""
        data = event.get("data", event)
        if event.get("type") == "leaderboard.reset":
            data = {**data, "reset": True}
        v = int(data["v"])
        if v <= self._floor():
            return  # every track has it already
        self._moves[v] = data
        self._newest = max(self._newest, v)
        for t in self.tracks.values():
            self._catch_up(t)
        self._check_gap(now)
        self._prune()

    def stalled(self, now: float) -> bool:
        """True when a version has been missing for ``gap_timeout``: reload every track."""
        self._check_gap(now)
        if self._gap_since is not None and now - self._gap_since >= self._gap_timeout:
            for t in self.tracks.values():
                t.stale = True
            self._gap_since = None
            return True
        return False

    def _check_gap(self, now: float) -> None:
        # after _catch_up a live track stops only at a missing version
        waiting = any(not t.stale and 0 <= t.v < self._newest for t in self.tracks.values())
        if not waiting:
            self._gap_since = None
        elif self._gap_since is None:
            self._gap_since = now

    def _floor(self) -> int:
        """Return the lowest version a live track has applied (moves up to it are spent)."""
        return min((t.v for t in self.tracks.values() if not t.stale and t.v >= 0), default=-1)

    def _catch_up(self, t: Track) -> None:
        while not t.stale and t.v >= 0 and (t.v + 1) in self._moves:
            t.v += 1
            move = self._moves[t.v]
            if move.get("reset"):
                t.stale = True
                return
            t.n = int(move["n"])
            self._apply(t, move)

    def _prune(self) -> None:
        floor = self._floor()
        if floor >= 0 and any(v <= floor for v in self._moves):
            self._moves = {v: m for v, m in self._moves.items() if v > floor}
        if len(self._moves) > self._keep:
            for v in sorted(self._moves)[: len(self._moves) - self._keep]:
                del self._moves[v]

    def _apply(self, t: Track, m: Mapping[str, Any]) -> None:
        user, new_key, old_key = str(m["user"]), int(m["to"]), m["from"]
        for r in t.rows:
            if r["user"] != user:
                k = r["key"]
                r["rank"] += (new_key > k) - (old_key is not None and old_key > k)
        row = {**m["row"], "rank": int(m["rank"]), "key": new_key}
        if t.kind == "own":
            if user == self.me:
                t.rows = [row]
            return
        old, pos = m["old"], int(m["pos"])
        if old is not None:
            if old < t.start:
                t.start -= 1
            elif old < t.start + len(t.rows):
                if t.rows[old - t.start]["user"] != user:
                    t.stale = True  # our rows disagree with the board: read again
                    return
                del t.rows[old - t.start]
        if pos < t.start:
            t.start += 1
        elif pos <= t.start + len(t.rows):
            t.rows.insert(pos - t.start, row)
        self._trim(t, t.n)

    def _trim(self, t: Track, n: int) -> None:
        """Drop rows beyond the margin; mark the track stale when its range is not covered."""
        if t.kind == "page":
            lo, hi = t.page_start, min(t.page_start + t.size, n)
        else:
            mine = [i for i, r in enumerate(t.rows) if r["user"] == self.me]
            if not mine:
                t.stale = True
                return
            at = t.start + mine[0]
            lo, hi = max(0, at - t.size), min(at + t.size + 1, n)
        keep_lo, keep_hi = max(t.start, lo - t.margin), hi + t.margin
        t.rows = t.rows[keep_lo - t.start : keep_hi - t.start]
        t.start = keep_lo
        if t.start > lo or t.start + len(t.rows) < hi:
            t.stale = True

    # -- what to show

    def rows(self, name: str) -> list[dict[str, Any]] | None:
        """Return the rows a track shows (with ranks), or None while it needs a read."""
        t = self.tracks[name]
        if t.stale or t.v < 0:
            return None
        if t.kind == "own":
            return list(t.rows)
        if t.kind == "page":
            lo, hi = t.page_start, t.page_start + t.size
        else:
            mine = [i for i, r in enumerate(t.rows) if r["user"] == self.me]
            if not mine:
                return []
            lo, hi = t.start + mine[0] - t.size, t.start + mine[0] + t.size + 1
        return [r for i, r in enumerate(t.rows) if lo <= t.start + i < hi]

    def version(self, name: str) -> int:
        """Return the board version a track shows (-1 before its first read)."""
        return self.tracks[name].v
