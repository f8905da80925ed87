"""Shared pieces of the follower tests: a publish recorder, schema validation, boards."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import jsonschema
from referencing import Registry, Resource

SCHEMAS = Path(__file__).resolve().parent / "schemas"


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
    """Return a validator of the transcribed schema ``<version>/<name>.json``."""
    resources = []
    for path in (SCHEMAS / version).glob("*.json"):
        schema = json.loads(path.read_text())
        resources.append((schema["$id"], Resource.from_contents(schema)))
    registry: Registry[Any] = Registry().with_resources(resources)
    schema = json.loads((SCHEMAS / version / f"{name}.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, registry=registry)  # type: ignore[no-any-return]


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
