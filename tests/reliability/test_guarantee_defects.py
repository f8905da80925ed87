"""The delivery-guarantee defects of the outside review, each against a real server.

Each test reproduces one case from the review (issue 13) and failed on the code before the
fix; the seeded simulation (tests/sim) searches for the ones nobody listed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from realtime.brokers import redis_layout
from tests.client import Client
from tests.conftest import TEST_API_KEY, make_token
from tests.reliability.conftest import metric, wait_for
from tests.reliability.rawws import RawClient, frame

COALESCE = """
[namespaces.leaderboard]
access = "public"
coalesce_ms = 400

[namespaces.contest]
access = "public"

[namespaces.user]
access = "user"
"""


def _config(tmp_path: Path, text: str = COALESCE) -> list[str]:
    conf = tmp_path / "realtime.toml"
    conf.write_text(text)
    return ["--config", str(conf)]


async def _drain(client: Client, until: float) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    while time.monotonic() < until:
        try:
            got.append(await client.recv(timeout=max(0.05, until - time.monotonic())))
        except TimeoutError:
            break
    return got


def _positions(messages: list[dict[str, Any]], channel: str) -> list[tuple[str, int]]:
    """What a client's position in ``channel`` went through: (kind, offset) in order."""
    out: list[tuple[str, int]] = []
    for msg in messages:
        if msg.get("channel") != channel:
            continue
        if msg["op"] == "event":
            out.append(("event", msg["offset"]))
        elif msg["op"] == "subscribed":
            kind = "recovered" if msg.get("recovered") else "resync"
            out.append((kind, msg["offset"]))
    return out


def test_coalesced_event_does_not_survive_a_resync(
    server_factory: Any, tmp_path: Path, redis_url: str, prefix: str
) -> None:
    """Defect 1: the old epoch's pending coalesced event must not follow the resync."""
    server = server_factory(broker_url=redis_url, redis_prefix=prefix, args=_config(tmp_path))
    store = redis.Redis.from_url(redis_url)
    channel = "leaderboard:d1"

    async def scenario() -> list[dict[str, Any]]:
        async with await Client.open(server.ws_url) as client:
            await client.subscribe(channel)
            for i in range(5):
                server.publish({"channel": channel, "type": "board", "data": i})
            store.delete(*redis_layout.channel_keys(prefix, channel))  # the store lost it
            for i in range(5):
                server.publish({"channel": channel, "type": "board", "data": 10 + i})
            return await _drain(client, time.monotonic() + 2.0)

    got = [m for m in asyncio.run(scenario()) if m.get("channel") == channel]
    resync_at = max(i for i, m in enumerate(got) if m["op"] == "subscribed")
    after = [(m["offset"], m["data"]) for m in got[resync_at + 1 :] if m["op"] == "event"]
    # nothing of the old epoch (data 0-4) after the resync, and the newest event arrives
    assert all(data >= 10 for _, data in after), got
    assert (after[-1] if after else (got[resync_at]["offset"], None)) in ((5, 14), (5, None))
    assert [o for o, _ in after] == sorted({o for o, _ in after})


def test_subscribing_to_unpublished_channels_leaves_no_store_state(
    server_factory: Any, redis_url: str, prefix: str
) -> None:
    """Defect 3: made-up channel names cost no Redis key; new names are rate-limited."""
    server = server_factory(
        broker_url=redis_url,
        redis_prefix=prefix,
        channel_churn_burst="100",
        channel_churn_rate="1",
        rate_limit="10000",
        rate_burst="10000",
    )
    store = redis.Redis.from_url(redis_url)

    async def scenario() -> list[dict[str, Any]]:
        replies = []
        async with await Client.open(server.ws_url) as client:
            for i in range(120):
                replies.append(
                    await client.request({"op": "subscribe", "channel": f"contest:x{i}"})
                )
                await client.request({"op": "unsubscribe", "channel": f"contest:x{i}"})
        return replies

    replies = asyncio.run(scenario())
    codes = [r.get("code") for r in replies if r["op"] == "error"]
    assert [r["op"] for r in replies[:100]] == ["subscribed"] * 100
    assert codes and set(codes) == {"rate_limited"}, codes
    assert replies[0]["epoch"] == "0" and replies[0]["offset"] == 0
    # (the nodes' watcher-count bookkeeping lives under {presence}: not per channel)
    left = [k for k in store.scan_iter(match=f"{prefix}*", count=1000) if b"{presence}" not in k]
    assert left == []


def test_memory_store_keeps_nothing_for_unpublished_channels(server_factory: Any) -> None:
    """Defect 3 on memory://: made-up names leave no channel behind in the node."""
    memory_server = server_factory(rate_limit="10000", rate_burst="10000")

    async def scenario() -> None:
        async with await Client.open(memory_server.ws_url) as client:
            for i in range(150):
                await client.request({"op": "subscribe", "channel": f"contest:m{i}"})
                await client.request({"op": "unsubscribe", "channel": f"contest:m{i}"})

    asyncio.run(scenario())
    wait_for(lambda: metric(memory_server, "realtime_tracked_channels") == 0, 5)
    assert metric(memory_server, "realtime_stored_channels") == 0


def test_history_with_holes_is_not_relabelled(
    redis_server: Any, redis_url: str, prefix: str
) -> None:
    """Defect 7: an event kept out of history makes recovery say recovered:false."""
    store = redis.Redis.from_url(redis_url)
    script = store.register_script(redis_layout.PUBLISH_SCRIPT)
    channel = "contest:holes"
    for n in range(1, 5):
        keys, args = redis_layout.publish_args(
            prefix,
            channel=channel,
            type_="t",
            data_json=str(n).encode(),
            state=False,
            envelope_id=None,
            history_size=0 if n == 3 else 100,  # a publisher that keeps no history for #3
            history_ttl=600,
            meta_ttl=86400,
            now_ms=int(time.time() * 1000),
        )
        script(keys=keys, args=args)
    epoch = store.hget(f"{prefix}{{{channel}}}:meta", "epoch").decode()

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        async with await Client.open(redis_server.ws_url) as client:
            a = await client.subscribe(channel, since={"epoch": epoch, "offset": 1})
            await client.request({"op": "unsubscribe", "channel": channel})
            b = await client.subscribe(channel, since={"epoch": epoch, "offset": 3})
            return a, b

    from_one, from_three = asyncio.run(scenario())
    # history holds 1, 2, 4: from 1 the client would miss 3, so it must resync
    assert from_one["recovered"] is False and from_one["missed"] == [], from_one
    assert from_three["recovered"] is True
    assert [e["offset"] for e in from_three["missed"]] == [4]


def test_store_rolled_back_under_the_same_epoch_becomes_a_new_epoch(
    redis_server: Any, redis_url: str, prefix: str
) -> None:
    """Defect 5: offsets reused after a rollback are not dropped as already seen."""
    store = redis.Redis.from_url(redis_url)
    channel = "contest:rollback"
    meta, hist, _ = redis_layout.channel_keys(prefix, channel)
    epochs: set[str] = set()

    async def scenario() -> list[dict[str, Any]]:
        async with await Client.open(redis_server.ws_url) as client:
            await client.subscribe(channel)
            for i in range(50):
                answer = redis_server.publish({"channel": channel, "type": "t", "data": i})
                epochs.add(answer["results"][0]["epoch"])
            await client.events(50)
            # what a restart from an older RDB looks like: offset 20, history to 20
            store.hset(meta, "offset", 20)
            store.ltrim(hist, 0, 19)
            for i in range(5):
                redis_server.publish({"channel": channel, "type": "t", "data": 100 + i})
            return await _drain(client, time.monotonic() + 2.0)

    got = asyncio.run(scenario())
    trail = _positions(got, channel)
    assert any(kind == "resync" for kind, _ in trail), trail
    last = next(m for m in reversed(got) if m.get("channel") == channel)
    # the client ends on the new epoch's newest event (offset 25) or a resync at it
    assert last["offset"] == 25, trail
    assert metric(redis_server, "realtime_store_rollbacks_total") >= 1
    assert len(epochs) == 1 and store.hget(meta, "epoch").decode() not in epochs


def test_reauth_with_a_shorter_token_is_enforced(memory_server: Any) -> None:
    """Defect 8: the second, shorter token's expiry counts, not the first one's."""

    async def scenario() -> dict[str, Any]:
        async with await Client.open(memory_server.ws_url) as client:
            await client.auth(make_token("u1", ttl=3600))
            await client.auth(make_token("u1", ttl=2))
            return await client.recv(timeout=5)

    message = asyncio.run(scenario())
    assert message["op"] == "error" and message["code"] == "token_expired"


def test_expired_token_grants_no_new_private_subscription(
    server_factory: Any, tmp_path: Path
) -> None:
    """Defect 11: during the grace period after token_expired, `exp` still counts."""
    server = server_factory(args=_config(tmp_path), heartbeat="30")

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        async with await Client.open(server.ws_url) as client:
            await client.auth(make_token("u1", ttl=2))
            expired = await client.recv(timeout=5)
            reply = await client.request({"op": "subscribe", "channel": "user:u1"})
            return expired, reply

    expired, reply = asyncio.run(scenario())
    assert expired["code"] == "token_expired"
    assert reply["op"] == "error" and reply["code"] == "token_expired", reply


def test_subscribe_unsubscribe_subscribe_answers_once(memory_server: Any) -> None:
    """Defect 12: a StrictMode double mount gets one `subscribed`, for the last command."""
    channel = "contest:strict"
    for i in range(3):
        memory_server.publish({"channel": channel, "type": "t", "data": i, "state": True})

    async def scenario() -> list[dict[str, Any]]:
        raw = RawClient(memory_server.port)
        try:
            raw.next_text()  # welcome
            commands = [
                {"op": "subscribe", "channel": channel, "id": 1},
                {"op": "unsubscribe", "channel": channel, "id": 2},
                {"op": "subscribe", "channel": channel, "id": 3},
            ]
            raw.send(b"".join(frame(1, json.dumps(c).encode()) for c in commands))
            got = []
            deadline = time.monotonic() + 1.5
            while time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):
                    got.append(json.loads(raw.next_text(timeout=0.3)))
                if len(got) >= 2 and not any(g.get("op") == "event" for g in got):
                    memory_server.publish({"channel": channel, "type": "t", "data": 9})
            return got
        finally:
            raw.close()

    got = asyncio.run(scenario())
    subscribed = [m for m in got if m["op"] == "subscribed"]
    assert [m.get("id") for m in subscribed] == [3], got
    assert [m["offset"] for m in got if m["op"] == "event"] == [4], got


def test_binary_frames_are_rate_limited(memory_server: Any) -> None:
    """Defect 13: a binary flood is closed with 1008 like a text flood."""
    raw = RawClient(memory_server.port)
    try:
        raw.next_text()
        raw.send(b"".join(frame(2, b"x") for _ in range(3000)))
        _, code = raw.messages_until_close(timeout=10)
    finally:
        raw.close()
    assert code == 1008


@pytest.mark.parametrize("name", ["contest:42\n", "contest:42\r\n", "\ncontest:42"])
def test_channel_names_with_line_breaks_are_refused(memory_server: Any, name: str) -> None:
    """Defect 14: a trailing newline is not a distinct channel."""

    async def scenario() -> dict[str, Any]:
        async with await Client.open(memory_server.ws_url) as client:
            return await client.request({"op": "subscribe", "channel": name})

    reply = asyncio.run(scenario())
    assert reply["op"] == "error" and reply["code"] == "bad_request"


def test_large_missed_list_is_not_a_slow_consumer(
    server_factory: Any, redis_url: str, prefix: str
) -> None:
    """Defect 10: a recovery reply bigger than the send buffer does not close the client."""
    server = server_factory(broker_url=redis_url, redis_prefix=prefix, max_send_buffer="65536")
    channel = "contest:bigmissed"
    blob = "x" * 3000
    first = server.publish({"channel": channel, "type": "t", "data": blob})["results"][0]
    for _ in range(59):
        server.publish({"channel": channel, "type": "t", "data": blob, "state": True})

    async def scenario() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        async with await Client.open(server.ws_url) as client:
            reply = await client.subscribe(channel, since={"epoch": first["epoch"], "offset": 0})
            server.publish({"channel": channel, "type": "t", "data": "after"})
            return reply, await _drain(client, time.monotonic() + 1.0)

    reply, rest = asyncio.run(scenario())
    # 180 KB of missed events would be most of the 64 KiB buffer: the reply resyncs instead
    assert reply["recovered"] is False and reply["offset"] == 60
    assert reply["state"]["offset"] == 60
    assert [m["offset"] for m in rest if m["op"] == "event"] == [61]


def test_amqp_duplicate_publish_is_still_sent(
    server_factory: Any, amqp_url: str, exchange: str, redis_url: str, prefix: str
) -> None:
    """Defect 2 (server): an event stored but never sent goes out when the publish is retried."""
    server = server_factory(
        broker_url=amqp_url, amqp_exchange=exchange, redis_url=redis_url, redis_prefix=prefix
    )
    store = redis.Redis.from_url(redis_url)
    script = store.register_script(redis_layout.PUBLISH_SCRIPT)
    channel = "contest:dup"

    async def scenario() -> tuple[list[dict[str, Any]], dict[str, Any]]:
        async with await Client.open(server.ws_url) as client:
            await client.subscribe(channel)
            # stored by a publisher whose AMQP send then failed
            keys, args = redis_layout.publish_args(
                prefix,
                channel=channel,
                type_="judge.verdict",
                data_json=b'"AC"',
                state=True,
                envelope_id="verdict-1",
                history_size=100,
                history_ttl=600,
                meta_ttl=86400,
                now_ms=int(time.time() * 1000),
                do_publish=False,
            )
            script(keys=keys, args=args)
            answer = server.publish(
                {"channel": channel, "type": "judge.verdict", "data": "AC", "id": "verdict-1"}
            )
            return await client.events(1, timeout=5), answer

    events, answer = asyncio.run(scenario())
    assert answer["results"][0]["duplicate"] is True
    assert [(e["offset"], e["data"]) for e in events] == [(1, "AC")]


def test_raw_amqp_envelope_with_a_redis_store_is_numbered_not_dropped(
    server_factory: Any, amqp_url: str, exchange: str, redis_url: str, prefix: str
) -> None:
    """Defect 15: a site that forgot REDIS_URL still gets its events delivered, loudly."""
    import pika

    from realtime.brokers import amqp_layout
    from realtime.envelope import Envelope

    servers = [
        server_factory(
            broker_url=amqp_url, amqp_exchange=exchange, redis_url=redis_url, redis_prefix=prefix
        )
        for _ in range(2)
    ]
    channel = "contest:raw"

    async def scenario() -> list[list[dict[str, Any]]]:
        async with (
            await Client.open(servers[0].ws_url) as a,
            await Client.open(servers[1].ws_url) as b,
        ):
            await a.subscribe(channel)
            await b.subscribe(channel)
            connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
            try:
                ch = connection.channel()
                for n in range(3):
                    envelope = Envelope(channel, "t", json.dumps(n).encode(), False, f"raw-{n}")
                    ch.basic_publish(
                        exchange, amqp_layout.routing_key(channel), amqp_layout.encode_raw(envelope)
                    )
            finally:
                connection.close()
            return [await a.events(3), await b.events(3)]

    got = asyncio.run(scenario())
    for events in got:
        assert [(e["offset"], e["data"]) for e in events] == [(1, 0), (2, 1), (3, 2)]
    _, body = servers[0].get("/healthz")
    assert b"REDIS_URL" in body
    counted = [
        line
        for s in servers
        for line in s.get("/metrics")[1].decode().splitlines()
        if line.startswith('realtime_misconfigured_total{reason="raw_envelope_with_redis_store"}')
    ]
    assert counted and max(float(line.split()[1]) for line in counted) >= 1
    assert TEST_API_KEY  # the HTTP API was not involved: the envelopes came over AMQP
