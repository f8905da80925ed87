"""The control API and /admin/stats against real server processes (memory, Redis, workers)."""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from tests.client import Client
from tests.conftest import TEST_API_KEY, ServerProcess, make_token
from tests.ops.conftest import wait_for


def call(
    server: ServerProcess,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    key: str | None = TEST_API_KEY,
) -> tuple[int, Any]:
    """Send a request; return (status, decoded JSON body or None)."""
    all_headers = {"Authorization": f"Bearer {key}"} if key else {}
    all_headers.update(headers or {})
    data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
    request = urllib.request.Request(
        server.url + path, data=data, method=method, headers=all_headers
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw


async def authed(server: ServerProcess, user: str, channels: list[str] | None = None) -> Client:
    client = await Client.open(server.ws_url)
    reply = await client.auth(make_token(user, channels))
    assert reply["op"] == "authed", reply
    return client


async def next_op(client: Client, op: str, timeout: float = 5.0) -> dict[str, Any]:
    while True:
        message = await client.recv(timeout)
        if message["op"] == op:
            return message


def test_disconnect_closes_only_that_users_connections(memory_server: ServerProcess) -> None:
    """Every connection of the user is closed with 1008 and the reason; others stay."""

    async def scenario() -> None:
        alice = [await authed(memory_server, "alice") for _ in range(3)]
        bob = await authed(memory_server, "bob")
        status, answer = call(
            memory_server, "POST", "/api/users/alice/disconnect", {"reason": "banned"}
        )
        assert status == 202 and answer["ordered"] == "disconnect", answer
        for client in alice:
            assert await client.closed_code() == 1008
            assert client.ws.close_reason == "banned"
        assert (await bob.subscribe("contest:1"))["op"] == "subscribed"
        await bob.ws.close()

    asyncio.run(scenario())


def test_revoke_drops_private_subscriptions_and_identity(memory_server: ServerProcess) -> None:
    """Private subscriptions go (reason revoked), public ones keep flowing, no re-subscribe."""

    async def scenario() -> None:
        async with await authed(memory_server, "carol", ["submission:7"]) as carol:
            for channel in ("user:carol", "submission:7", "contest:3"):
                assert (await carol.subscribe(channel))["op"] == "subscribed"
            status, _ = call(memory_server, "POST", "/api/users/carol/revoke")
            assert status == 202
            dropped = {(await next_op(carol, "unsubscribed"))["channel"] for _ in range(2)}
            assert dropped == {"user:carol", "submission:7"}
            memory_server.publish({"channel": "contest:3", "type": "t", "data": {"n": 1}})
            (event,) = await carol.events(1)
            assert event["channel"] == "contest:3"
            again = await carol.subscribe("user:carol")
            assert again["op"] == "error" and again["code"] == "unauthorized", again

    asyncio.run(scenario())


def test_a_revoked_user_cannot_come_back_with_the_old_token(memory_server: ServerProcess) -> None:
    """Revoke and disconnect refuse the tokens issued until then; a newer token works."""
    import time

    async def scenario() -> None:
        old = make_token("erin", iat=int(time.time()) - 5)
        async with await Client.open(memory_server.ws_url) as erin:
            assert (await erin.auth(old))["op"] == "authed"
            assert call(memory_server, "POST", "/api/users/erin/revoke")[0] == 202
            await asyncio.sleep(0.3)  # the order travels through the broker
            again = await erin.auth(old)
            assert again["op"] == "error" and again["code"] == "forbidden", again
            assert (await erin.subscribe("user:erin"))["code"] == "unauthorized"
        assert call(memory_server, "POST", "/api/users/frank/disconnect")[0] == 202
        await asyncio.sleep(0.3)
        async with await Client.open(memory_server.ws_url) as frank:
            refused = await frank.auth(make_token("frank", iat=int(time.time()) - 5))
            assert refused["op"] == "error" and refused["code"] == "forbidden", refused
            await asyncio.sleep(1.1)  # a token minted after the order (iat has seconds)
            fresh = await frank.auth(make_token("frank", iat=int(time.time())))
            assert fresh["op"] == "authed", fresh

    asyncio.run(scenario())


def test_revoke_listed_channels_only(memory_server: ServerProcess) -> None:
    """With a channel list, only those subscriptions are dropped."""

    async def scenario() -> None:
        async with await authed(memory_server, "dave", ["submission:*"]) as dave:
            for channel in ("submission:1", "submission:2"):
                assert (await dave.subscribe(channel))["op"] == "subscribed"
            status, _ = call(
                memory_server, "POST", "/api/users/dave/revoke", {"channels": ["submission:1"]}
            )
            assert status == 202
            message = await next_op(dave, "unsubscribed")
            assert (message["channel"], message["reason"]) == ("submission:1", "revoked")
            memory_server.publish({"channel": "submission:2", "type": "t", "data": {}})
            assert (await dave.events(1))[0]["channel"] == "submission:2"

    asyncio.run(scenario())


def test_channel_read_gives_position_state_and_history(memory_server: ServerProcess) -> None:
    """GET /api/channels/<name> answers epoch, offset, the state event and recent history."""
    for n in range(5):
        memory_server.publish(
            {"channel": "contest:9", "type": "contest.tick", "data": {"n": n}, "state": n == 3}
        )
    status, answer = call(memory_server, "GET", "/api/channels/contest:9?history=3")
    assert status == 200, answer
    assert answer["offset"] == 5 and answer["epoch"]
    assert answer["state"]["data"] == {"n": 3} and answer["state"]["offset"] == 4
    assert [e["offset"] for e in answer["history"]] == [3, 4, 5]
    assert [e["data"]["n"] for e in answer["history"]] == [2, 3, 4]
    status, empty = call(memory_server, "GET", "/api/channels/contest:none")
    assert status == 200 and empty["offset"] == 0 and empty["history"] == []


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/users/alice/disconnect"),
        ("POST", "/api/users/alice/revoke"),
        ("GET", "/api/channels/contest:1"),
    ],
)
def test_control_api_needs_the_api_key(
    memory_server: ServerProcess, server_factory: Any, method: str, path: str
) -> None:
    """401 without or with a wrong key; 403 when the server has no API key at all."""
    assert call(memory_server, method, path, key=None)[0] == 401
    assert call(memory_server, method, path, key="wrong")[0] == 401
    keyless = server_factory(api_key="")
    assert call(keyless, method, path)[0] == 403


def test_control_api_rejects_bad_input(memory_server: ServerProcess) -> None:
    """Malformed bodies, channel lists and names are refused with 400."""
    assert call(memory_server, "POST", "/api/users/a/revoke", {"channels": "x"})[0] == 400
    assert call(memory_server, "POST", "/api/users/a/revoke", {"channels": ["a b"]})[0] == 400
    assert call(memory_server, "POST", "/api/users/a/disconnect", {"reason": 5})[0] == 400
    assert call(memory_server, "GET", "/api/channels/no%20pe")[0] == 400
    assert call(memory_server, "GET", "/api/channels/contest:1?history=x")[0] == 400


def test_admin_page_is_off_by_default(memory_server: ServerProcess) -> None:
    """/admin and /admin/stats answer 404 unless REALTIME_ADMIN is on."""
    assert call(memory_server, "GET", "/admin")[0] == 404
    assert call(memory_server, "GET", "/admin/stats")[0] == 404


def test_admin_page_needs_api_key_or_basic_auth(server_factory: Any) -> None:
    """Bearer API key or basic auth with the admin password; anything else 401."""
    server = server_factory(admin="true", admin_password="s3cret-pass")
    assert call(server, "GET", "/admin/stats", key=None)[0] == 401
    basic = {"Authorization": "Basic " + base64.b64encode(b"ops:wrong").decode()}
    assert call(server, "GET", "/admin/stats", headers=basic, key=None)[0] == 401
    basic = {"Authorization": "Basic " + base64.b64encode(b"ops:s3cret-pass").decode()}
    assert call(server, "GET", "/admin/stats", headers=basic, key=None)[0] == 200
    assert call(server, "GET", "/admin/stats")[0] == 200
    status, page = call(server, "GET", "/admin")
    assert status == 200 and b"/admin/stats" in page


@pytest.fixture
def cluster(server_factory: Any, redis_url: str, prefix: str) -> list[ServerProcess]:
    """Two nodes on the shared Redis (one prefix): one with two workers, one single."""
    common = {"broker_url": redis_url, "redis_prefix": prefix, "admin": "true"}
    return [server_factory(workers="2", **common), server_factory(**common)]


def overview(server: ServerProcess) -> dict[str, Any]:
    status, stats = call(server, "GET", "/admin/stats")
    assert status == 200, stats
    result: dict[str, Any] = stats
    return result


def test_stats_and_orders_reach_every_worker_and_node(cluster: list[ServerProcess]) -> None:
    """Each node's /admin/stats lists all three workers; a disconnect reaches all of them."""
    multi, single = cluster

    def three_workers(server: ServerProcess) -> dict[str, Any] | None:
        stats = overview(server)
        workers = [w for node in stats["nodes"] for w in node["workers"]]
        return stats if len(stats["nodes"]) == 2 and len(workers) == 3 else None

    async def scenario() -> None:
        # enough connections that the kernel gives both workers of the first node some
        clients = [await authed(multi, "eve") for _ in range(8)]
        clients.append(await authed(single, "eve"))
        watchers = [await Client.open(node.ws_url) for node in (multi, single)]
        for watcher in watchers:
            assert (await watcher.subscribe("contest:busy"))["op"] == "subscribed"

        def spread() -> dict[str, Any] | None:
            stats = three_workers(multi)
            if stats is None:
                return None
            counts = [w["connections"] for node in stats["nodes"] for w in node["workers"]]
            return stats if all(c > 0 for c in counts) and sum(counts) == 11 else None

        stats = wait_for(spread, timeout=15, what="every worker with connections")
        assert stats["totals"]["connections"] == 11
        assert {"channel": "contest:busy", "subscribers": 2} in stats["busiest_channels"]
        assert three_workers(single) is not None
        status, _ = call(single, "POST", "/api/users/eve/disconnect")
        assert status == 202
        codes = await asyncio.gather(*(client.closed_code(10) for client in clients))
        assert codes == [1008] * len(clients)
        for watcher in watchers:
            await watcher.ws.close()

    wait_for(lambda: three_workers(multi), timeout=15, what="three workers on two nodes")
    asyncio.run(scenario())


def test_disconnect_reaches_another_node_over_rabbitmq(
    server_factory: Any, exchange: str, amqp_url: str
) -> None:
    """On the amqp broker too, an order given to one node closes the user's client on another."""
    nodes = [server_factory(broker_url=amqp_url, amqp_exchange=exchange) for _ in range(2)]

    async def scenario() -> None:
        victim = await authed(nodes[0], "frank")
        bystander = await authed(nodes[0], "grace")
        status, _ = call(nodes[1], "POST", "/api/users/frank/disconnect")
        assert status == 202
        assert await victim.closed_code() == 1008
        assert (await bystander.subscribe("contest:1"))["op"] == "subscribed"
        await bystander.ws.close()

    asyncio.run(scenario())


def test_malformed_control_events_are_ignored(memory_server: ServerProcess) -> None:
    """Junk published on the control channel (with the API key) breaks nothing."""
    for data in ([1, 2], {"no": "user"}, {"user": "x", "channels": "all"}, {"pid": "abc"}):
        for kind in ("admin.disconnect", "admin.revoke", "admin.stats", "admin.other"):
            memory_server.publish({"channel": "rtadmin:control", "type": kind, "data": data})

    async def scenario() -> None:
        victim = await authed(memory_server, "henry")
        assert call(memory_server, "POST", "/api/users/henry/disconnect")[0] == 202
        assert await victim.closed_code() == 1008

    asyncio.run(scenario())
    assert "Traceback" not in memory_server.log()


def test_clients_cannot_subscribe_to_the_control_channel(memory_server: ServerProcess) -> None:
    """rtadmin:control is no namespace of the contract: subscribing is refused."""

    async def scenario() -> None:
        async with await Client.open(memory_server.ws_url) as client:
            reply = await client.subscribe("rtadmin:control")
            assert reply["op"] == "error" and reply["code"] == "unknown_channel", reply

    asyncio.run(scenario())
