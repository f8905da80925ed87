"""Publish envelopes and the encoded form of events.

Shared by the server and the Django bridge (the bridge imports this module; it must stay
free of Tornado and broker clients). An event is encoded to its wire JSON exactly once, when
its offset is assigned; every later step (history, pub/sub, fan-out) moves those bytes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import orjson

from realtime.errors import PublishError

CHANNEL_RE = re.compile(r"[a-z][a-z0-9_]*:[A-Za-z0-9_.:\-]{1,120}")  # always fullmatch()
MAX_TYPE_LENGTH = 200
MAX_VERSION = 2**53 - 1  # exact in a Lua number (the Redis script compares versions)


@dataclass(frozen=True, slots=True)
class Envelope:
    """What a publisher sends: one event for one channel.

    ``data_json`` is the event's ``data`` already encoded as JSON text, so that the
    publisher's encoding is kept byte for byte and never parsed again on the way out.
    ``id`` is an optional de-duplication key: the same id published twice (a relay retry)
    is stored and delivered once. ``version`` (state events only) orders states: the store
    drops a state event whose version is not above the channel's stored state version, so
    the state is always the newest whatever the publish order (docs/PROTOCOL-REDIS.md).
    """

    channel: str
    type: str
    data_json: bytes
    state: bool = False
    id: str | None = None
    version: int | None = None


@dataclass(frozen=True, slots=True)
class Event:
    """An event with its place in the channel: what the fan-out sends.

    ``json`` is the complete wire object ``{"op":"event",...}`` as UTF-8 bytes;
    ``published`` the publisher's wall-clock time in seconds (0 when unknown), for the
    publish-to-send latency metric.
    """

    channel: str
    epoch: str
    offset: int
    json: bytes
    published: float = 0.0


@dataclass(frozen=True, slots=True)
class Published:
    """Where a publish landed; ``duplicate`` is true when ``id`` was seen before.

    A state event with a ``version`` not above the stored one is dropped like a duplicate
    (``duplicate`` true, ``offset`` the channel's current one).
    """

    channel: str
    epoch: str
    offset: int
    duplicate: bool = False


def channel_namespace(channel: str) -> str:
    """Return the namespace part of a valid channel name."""
    return channel.split(":", 1)[0]


def encode_event(channel: str, offset: int, type_: str, data_json: bytes) -> bytes:
    """Build the wire JSON of an event (the same bytes the Redis script builds)."""
    return b'{"op":"event","channel":%s,"offset":%d,"type":%s,"data":%s}' % (
        orjson.dumps(channel),
        offset,
        orjson.dumps(type_),
        data_json,
    )


def envelope_from_obj(obj: Any) -> Envelope:
    """Validate a decoded JSON envelope (``{"channel","type","data","state","id","version"}``).

    Raises:
        PublishError: with a message that says which field is wrong.
    """
    if not isinstance(obj, dict):
        raise PublishError("an envelope must be a JSON object")
    channel = obj.get("channel")
    if not isinstance(channel, str) or not CHANNEL_RE.fullmatch(channel):
        raise PublishError(f"invalid channel name: {channel!r}")
    type_ = obj.get("type")
    if not isinstance(type_, str) or not type_ or len(type_) > MAX_TYPE_LENGTH:
        raise PublishError("'type' must be a non-empty string of at most 200 characters")
    if "data" not in obj:
        raise PublishError("'data' is required (use null for none)")
    state = obj.get("state", False)
    if not isinstance(state, bool):
        raise PublishError("'state' must be true or false")
    id_ = obj.get("id")
    if id_ is not None and (not isinstance(id_, str) or not 0 < len(id_) <= 200):
        raise PublishError("'id' must be a string of 1 to 200 characters")
    version = check_version(obj.get("version"), state)
    try:
        data_json = orjson.dumps(obj["data"])
    except TypeError as exc:  # e.g. integers beyond 64 bits
        raise PublishError(f"'data' cannot be encoded: {exc}") from exc
    return Envelope(
        channel=channel, type=type_, data_json=data_json, state=state, id=id_, version=version
    )


def check_version(version: Any, state: bool) -> int | None:
    """Validate an envelope's optional state ``version``; return it.

    Raises:
        PublishError: not an integer in 0..2**53-1, or given without ``state``.
    """
    if version is None:
        return None
    if isinstance(version, bool) or not isinstance(version, int):
        raise PublishError("'version' must be an integer")
    if not 0 <= version <= MAX_VERSION:
        raise PublishError(f"'version' must be between 0 and {MAX_VERSION}")
    if not state:
        raise PublishError("'version' orders states: it needs 'state': true")
    return version


def envelopes_from_body(body: bytes) -> list[Envelope]:
    """Parse an HTTP publish body: one envelope or a JSON list of them."""
    # the stdlib parser keeps integers exact (orjson would turn a 30-digit id into a float),
    # so an integer that cannot be sent as a 64-bit number is refused, not silently rounded
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise PublishError(f"body is not valid JSON: {str(exc)[:200]}") from None
    items = obj if isinstance(obj, list) else [obj]
    if not items:
        raise PublishError("empty list: nothing to publish")
    return [envelope_from_obj(item) for item in items]
