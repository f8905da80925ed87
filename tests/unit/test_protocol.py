"""The sans-I/O session, command parsing and token verification."""

from __future__ import annotations

import time

import jwt
import orjson
import pytest

from realtime import messages
from realtime.auth import Identity, check_channel, verify_token
from realtime.config import Settings, default_namespaces
from realtime.errors import CloseCode, ErrorCode, ProtocolError
from realtime.protocol import Close, Reply, Session, Subscribe, Unsubscribe

SECRET = "unit-secret-0123456789abcdef0123456789"


def token(sub: str = "7", **claims: object) -> str:
    return jwt.encode({"sub": sub, **claims}, SECRET, algorithm="HS256")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def session(**overrides: object) -> tuple[Session, FakeClock]:
    clock = FakeClock()
    settings = Settings(secret=SECRET, **overrides)  # type: ignore[arg-type]
    return Session(settings, clock=clock, wall_clock=time.time), clock


def reply(actions: list[object]) -> dict[str, object]:
    assert len(actions) == 1 and isinstance(actions[0], Reply), actions
    result: dict[str, object] = orjson.loads(actions[0].data)
    return result


@pytest.mark.parametrize(
    "text",
    [
        b"{bad",
        b"[]",
        b'"x"',
        b'{"op":"dance"}',
        b'{"op":"subscribe"}',
        b'{"op":"auth"}',
        b'{"op":"subscribe","channel":"a:b","since":{"epoch":1,"offset":0}}',
        b'{"op":"subscribe","channel":"a:b","since":{"epoch":"e","offset":-1}}',
        b'{"op":"ping","id":{"x":1}}',
        b'{"op":"ping","id":1e400}',
    ],
)
def test_malformed_commands_are_bad_request(text: bytes) -> None:
    """Malformed JSON, unknown ops and bad fields are answered with bad_request."""
    s, _ = session()
    msg = reply(s.receive(text))
    assert msg["op"] == "error" and msg["code"] == "bad_request"


def test_reply_echoes_id() -> None:
    """Replies carry the command's id, errors included."""
    s, _ = session()
    assert reply(s.receive(b'{"op":"ping","id":"a1"}')) == {"op": "pong", "id": "a1"}
    assert reply(s.receive(b'{"op":"nope","id":9}'))["id"] == 9


def test_private_channels_need_a_token_and_the_right_one() -> None:
    """user:/submission: channels: unauthorized without a token, forbidden with the wrong one."""
    s, _ = session()
    assert reply(s.receive(b'{"op":"subscribe","channel":"user:7"}'))["code"] == "unauthorized"
    reply(s.receive(orjson.dumps({"op": "auth", "token": token("7", channels=["submission:1*"])})))
    actions = s.receive(b'{"op":"subscribe","channel":"user:7"}')
    assert isinstance(actions[0], Subscribe)
    assert reply(s.receive(b'{"op":"subscribe","channel":"user:8"}'))["code"] == "forbidden"
    assert isinstance(s.receive(b'{"op":"subscribe","channel":"submission:12"}')[0], Subscribe)
    assert reply(s.receive(b'{"op":"subscribe","channel":"submission:2"}'))["code"] == "forbidden"


def test_channel_name_rules() -> None:
    """Bad names are bad_request; unknown namespaces unknown_channel."""
    ns = default_namespaces()
    anon = Identity()
    for bad in ("nocolon", "Upper:x", "a:" + "x" * 121, "a:sp ace", 5):
        with pytest.raises(ProtocolError) as info:
            check_channel(ns, anon, bad)
        assert info.value.code is ErrorCode.BAD_REQUEST
    with pytest.raises(ProtocolError) as info:
        check_channel(ns, anon, "chat:1")
    assert info.value.code is ErrorCode.UNKNOWN_CHANNEL
    assert check_channel(ns, anon, "leaderboard:42") == "leaderboard:42"


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (lambda: token(exp=int(time.time()) - 5), "token_expired"),
        (
            lambda: jwt.encode(
                {"sub": "7"}, "another-secret-0123456789abcdef012345", algorithm="HS256"
            ),
            "unauthorized",
        ),
        (lambda: jwt.encode({"sub": "7"}, SECRET * 3, algorithm="HS512"), "unauthorized"),
        (lambda: jwt.encode({"sub": "7"}, None, algorithm="none"), "unauthorized"),
        (lambda: token(sub=7), "unauthorized"),
        (lambda: token(channels="submission:1"), "unauthorized"),
        (lambda: "not.a.jwt", "unauthorized"),
    ],
)
def test_bad_tokens_are_refused(make: object, code: str) -> None:
    """Expired, wrong key, other algorithm, alg none and bad claims are refused."""
    with pytest.raises(ProtocolError) as info:
        verify_token(make(), SECRET)  # type: ignore[operator]
    assert info.value.code.value == code


def test_failed_auth_keeps_identity_and_reauth_revokes() -> None:
    """A failed auth changes nothing; a new user's auth drops the old user's channels."""
    s, _ = session()
    reply(s.receive(orjson.dumps({"op": "auth", "token": token("7")})))
    s.receive(b'{"op":"subscribe","channel":"user:7"}')
    bad = reply(s.receive(orjson.dumps({"op": "auth", "token": token("8", exp=1)})))
    assert bad["code"] == "token_expired" and s.identity.user == "7"
    actions = s.receive(orjson.dumps({"op": "auth", "token": token("8")}))
    assert orjson.loads(actions[0].data)["user"] == "8"  # type: ignore[union-attr]
    assert actions[1] == Unsubscribe("user:7", None, "forbidden")
    assert s.channels == set()


def test_require_exp() -> None:
    """With require_exp, a token without exp is refused."""
    with pytest.raises(ProtocolError):
        verify_token(token(), SECRET, require_exp=True)


def test_rate_limit_then_flood_close() -> None:
    """Past the burst: rate_limited; a client that keeps flooding: 1008."""
    s, clock = session(rate_limit=10.0, rate_burst=5, flood_close_after=3)
    for _ in range(5):
        assert reply(s.receive(b'{"op":"ping"}'))["op"] == "pong"
    assert reply(s.receive(b'{"op":"ping"}'))["code"] == "rate_limited"
    clock.now += 0.1  # one token back
    assert reply(s.receive(b'{"op":"ping"}'))["op"] == "pong"
    reply(s.receive(b'{"op":"ping"}'))
    reply(s.receive(b'{"op":"ping"}'))
    assert s.receive(b'{"op":"ping"}') == [Close(CloseCode.POLICY_VIOLATION, "flooding")]


def test_subscription_limit_and_duplicates() -> None:
    """More than max_subscriptions: too_many_subscriptions; a duplicate: bad_request."""
    s, _ = session(max_subscriptions=2)
    s.receive(b'{"op":"subscribe","channel":"contest:1"}')
    assert reply(s.receive(b'{"op":"subscribe","channel":"contest:1"}'))["code"] == "bad_request"
    s.receive(b'{"op":"subscribe","channel":"contest:2"}')
    msg = reply(s.receive(b'{"op":"subscribe","channel":"contest:3","id":3}'))
    assert (msg["code"], msg["channel"], msg["id"]) == ("too_many_subscriptions", "contest:3", 3)


def test_unsubscribe_is_idempotent() -> None:
    """Unsubscribing twice answers unsubscribed both times."""
    s, _ = session()
    s.receive(b'{"op":"subscribe","channel":"contest:1"}')
    assert s.receive(b'{"op":"unsubscribe","channel":"contest:1","id":1}') == [
        Unsubscribe("contest:1", 1)
    ]
    assert reply(s.receive(b'{"op":"unsubscribe","channel":"contest:1"}'))["op"] == "unsubscribed"


def test_token_expiry_warns_then_drops_private_channels() -> None:
    """At exp: token_expired; after the grace: private subscriptions dropped, public kept."""
    now = [1000.0]
    s = Session(Settings(secret=SECRET), clock=lambda: now[0], wall_clock=lambda: now[0])
    s.receive(orjson.dumps({"op": "auth", "token": token("7", exp=2_000_000_000)}))
    s.identity = Identity("7", (), 1010.0)
    s.receive(b'{"op":"subscribe","channel":"user:7"}')
    s.receive(b'{"op":"subscribe","channel":"contest:1"}')
    assert s.check_token(5.0) == ([], 1010.0)
    now[0] = 1010.0
    actions, again = s.check_token(5.0)
    assert orjson.loads(actions[0].data)["code"] == "token_expired" and again == 1015.0  # type: ignore[union-attr]
    now[0] = 1015.0
    actions, again = s.check_token(5.0)
    assert actions == [Unsubscribe("user:7", None, "token_expired")] and again is None
    assert s.channels == {"contest:1"} and s.identity.user is None


def test_subscribed_message_splices_event_json() -> None:
    """subscribed carries state and missed as the stored event JSON."""
    raw = messages.subscribed("c:1", "e", 3, b'{"op":"event","offset":3}', [b"1", b"2"], True, 5)
    assert orjson.loads(raw) == {
        "op": "subscribed",
        "channel": "c:1",
        "epoch": "e",
        "offset": 3,
        "recovered": True,
        "id": 5,
        "state": {"op": "event", "offset": 3},
        "missed": [1, 2],
    }
