"""Shared pieces of the follower tests: a publish recorder, schema validation, boards."""

from __future__ import annotations

import threading
from typing import Any

import jsonschema

from tests.ccs.spec_schema import VERSIONS


class Recorder:
    """A ``publish`` stand-in that keeps every event (thread-safe)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, Any, bool]] = []
        self._lock = threading.Lock()

    def __call__(self, channel: str, type_: str, data: Any, state: bool = False, **_: Any) -> None:
        with self._lock:
            self.events.append((channel, type_, data, state))

    def on(self, channel: str) -> list[tuple[str, Any]]:
        """Return (type, data) of the events of one channel, in order."""
        with self._lock:
            return [(t, d) for c, t, d, _ in self.events if c == channel]


def validator(version: str, name: str) -> jsonschema.protocols.Validator:
    """Return a validator of the Contest API format ``name`` ("scoreboard", "awards") in
    the time format of ``version`` ("2023-06" or "master"); see ``spec_schema``."""
    schema = VERSIONS[(version, name)]
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)  # type: ignore[no-any-return]


def board_rows(rows: list[dict[str, Any]]) -> dict[str, tuple[int, int, dict[str, list[Any]]]]:
    """Return the leaderboard's rows as team -> (solved, penalty, cells)."""
    return {r["user"]: (r["solved"], r["penalty"], r["cells"]) for r in rows}


def competition(keys: dict[str, tuple[int, int]]) -> dict[str, int]:
    """Return team -> rank by more solved, then less penalty (ties share a rank)."""
    order = sorted(keys, key=lambda t: (-keys[t][0], keys[t][1]))
    ranks: dict[str, int] = {}
    for i, team in enumerate(order):
        same = i and keys[team] == keys[order[i - 1]]
        ranks[team] = ranks[order[i - 1]] if same else i + 1
    return ranks
