"""A refused Origin is logged and counted; ``--dev`` admits local origins; ``GET /api/info``."""

from __future__ import annotations

import json
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.conftest import TEST_API_KEY, TEST_SECRET, ServerProcess
from tests.ops.conftest import scrape, wait_for


def _handshake(server: ServerProcess, origin: str) -> int:
    """Open /ws with ``origin``; return 101 on success or the refusal's HTTP status."""
    try:
        with connect(server.ws_url, origin=origin, open_timeout=5) as ws:  # type: ignore[arg-type]
            assert json.loads(ws.recv(timeout=5))["op"] == "welcome"
            return 101
    except InvalidStatus as exc:
        return int(exc.response.status_code)


def test_refused_origin_is_logged_once_and_counted(server_factory: Any) -> None:
    """Five refusals of one Origin: 403 each, the counter says 5, the log has one line."""
    server: ServerProcess = server_factory()
    origin = "http://127.0.0.1:8000"  # Django's runserver: another port is another origin
    assert [_handshake(server, origin) for _ in range(5)] == [403] * 5
    samples = scrape(server)
    assert samples["realtime_refused_origins_total"] == 5
    lines = wait_for(
        lambda: [line for line in server.log().splitlines() if "refused WebSocket" in line],
        what="the refusal log line",
    )
    assert len(lines) == 1, lines
    assert repr(origin) in lines[0] and "REALTIME_ALLOWED_ORIGINS" in lines[0]
    assert _handshake(server, server.url) == 101  # its own origin is fine


def test_allow_list_admits_listed_origin_only(server_factory: Any) -> None:
    """With REALTIME_ALLOWED_ORIGINS the listed origin connects, others get 403."""
    server: ServerProcess = server_factory(allowed_origins="https://judge.example.com")
    assert _handshake(server, "https://judge.example.com") == 101
    assert _handshake(server, "https://evil.example.com") == 403
    assert scrape(server)["realtime_refused_origins_total"] == 1


@pytest.mark.parametrize(
    "origin,status",
    [
        ("http://127.0.0.1:8000", 101),
        ("http://localhost:3000", 101),
        ("http://[::1]:8000", 101),
        ("http://judge.localhost:8000", 101),
        ("http://192.168.1.5:8000", 403),
        ("https://evil.example.com", 403),
    ],
)
def test_dev_admits_local_origins(server_factory: Any, origin: str, status: int) -> None:
    """--dev admits pages served from this machine on any port, nothing else."""
    server: ServerProcess = server_factory(args=["--dev"])
    assert _handshake(server, origin) == status


def test_dev_has_documented_secret_and_api_key(server_factory: Any) -> None:
    """--dev without secret/key: the documented ones work (DEPLOY.md Step 0)."""
    from realtime.config import DEMO_SECRET, DEV_API_KEY

    server: ServerProcess = server_factory(args=["--dev"], secret="", api_key="")
    assert len(DEMO_SECRET) >= 32
    answer = server.publish({"channel": "contest:1", "type": "t", "data": 1}, key=DEV_API_KEY)
    assert answer["results"][0]["offset"] == 1


def test_api_info_describes_server_without_secrets(
    server_factory: Any, redis_url: str, prefix: str
) -> None:
    """/api/info: version, protocol, broker/store kinds, history, namespaces; no secrets."""
    server: ServerProcess = server_factory(broker_url=redis_url, redis_prefix=prefix)
    status, body = server.get("/api/info")
    assert status == 200
    info = json.loads(body)
    from realtime import __version__

    assert (info["version"], info["protocol"]) == (__version__, 1)
    assert (info["broker"], info["store"], info["redis_prefix"]) == ("redis", "redis", prefix)
    assert info["history"] == {"size": 100, "ttl": 600, "meta_ttl": 86400}
    assert info["namespaces"]["submission"] == {"access": "granted", "coalesce_ms": 0}
    assert info["namespaces"]["leaderboard"]["coalesce_ms"] == 500
    assert TEST_SECRET.encode() not in body and TEST_API_KEY.encode() not in body
    assert b"127.0.0.1:6379" not in body  # no addresses either


def test_api_info_amqp_store_kind(server_factory: Any, amqp_url: str, exchange: str) -> None:
    """amqp:// without REALTIME_REDIS_URL reports a memory store (raw envelopes expected)."""
    server: ServerProcess = server_factory(broker_url=amqp_url, amqp_exchange=exchange, start=False)
    server.start(wait_healthy=False)
    info = json.loads(server.get("/api/info")[1])
    assert (info["broker"], info["store"], info["amqp_exchange"]) == ("amqp", "memory", exchange)
    assert b"guest" not in json.dumps(info).encode()
