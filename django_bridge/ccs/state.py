"""The latest state of every contest object, keyed by (type, id).

Notifications may repeat and arrive out of order; each one carries an object's whole
current state, so keeping the latest one per key is enough. ``apply`` returns the keys whose
value really changed, so that a repeat publishes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from django_bridge.ccs.feed import SINGLETONS, Notification

Key = tuple[str, str]  # (type, id); singletons use id ""


@dataclass(frozen=True, slots=True)
class Change:
    """One object that changed: ``old``/``new`` are None when absent."""

    type: str
    id: str
    old: Any
    new: Any


@dataclass
class ContestState:
    """Objects by type then id; ``token`` is the last resume point seen."""

    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    token: str | None = None

    def get(self, kind: str, object_id: str = "") -> Any:
        """Return an object's data or None."""
        return self.objects.get(kind, {}).get(object_id)

    def all(self, kind: str) -> dict[str, Any]:
        """Return the objects of one type by id (a live view: do not modify)."""
        return self.objects.get(kind, {})

    def items(self) -> Iterator[tuple[Key, Any]]:
        """Yield every ((type, id), data)."""
        for kind, objects in self.objects.items():
            for object_id, data in objects.items():
                yield (kind, object_id), data

    def set(self, kind: str, object_id: str, data: Any) -> Change | None:
        """Store one object (None deletes it); return the change, or None if equal."""
        objects = self.objects.setdefault(kind, {})
        old = objects.get(object_id)
        if old == data:
            return None
        if data is None:
            del objects[object_id]
        else:
            objects[object_id] = data
        return Change(kind, object_id, old, data)

    def apply(self, note: Notification) -> list[Change]:
        """Apply one notification; return what changed (empty for a repeat)."""
        if note.token is not None:
            self.token = note.token
        if note.type in SINGLETONS:
            change = self.set(note.type, "", note.data)
            return [change] if change else []
        if note.id is not None:
            data = note.data
            if isinstance(data, dict) and "id" in data and str(data["id"]) != note.id:
                data = {**data, "id": note.id}
            change = self.set(note.type, note.id, data)
            return [change] if change else []
        # a whole collection: objects missing from it are deleted
        fresh = {str(item["id"]): item for item in (note.data or []) if isinstance(item, dict)}
        changes: list[Change] = []
        for oid in [o for o in self.all(note.type) if o not in fresh]:
            gone = self.set(note.type, oid, None)
            if gone is not None:
                changes.append(gone)
        for oid, data in fresh.items():
            change = self.set(note.type, oid, data)
            if change is not None:
                changes.append(change)
        return changes
