"""Wire messages: parse client commands, encode server replies (PROTOCOL.md sections 3-4).

Pure functions over bytes and dicts; no I/O. Encoding uses orjson; an event's JSON is
never re-encoded here (``Event.json`` is spliced in as it is).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from realtime.errors import ErrorCode, ProtocolError

MAX_ID_LENGTH = 64
MAX_OFFSET = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Since:
    """A client's recovery position: the last event it has of a channel."""

    epoch: str
    offset: int


@dataclass(frozen=True, slots=True)
class Command:
    """One parsed client command."""

    op: str
    id: str | int | None = None
    token: str | None = None
    channel: str | None = None
    since: Since | None = None


OPS = frozenset({"auth", "subscribe", "unsubscribe", "ping"})


def parse_command(text: str | bytes) -> Command:
    """Parse one client text frame.

    Raises:
        ProtocolError: ``bad_request`` for malformed JSON, a non-object, an unknown ``op``
            or bad field types. The error carries the command's ``id`` when it had one.
    """
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "malformed JSON") from None
    if not isinstance(obj, dict):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "a command must be a JSON object")
    cmd_id = obj.get("id")
    if cmd_id is not None and not _valid_id(cmd_id):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "'id' must be a short string or an integer")
    op = obj.get("op")
    try:
        if not isinstance(op, str) or op not in OPS:
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"unknown op {str(op)[:40]!r}")
        if op == "auth":
            token = obj.get("token")
            if not isinstance(token, str) or not token:
                raise ProtocolError(ErrorCode.BAD_REQUEST, "'token' must be a non-empty string")
            return Command(op=op, id=cmd_id, token=token)
        if op in ("subscribe", "unsubscribe"):
            channel = obj.get("channel")
            if not isinstance(channel, str):
                raise ProtocolError(ErrorCode.BAD_REQUEST, "'channel' must be a string")
            since = _parse_since(obj.get("since")) if op == "subscribe" else None
            return Command(op=op, id=cmd_id, channel=channel, since=since)
        return Command(op=op, id=cmd_id)
    except ProtocolError as exc:
        exc.command_id = cmd_id
        raise


def _valid_id(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -MAX_OFFSET <= value <= MAX_OFFSET
    return isinstance(value, str) and len(value) <= MAX_ID_LENGTH


def _parse_since(raw: Any) -> Since | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ProtocolError(ErrorCode.BAD_REQUEST, '\'since\' must be {"epoch":..,"offset":..}')
    epoch, offset = raw.get("epoch"), raw.get("offset")
    if not isinstance(epoch, str) or len(epoch) > 64:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "'since.epoch' must be a string")
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= MAX_OFFSET:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "'since.offset' must be an integer >= 0")
    return Since(epoch=epoch, offset=offset)


def _with_id(obj: dict[str, Any], cmd_id: str | int | None) -> dict[str, Any]:
    if cmd_id is not None:
        obj["id"] = cmd_id
    return obj


def welcome(session: str, heartbeat: int) -> bytes:
    """The first message of every connection."""
    return orjson.dumps(
        {
            "op": "welcome",
            "session": session,
            "heartbeat": heartbeat,
            "time": int(time.time() * 1000),
        }
    )


def authed(user: str, cmd_id: str | int | None) -> bytes:
    return orjson.dumps(_with_id({"op": "authed", "user": user}, cmd_id))


def pong(cmd_id: str | int | None) -> bytes:
    return orjson.dumps(_with_id({"op": "pong"}, cmd_id))


def unsubscribed(channel: str, cmd_id: str | int | None = None, reason: str | None = None) -> bytes:
    obj: dict[str, Any] = {"op": "unsubscribed", "channel": channel}
    if reason is not None:
        obj["reason"] = reason
    return orjson.dumps(_with_id(obj, cmd_id))


def error(
    code: ErrorCode, message: str, channel: str | None = None, cmd_id: str | int | None = None
) -> bytes:
    obj: dict[str, Any] = {"op": "error", "code": code.value, "message": message}
    if channel is not None:
        obj["channel"] = channel
    return orjson.dumps(_with_id(obj, cmd_id))


def subscribed(
    channel: str,
    epoch: str,
    offset: int,
    state: bytes | None,
    missed: Iterable[bytes] | None,
    recovered: bool,
    cmd_id: str | int | None = None,
) -> bytes:
    """Encode a ``subscribed`` reply, splicing in already-encoded event JSON."""
    head: dict[str, Any] = {
        "op": "subscribed",
        "channel": channel,
        "epoch": epoch,
        "offset": offset,
        "recovered": recovered,
    }
    _with_id(head, cmd_id)
    body = orjson.dumps(head)[:-1]  # drop the closing brace, then append raw members
    parts = [body, b',"state":', state if state is not None else b"null"]
    if missed is not None:
        parts.append(b',"missed":[')
        parts.append(b",".join(missed))
        parts.append(b"]")
    parts.append(b"}")
    return b"".join(parts)
