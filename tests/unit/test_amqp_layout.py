"""The AMQP message format: encoding, decoding and what a node refuses."""

from __future__ import annotations

import json

import pytest

from realtime.brokers import amqp_layout
from realtime.brokers.amqp_layout import MessageError, Numbered, Raw
from realtime.envelope import Envelope, encode_event

EVENT = encode_event("submission:9001", 7, "judge.verdict", b'{"verdict":"AC"}')


def test_numbered_round_trip_keeps_the_event() -> None:
    """A numbered body decodes to the same channel, epoch, offset and event bytes."""
    body = amqp_layout.encode_numbered("e1", 7, EVENT, ts_ms=1795000000123)
    message = amqp_layout.decode(body, "submission:9001")
    assert isinstance(message, Numbered)
    event = message.event
    assert (event.channel, event.epoch, event.offset) == ("submission:9001", "e1", 7)
    assert event.json == EVENT
    assert event.published == pytest.approx(1795000000.123)


def test_numbered_body_is_the_documented_json() -> None:
    """The numbered body is {"v":1,"epoch","offset","ts","event"} with the event spliced in."""
    body = amqp_layout.encode_numbered("e1", 7, EVENT, ts_ms=5)
    assert json.loads(body) == {
        "v": 1,
        "epoch": "e1",
        "offset": 7,
        "ts": 5,
        "event": json.loads(EVENT),
    }


def test_numbered_without_ts_is_accepted() -> None:
    """``ts`` is optional (the Django bridge leaves it out); the latency stamp is then 0."""
    body = b'{"v":1,"epoch":"e1","offset":7,"event":%s}' % EVENT
    message = amqp_layout.decode(body)
    assert isinstance(message, Numbered)
    assert message.event.published == 0.0


def test_foreign_publisher_event_is_rebuilt_in_wire_form() -> None:
    """An event encoded with other spacing and key order is sent in the server's wire form."""
    foreign = {
        "v": 1,
        "offset": 3,
        "epoch": "e9",
        "event": {
            "data": {"a": 1},
            "type": "t",
            "offset": 3,
            "channel": "contest:1",
            "op": "event",
        },
    }
    message = amqp_layout.decode(json.dumps(foreign, indent=2).encode())
    assert isinstance(message, Numbered)
    assert message.event.json == encode_event("contest:1", 3, "t", b'{"a":1}')


def test_raw_round_trip_keeps_the_envelope() -> None:
    """A raw body decodes to the envelope it was made from."""
    envelope = Envelope("contest:1", "tick", b'{"n":1}', state=True, id="abc")
    message = amqp_layout.decode(amqp_layout.encode_raw(envelope), "contest:1")
    assert message == Raw(envelope)


def test_raw_body_matches_the_bridge_form() -> None:
    """The raw body is the bridge's envelope JSON with ``"v":1``; state and id are optional."""
    message = amqp_layout.decode(b'{"v":1,"channel":"contest:1","type":"t","data":null}')
    assert message == Raw(Envelope("contest:1", "t", b"null"))


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"not json", "not JSON"),
        (b"[1]", "not a JSON object"),
        (b'{"v":2,"channel":"contest:1","type":"t","data":1}', "unknown version"),
        (b'{"channel":"contest:1","type":"t","data":1}', "unknown version"),
        (b'{"v":1,"channel":"Bad","type":"t","data":1}', "invalid channel"),
        (b'{"v":1,"channel":"contest:1","type":"t"}', "'data' is required"),
        (b'{"v":1,"epoch":"","offset":1,"event":{}}', "'epoch'"),
        (b'{"v":1,"epoch":"e","offset":0,"event":{}}', "'offset'"),
        (b'{"v":1,"epoch":"e","offset":true,"event":{}}', "'offset'"),
        (b'{"v":1,"epoch":"e","offset":1,"event":[]}', "'event' must be an object"),
        (b'{"v":1,"epoch":"e","offset":2,"event":' + EVENT + b"}", "differs"),
        (
            b'{"v":1,"epoch":"e","offset":7,"ts":"x","event":' + EVENT + b"}",
            "'ts'",
        ),
    ],
)
def test_malformed_bodies_are_refused(body: bytes, why: str) -> None:
    """Each malformed body raises MessageError saying what is wrong."""
    with pytest.raises(MessageError, match=why):
        amqp_layout.decode(body)


def test_routing_key_must_match_the_channel() -> None:
    """A message routed under another channel's key is refused."""
    body = amqp_layout.encode_numbered("e1", 7, EVENT)
    with pytest.raises(MessageError, match="routing key"):
        amqp_layout.decode(body, "submission:1")


def test_routing_key_is_the_channel_name() -> None:
    """Publishers route by the channel name itself."""
    assert amqp_layout.routing_key("user:1001") == "user:1001"
