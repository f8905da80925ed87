"""AMQP wire format: exchange, routing key and message bodies (shared with the Django bridge).

No pika and no Tornado here: the bridge and other publishers import this module.

Exchange: a durable ``topic`` exchange named by ``REALTIME_AMQP_EXCHANGE`` (default
``realtime``). Routing key: the channel name itself (``submission:9001``); channel names
never contain ``*`` or ``#``, so a binding on a channel name matches exactly that channel.
Properties: ``content_type=application/json``, ``delivery_mode=2``; ``message_id`` is
optional. Two body forms, both JSON objects with ``"v": 1``:

* numbered (the server runs with ``REALTIME_REDIS_URL``): the publisher first ran the Redis
  ``PUBLISH_SCRIPT`` without its PUBLISH (``redis_layout``) and sends what it returned::

      {"v":1,"epoch":"E","offset":N,"ts":1795000000000,"event":<event object>}

  where ``<event object>`` is the stored event
  ``{"op":"event","channel":C,"offset":N,"type":T,"data":D}``; ``ts`` (publish time in ms)
  is optional and only feeds the latency metric.

* raw (no Redis store): the envelope of PROTOCOL.md section 5; each server node numbers it
  in its own in-process store::

      {"v":1,"channel":C,"type":T,"data":D,"state":false,"id":null}

  ``state`` and ``id`` are optional (``id`` de-duplicates retries within one node).

The two forms are told apart by the ``event`` key. A node ignores (and logs) a body it
cannot decode, a version it does not know, and a numbered body whose routing key or event
disagrees with itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeGuard

import orjson

from realtime.envelope import Envelope, Event, encode_event, envelope_from_obj
from realtime.errors import PublishError

VERSION = 1
EXCHANGE_TYPE = "topic"
CONTENT_TYPE = "application/json"
DELIVERY_MODE = 2  # persistent: harmless on the exclusive queues, kept for other consumers
# every channel's messages: what a node without a Redis store binds (it numbers all events)
ALL_CHANNELS = "#"


class MessageError(ValueError):
    """A message body that is not one of the two forms."""


def routing_key(channel: str) -> str:
    """Return the routing key (and binding key) of a channel."""
    return channel


def encode_numbered(epoch: str, offset: int, event_json: bytes, ts_ms: int | None = None) -> bytes:
    """Encode an already stored event (``event_json`` is spliced in, never re-encoded)."""
    ts = b',"ts":%d' % ts_ms if ts_ms is not None else b""
    return b'{"v":1,"epoch":%s,"offset":%d%s,"event":%s}' % (
        orjson.dumps(epoch),
        offset,
        ts,
        event_json,
    )


def encode_raw(envelope: Envelope) -> bytes:
    """Encode an envelope for nodes that number events themselves."""
    head = orjson.dumps(
        {
            "v": VERSION,
            "channel": envelope.channel,
            "type": envelope.type,
            "state": envelope.state,
            "id": envelope.id,
        }
    )
    return head[:-1] + b',"data":' + envelope.data_json + b"}"


@dataclass(frozen=True, slots=True)
class Numbered:
    """A decoded numbered message: the event as the node fans it out."""

    event: Event


@dataclass(frozen=True, slots=True)
class Raw:
    """A decoded raw message: an envelope still to be numbered."""

    envelope: Envelope


def decode(body: bytes, routing: str | None = None) -> Numbered | Raw:
    """Decode a message body; ``routing`` (the routing key) is checked when given.

    Raises:
        MessageError: the body is not a valid message of a known version.
    """
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MessageError(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise MessageError("not a JSON object")
    if obj.get("v") != VERSION:
        raise MessageError(f"unknown version {obj.get('v')!r}")
    result = _decode_numbered(obj) if "event" in obj else _decode_raw(obj)
    channel = result.event.channel if isinstance(result, Numbered) else result.envelope.channel
    if routing is not None and routing != routing_key(channel):
        raise MessageError(f"routing key {routing!r} does not match channel {channel!r}")
    return result


def _decode_numbered(obj: dict[str, Any]) -> Numbered:
    epoch, offset, event, ts = obj.get("epoch"), obj.get("offset"), obj["event"], obj.get("ts")
    if not isinstance(epoch, str) or not epoch:
        raise MessageError("'epoch' must be a non-empty string")
    if not _is_int(offset) or offset < 1:
        raise MessageError("'offset' must be an integer >= 1")
    if not isinstance(event, dict):
        raise MessageError("'event' must be an object")
    if event.get("offset") != offset:
        raise MessageError("'event.offset' differs from 'offset'")
    if ts is not None and not (_is_int(ts) or isinstance(ts, float)):
        raise MessageError("'ts' must be a number of milliseconds")
    try:
        envelope = envelope_from_obj(event)
    except PublishError as exc:
        raise MessageError(f"bad event: {exc}") from None
    # rebuilt from its parts so every node sends the same wire form, whoever published
    data = encode_event(envelope.channel, offset, envelope.type, envelope.data_json)
    published = ts / 1000.0 if ts is not None else 0.0
    return Numbered(Event(envelope.channel, epoch, offset, data, published))


def _decode_raw(obj: dict[str, Any]) -> Raw:
    fields = {k: obj[k] for k in ("channel", "type", "data", "state", "id") if k in obj}
    try:
        return Raw(envelope_from_obj(fields))
    except PublishError as exc:
        raise MessageError(f"bad envelope: {exc}") from None


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)
