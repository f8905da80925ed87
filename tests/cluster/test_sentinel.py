"""A server and the bridge on ``redis+sentinel://`` (1 primary, 1 replica, 3 sentinels).

The primary is SIGKILLed while events flow: the sentinels promote the replica, /healthz is
503 while there is no primary, the nodes follow the new one, and every client ends with
every event or a resync notice.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from django_bridge import conf
from django_bridge.transports import RedisTransport
from realtime.envelope import Envelope
from tests.cluster.flow import Publisher, Recorder, check, settle, stored, wait_healthy
from tests.cluster.redis_procs import SentinelSetup

pytestmark = pytest.mark.broker


@pytest.fixture
def sprefix() -> str:
    return f"rts:{uuid.uuid4().hex[:8]}:"


def test_server_and_bridge_find_the_primary(
    sentinel_setup: SentinelSetup, server_factory: Any, sprefix: str
) -> None:
    """Events from the bridge and the HTTP API reach a client; the store is the primary's."""
    server = server_factory(broker_url=sentinel_setup.url, redis_prefix=sprefix)
    raw = {**conf.DEFAULTS, "BROKER_URL": sentinel_setup.url, "PREFIX": sprefix}
    transport = RedisTransport(conf._parse(raw))

    async def scenario() -> list[int]:
        rec = await Recorder.open(server.ws_url, ["contest:s1"])
        await asyncio.to_thread(
            transport.send, [Envelope("contest:s1", "t", b"%d" % i) for i in range(5)]
        )
        server.publish(*[{"channel": "contest:s1", "type": "t", "data": i} for i in range(5)])
        await settle([rec], quiet=0.5)
        await rec.close()
        return rec.offsets("contest:s1")

    assert asyncio.run(scenario()) == list(range(1, 11))
    assert transport.check().startswith("redis at ")
    transport.close()
    primary = sentinel_setup.primary_proc().client()
    assert stored(primary, sprefix, "contest:s1")[0] == 10
    assert server.get("/healthz")[0] == 200


def test_primary_killed_while_events_flow(
    sentinel_setup: SentinelSetup, server_factory: Any, sprefix: str
) -> None:
    """SIGKILL the primary: 503 while none, then the promoted replica; nothing lost silently."""
    channels = [f"contest:s{i}" for i in range(4)]
    servers = [
        server_factory(broker_url=sentinel_setup.url, redis_prefix=sprefix, history_size="1000")
        for _ in range(2)
    ]
    victim = sentinel_setup.primary_proc()
    publisher = Publisher(servers, channels, count=150, pause=0.02)
    statuses: list[int] = []

    async def scenario() -> list[Recorder]:
        recorders = [await Recorder.open(s.ws_url, channels) for s in servers]
        publisher.start()
        await asyncio.sleep(1.0)
        victim.kill()
        while publisher.is_alive():
            statuses.append((await asyncio.to_thread(servers[0].get, "/healthz"))[0])
            await asyncio.sleep(0.1)
        await wait_healthy(servers)
        await settle(recorders, quiet=3.0)
        for rec in recorders:
            await rec.close()  # the servers then stop at once
        return recorders

    try:
        recorders = asyncio.run(scenario())
        assert publisher.error is None, publisher.error
        assert 503 in statuses, statuses  # no primary for a while
        assert sentinel_setup.primary_port() != victim.port
        primary = sentinel_setup.primary_proc().client()
        for name in channels:
            final, data = stored(primary, sprefix, name)
            assert final >= 150
            for rec in recorders:
                check(rec, name, final, data)
    finally:
        victim.start()  # the sentinels make it a replica of the new primary
        sentinel_setup.wait_replicated(timeout=30)
