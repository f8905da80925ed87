"""Where a followed contest lives in Redis: its objects, resume token, served documents.

Under ``prefix`` (default ``ccs:``) for contest ``C``:

| key | type | content |
|---|---|---|
| ``ccs:{C}:obj`` | hash | ``<type>/<id>`` -> the object's JSON (singletons: ``contest/``) |
| ``ccs:{C}:token`` | string | the last resume point (``since_token`` or ``since_id``) |
| ``ccs:{C}:doc:<name>`` | string | JSON served as is: ``scoreboard:public``, ``awards:full`` ... |
"""

from __future__ import annotations

from typing import Any

import orjson
import redis

from django_bridge.ccs.state import Change, ContestState

DEFAULT_PREFIX = "ccs:"


class ContestStore:
    """One contest's keys (``client`` returns bytes)."""

    def __init__(self, client: redis.Redis, contest_id: str, prefix: str = DEFAULT_PREFIX):
        """Keys of ``contest_id`` under ``prefix``."""
        self.client = client
        self.base = f"{prefix}{{{contest_id}}}"

    def load(self) -> ContestState:
        """Return the stored state (empty for a new contest)."""
        state = ContestState()
        stored: dict[bytes, bytes] = self.client.hgetall(f"{self.base}:obj")  # type: ignore[assignment]
        for field, value in stored.items():
            kind, _, object_id = field.decode().partition("/")
            state.objects.setdefault(kind, {})[object_id] = orjson.loads(value)
        token: Any = self.client.get(f"{self.base}:token")
        state.token = token.decode() if token else None
        return state

    def save(self, changes: list[Change], token: str | None) -> None:
        """Write changed objects and the resume token in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        for change in changes:
            field = f"{change.type}/{change.id}"
            if change.new is None:
                pipe.hdel(f"{self.base}:obj", field)
            else:
                pipe.hset(f"{self.base}:obj", field, orjson.dumps(change.new))
        if token is not None:
            pipe.set(f"{self.base}:token", token)
        else:
            pipe.delete(f"{self.base}:token")
        pipe.execute()

    def put_docs(self, docs: dict[str, Any]) -> None:
        """Store the served documents (``name`` -> JSON value)."""
        pipe = self.client.pipeline(transaction=False)
        for name, value in docs.items():
            pipe.set(f"{self.base}:doc:{name}", orjson.dumps(value))
        pipe.execute()

    def doc(self, name: str) -> bytes | None:
        """Return one served document's JSON bytes, or None before the first flush."""
        value: Any = self.client.get(f"{self.base}:doc:{name}")
        return bytes(value) if value is not None else None

    def delete(self) -> int:
        """Delete the contest's keys (SCAN + UNLINK); return how many."""
        keys = list(
            self.client.scan_iter(
                match=f"{self.base}:*".replace("{", "\\{").replace("}", "\\}"), count=1000
            )
        )
        return int(self.client.unlink(*keys)) if keys else 0
