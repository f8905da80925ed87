"""Access control: bad tokens, private channels never leak, Origin, publish key, limits."""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import time
import urllib.error
import urllib.request
import warnings
from typing import Any

import jwt
import pytest
import websockets
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.warnings import InsecureKeyLengthWarning

from tests.client import Client
from tests.conftest import TEST_SECRET, ServerProcess, make_token


def _b64(obj: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def _claims(sub: str = "1001") -> dict[str, Any]:
    return {"sub": sub, "exp": int(time.time() + 3600), "channels": ["submission:*"]}


def _hs512() -> str:
    # signing with the (HS256-sized) test secret is the point: the key is right, the alg not
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)
        return jwt.encode(_claims(), TEST_SECRET, algorithm="HS512")


def _bad_tokens() -> dict[str, tuple[str, str]]:
    """name -> (token, expected error code)."""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return {
        "forged": (
            jwt.encode(_claims(), "another-secret-0123456789-0123456789-abcdef", algorithm="HS256"),
            "unauthorized",
        ),
        "expired": (make_token("1001", ttl=-10), "token_expired"),
        "alg-none": (f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims())}.", "unauthorized"),
        "hs512": (_hs512(), "unauthorized"),
        "rs256": (jwt.encode(_claims(), rsa_key, algorithm="RS256"), "unauthorized"),
        "no-sub": (
            jwt.encode({"exp": int(time.time() + 60)}, TEST_SECRET, algorithm="HS256"),
            "unauthorized",
        ),
        "garbage": ("not.a.jwt", "unauthorized"),
    }


BAD_TOKENS = _bad_tokens()


@pytest.mark.parametrize("name", sorted(BAD_TOKENS))
def test_bad_token_is_refused_and_grants_nothing(memory_server: ServerProcess, name: str) -> None:
    """Forged, expired, alg:none, wrong-algorithm tokens: an error, and no private channel."""
    token, code = BAD_TOKENS[name]

    async def run() -> tuple[dict[str, Any], dict[str, Any]]:
        async with await Client.open(memory_server.ws_url) as client:
            reply = await client.auth(token)
            private = await client.subscribe("submission:1")
            return reply, private

    reply, private = asyncio.run(run())
    assert reply["op"] == "error" and reply["code"] == code, reply
    assert private["op"] == "error" and private["code"] == "unauthorized", private


def test_private_channels_never_leak_to_another_user(server_factory: Any) -> None:
    """User B, trying every way the protocol allows, receives none of user A's events."""
    server = server_factory(heartbeat="1")  # token grace = one heartbeat
    a_channels = ["user:alice", "submission:alice-1"]
    refused: list[dict[str, Any]] = []

    async def run() -> list[dict[str, Any]]:
        bob = await Client.open(server.ws_url)
        anon = await Client.open(server.ws_url)
        switcher = await Client.open(server.ws_url)
        expiring = await Client.open(server.ws_url)
        bob_token = make_token("bob", channels=["submission:bob-*", "user:*"])
        assert (await bob.auth(bob_token))["op"] == "authed"
        names = [
            *a_channels,
            "user:alice:x",
            "user:alice ",
            "USER:alice",
            "user:*",
            "submission:*",
            "submission:alice-*",
            "submission:bob-1/../alice-1",
            "submission:bob-",
            "user:Alice",
        ]
        for name in names:
            reply = await bob.subscribe(name)
            if reply["op"] == "subscribed":
                assert name in ("submission:bob-",), reply  # bob's own grant, not alice's
            else:
                refused.append(reply)
            refused.append(await anon.subscribe(name))
            await asyncio.sleep(0.01)  # stay under the command rate limit
        # re-auth: subscribed as alice, then switches to bob -> alice's channels are dropped
        await switcher.auth(make_token("alice", channels=["submission:alice-*"]))
        for name in a_channels:
            assert (await switcher.subscribe(name))["op"] == "subscribed"
        await switcher.auth(make_token("bob"))
        dropped = [await switcher.recv() for _ in a_channels]
        assert {m["channel"] for m in dropped} == set(a_channels), dropped
        assert all(m["op"] == "unsubscribed" and m["reason"] == "forbidden" for m in dropped)
        # expiry: alice's token runs out and no fresh one comes -> dropped after the grace
        await expiring.auth(make_token("alice", channels=["submission:alice-*"], ttl=2))
        for name in a_channels:
            assert (await expiring.subscribe(name))["op"] == "subscribed"
        notice = await expiring.recv(6)
        assert notice["op"] == "error" and notice["code"] == "token_expired", notice
        gone = [await expiring.recv(4) for _ in a_channels]
        assert all(m["op"] == "unsubscribed" and m["reason"] == "token_expired" for m in gone)
        # now alice's events flow; nobody but alice may see them
        loop = asyncio.get_running_loop()
        for name in a_channels:
            envelope = {"channel": name, "type": "secret", "data": {}}
            await loop.run_in_executor(None, functools.partial(server.publish, envelope))
        leaked: list[dict[str, Any]] = []
        for client in (bob, anon, switcher, expiring):
            with pytest.raises(TimeoutError):
                leaked.extend(await client.events(1, timeout=1.0))
            await client.ws.close()
        return leaked

    leaked = asyncio.run(run())
    assert leaked == []
    assert refused and all(r["op"] == "error" for r in refused)
    assert {r["code"] for r in refused} <= {"unauthorized", "forbidden", "bad_request"}


def test_denied_subscription_is_audited(memory_server: ServerProcess) -> None:
    """A refused private subscription leaves a realtime.audit line with user, channel, reason."""

    async def run() -> None:
        async with await Client.open(memory_server.ws_url) as bob:
            await bob.auth(make_token("bob"))
            assert (await bob.subscribe("user:alice"))["code"] == "forbidden"

    asyncio.run(run())
    lines = [line for line in memory_server.log().splitlines() if "realtime.audit" in line]
    assert any(
        "user=bob" in line and "channel=user:alice" in line and "reason=forbidden" in line
        for line in lines
    ), lines


def _ws_status(url: str, **kwargs: Any) -> int:
    async def run() -> int:
        try:
            client = await Client.open(url, **kwargs)
        except websockets.InvalidStatus as exc:
            return exc.response.status_code
        await client.ws.close()
        return 101

    return asyncio.run(run())


def test_disallowed_origin_gets_403(server_factory: Any) -> None:
    """A handshake from an Origin outside the allow-list is refused with 403."""
    server = server_factory(allowed_origins="https://contest.example")
    assert _ws_status(server.ws_url, origin="https://evil.example") == 403
    assert _ws_status(server.ws_url, origin="https://contest.example") == 101
    assert _ws_status(server.ws_url) == 101  # non-browser clients send no Origin


def _post(server: ServerProcess, headers: dict[str, str]) -> int:
    body = json.dumps({"channel": "contest:1", "type": "t", "data": {}}).encode()
    request = urllib.request.Request(server.url + "/api/publish", data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_publish_without_or_with_wrong_key_gets_401(memory_server: ServerProcess) -> None:
    """POST /api/publish needs the API key."""
    assert _post(memory_server, {}) == 401
    assert _post(memory_server, {"Authorization": "Bearer wrong"}) == 401
    assert _post(memory_server, {"Authorization": "test-api-key"}) == 401


def test_publish_disabled_without_api_key_gets_403(server_factory: Any) -> None:
    """With no REALTIME_API_KEY the publish API answers 403."""
    server = server_factory(api_key="")
    assert _post(server, {"Authorization": "Bearer test-api-key"}) == 403


def test_connection_limit_per_process_gives_503(server_factory: Any) -> None:
    """Past REALTIME_MAX_CONNECTIONS the handshake gets 503."""
    server = server_factory(max_connections="5")

    async def run() -> int:
        held = [await Client.open(server.ws_url) for _ in range(5)]
        try:
            await Client.open(server.ws_url)
        except websockets.InvalidStatus as exc:
            return exc.response.status_code
        finally:
            for client in held:
                await client.ws.close()
        return 101

    assert asyncio.run(run()) == 503


def test_connection_limit_per_ip_gives_503(server_factory: Any) -> None:
    """Past REALTIME_MAX_CONNECTIONS_PER_IP one address gets 503; another still connects."""
    server = server_factory(max_connections_per_ip="3")

    async def run() -> tuple[int, int]:
        held = [await Client.open(server.ws_url) for _ in range(3)]
        status = 101
        try:
            await Client.open(server.ws_url)
        except websockets.InvalidStatus as exc:
            status = exc.response.status_code
        other = await Client.open(server.ws_url, local_addr=("127.0.0.2", 0))
        await other.ws.close()
        for client in held:
            await client.ws.close()
        return status, 101

    assert asyncio.run(run()) == (503, 101)
