"""Event-feed lines of both dialects, parsed into one ``Notification`` shape (sans I/O).

* 2020-03: ``{"type", "id", "op", "data"}``; ``id`` is the *event* id (the
  resume point, ``since_id``), the object id is ``data.id``, ``op`` is create, update or
  delete, the contest's type is ``contests``.
* 2022-07 and later: ``{"type", "id", "data", "token"}``; ``id`` is the *object* id (null
  for a singleton or a whole collection, whose ``data`` is then an array), ``data`` null is a
  deletion, ``token`` (optional) is the resume point (``since_token``).

An empty line is a keep-alive and yields None. The short-lived 2021-11 shape
(``{"contest_id", "endpoint", "id", "data"}``) is not read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson

Dialect = Literal["2020-03", "2022-07"]
SINGLETONS = frozenset({"contest", "state"})


class FeedError(ValueError):
    """A line that is not a notification of either dialect."""


@dataclass(frozen=True, slots=True)
class Notification:
    """One change: ``data`` is the object (None: deleted) or, with ``id`` None and a
    collection type, the list of all its objects. ``token`` is where to resume after it."""

    type: str
    id: str | None
    data: Any
    token: str | None
    dialect: Dialect


def parse_line(line: bytes | str) -> Notification | None:
    """Parse one NDJSON line; return None for a keep-alive (blank) line.

    Raises:
        FeedError: not JSON, or not shaped like a notification.
    """
    if not line.strip():
        return None
    try:
        event = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise FeedError(f"not JSON: {line[:200]!r}") from exc
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        raise FeedError(f"not a notification: {line[:200]!r}")
    kind: str = event["type"]
    data = event.get("data")
    if "op" in event:
        return _old_dialect(kind, event, data)
    object_id = event.get("id")
    token = event.get("token")
    if kind in SINGLETONS:
        object_id = None
    elif object_id is None and data is not None and not isinstance(data, list):
        raise FeedError(f"{kind}: a null id needs an array of objects")
    return Notification(
        kind,
        None if object_id is None else str(object_id),
        data,
        None if token is None else str(token),
        "2022-07",
    )


def _old_dialect(kind: str, event: dict[str, Any], data: Any) -> Notification:
    if kind == "contests":
        kind = "contest"
    op = event["op"]
    if op not in ("create", "update", "delete"):
        raise FeedError(f"unknown op {op!r}")
    object_id: str | None = None
    if kind not in SINGLETONS:
        if not isinstance(data, dict) or "id" not in data:
            raise FeedError(f"{kind}: data without an id")
        object_id = str(data["id"])
    event_id = event.get("id")
    return Notification(
        kind,
        object_id,
        None if op == "delete" else data,
        None if event_id is None else str(event_id),
        "2020-03",
    )
