"""The standings store (``django_bridge.leaderboard``) and the followed contests' store
(``django_bridge.ccs``) on a Redis Cluster and behind Sentinel.

A small contest is recorded through a ``redis+cluster://`` and a ``redis+sentinel://`` URL
and read back (top, row, around); the same verdicts on the shared single Redis give the
expected answers. On the cluster every key of a contest sits in one hash slot, so each
script runs on one shard.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import redis
from redis.crc import key_slot

from django_bridge import redis_client
from django_bridge.ccs.store import ContestStore
from django_bridge.leaderboard import Contest, Leaderboard
from tests.cluster.redis_procs import RedisCluster3x2, SentinelSetup
from tests.conftest import REDIS_URL, require_service

pytestmark = pytest.mark.broker

MIN = 60.0
VERDICTS = [
    ("amy", "A", "WA", 3),
    ("amy", "A", "AC", 9),
    ("bob", "A", "AC", 12),
    ("cat", "B", "AC", 20),
    ("cat", "A", "AC", 25),
    ("dan", "B", "CE", 30),
    ("bob", "B", "WA", 31),
    ("bob", "B", "AC", 40),
    ("eve", "A", "AC", 50),  # after the freeze: on the jury board only until the unfreeze
]


class Sent:
    """Collects what the leaderboard publishes (stands in for the bridge's publish)."""

    def __init__(self) -> None:
        self.channels: list[str] = []

    def __call__(
        self, channel: str, type_: str, data: Any, state: bool = False, version: Any = None
    ) -> None:
        self.channels.append(channel)


def _play(board: Leaderboard, contest: Contest) -> dict[str, Any]:
    for user, problem, result, minute in VERDICTS:
        board.record_verdict(contest, user, problem, result, minute * MIN, submission=None)
    before = {
        "top": board.top(contest, 10),
        "jury": board.top(contest, 10, view="jury"),
        "row": board.row(contest, "bob"),
        "around": board.around(contest, "cat", 1),
        "eve": board.row(contest, "eve"),
    }
    board.unfreeze(contest, notify_users=False)
    return {**before, "after": board.top(contest, 10), "eve_after": board.row(contest, "eve")}


def _reference(prefix: str, contest: Contest) -> dict[str, Any]:
    client = redis.Redis.from_url(require_service(REDIS_URL, 6379))
    board = Leaderboard(client, prefix=prefix, publish=Sent())
    try:
        return _play(board, contest)
    finally:
        board.delete(contest)
        client.close()


@pytest.mark.parametrize("kind", ["cluster", "sentinel"])
def test_a_contest_recorded_and_read_back(kind: str, request: pytest.FixtureRequest) -> None:
    setup: RedisCluster3x2 | SentinelSetup = request.getfixturevalue(
        "redis_cluster" if kind == "cluster" else "sentinel_setup"
    )
    prefix = f"lbt-{uuid.uuid4().hex[:8]}:"
    contest = Contest(id="c1", freeze_at=45 * MIN)
    sent = Sent()
    board = Leaderboard.from_url(setup.url, prefix=prefix, publish=sent)
    got = _play(board, contest)
    assert got == _reference(prefix, contest)
    assert [r["user"] for r in got["top"]] == ["cat", "bob", "amy", "dan"]
    assert got["eve"] is None and got["eve_after"] is not None
    assert "leaderboard:c1" in sent.channels
    if isinstance(setup, RedisCluster3x2):
        # one slot, one shard: every key of the contest is on the slot's owner
        owner = setup.proc(setup.owner_port(key_slot(f"{prefix}{{c1}}:meta".encode())))
        keys: list[bytes] = owner.client().keys(f"{prefix}*")  # type: ignore[assignment]
        assert len(keys) >= 8 and {key_slot(k) for k in keys} == {
            key_slot(f"{prefix}{{c1}}:meta".encode())
        }
    assert board.delete(contest) >= 8
    assert board.top(contest, 10) == []


@pytest.mark.parametrize("kind", ["cluster", "sentinel"])
def test_followed_contest_store(kind: str, request: pytest.FixtureRequest) -> None:
    """The CCS follower's store on the client the bridge builds for the URL."""
    setup: RedisCluster3x2 | SentinelSetup = request.getfixturevalue(
        "redis_cluster" if kind == "cluster" else "sentinel_setup"
    )
    client = redis_client.connect(setup.url, redis_client.STANDINGS_TIMEOUT)
    store = ContestStore(client, "wf", f"ccst-{uuid.uuid4().hex[:8]}:")
    store.put_docs({"scoreboard:public": {"rows": [1, 2]}})
    assert store.doc("scoreboard:public") == b'{"rows":[1,2]}'
    assert store.delete() == 1
    client.close()


def test_standings_url_takes_any_redis_broker_url() -> None:
    """A cluster or sentinel BROKER_URL is the standings' Redis when no other is set."""
    for url in ("redis+cluster://a:7000,b:7001", "redis+sentinel://s:26379/m/0"):
        assert redis_client.standings_url({"BROKER_URL": url}) == url
    assert redis_client.standings_url({"BROKER_URL": "amqp://h/"}) is None
    assert (
        redis_client.standings_url({"BROKER_URL": "redis://a/0", "REDIS_URL": "redis://b/1"})
        == "redis://b/1"
    )
