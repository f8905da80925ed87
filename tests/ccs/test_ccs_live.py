"""WebSocket watchers of a real server see a followed feed's judge progress and standings.

A real ``realtime serve`` (redis broker) gets the follower's events through its HTTP
publish API while browsers-to-be (WebSocket clients) watch the contest, the public board,
one submission and one team.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import redis
from websockets.sync.client import ClientConnection, connect

from django_bridge.ccs.follower import Follower
from django_bridge.ccs.http import follow
from django_bridge.ccs.store import ContestStore
from django_bridge.leaderboard import Leaderboard
from tests.ccs.feedgen import generate
from tests.ccs.feedserver import Feed, FeedServer
from tests.conftest import ServerProcess, make_token

pytestmark = pytest.mark.broker


class Watcher:
    """A WebSocket client that subscribes and keeps every event it receives."""

    def __init__(self, url: str, token: str, channels: list[str]) -> None:
        self._stack = contextlib.ExitStack()
        self.conn: ClientConnection = self._stack.enter_context(connect(url, open_timeout=5))
        self.events: list[dict[str, Any]] = []
        self.states: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._read_until(lambda m: m["op"] == "welcome")
        self.conn.send(orjson.dumps({"op": "auth", "token": token}).decode())
        assert self._read_until(lambda m: m["op"] in ("authed", "error"))["op"] == "authed"
        for channel in channels:
            self.conn.send(orjson.dumps({"op": "subscribe", "channel": channel}).decode())
            reply = self._read_until(lambda m, c=channel: m.get("channel") == c and "op" in m)
            assert reply["op"] == "subscribed", reply
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read_until(self, match: Any) -> dict[str, Any]:
        while True:
            for line in str(self.conn.recv(timeout=5)).split("\n"):
                if line.strip():
                    message = orjson.loads(line)
                    if match(message):
                        return message  # type: ignore[no-any-return]

    def _read(self) -> None:
        try:
            for frame in self.conn:
                for line in str(frame).split("\n"):
                    if line.strip():
                        message = orjson.loads(line)
                        if message.get("op") == "event":
                            with self._lock:
                                self.events.append(message)
        except Exception:
            return

    def on(self, channel: str) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.events if e["channel"] == channel]

    def close(self) -> None:
        self._stack.close()
        self._thread.join(5)


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(redis_url)
    yield conn
    conn.close()


def wait_for(predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_watchers_see_progress_and_standings(
    redis_server: ServerProcess, client: redis.Redis, prefix: str
) -> None:
    contest = generate(seed=31, submissions=150, rejudges=5)
    lines = contest.lines("2023-06")
    # a submission judged on many tests and never rejudged, and its team
    sid = max(
        (s for s in contest.truth if s not in contest.rejudged),
        key=lambda s: sum(
            1
            for e in contest.events
            if e.type == "runs"
            and e.data["judgement_id"]
            in {
                j.id
                for j in contest.events
                if j.type == "judgements" and j.data["submission_id"] == s
            }
        ),
    )
    team, _, _, verdict = contest.truth[sid]

    def publish(
        channel: str,
        type_: str,
        data: Any,
        state: bool = False,
        *,
        envelope_id: str | None = None,
        version: int | None = None,
    ) -> None:
        envelope: dict[str, Any] = {"channel": channel, "type": type_, "data": data, "state": state}
        if envelope_id is not None:
            envelope["id"] = envelope_id
        if version is not None:
            envelope["version"] = version
        redis_server.publish(envelope)

    board = Leaderboard(client, prefix=f"{prefix}lb:", publish=publish)
    follower = Follower(
        "wf", ContestStore(client, "wf", prefix=f"{prefix}ccs:"), board, publish=publish
    )
    public = Watcher(redis_server.ws_url, make_token("viewer"), ["contest:wf", "leaderboard:wf"])
    judge = Watcher(
        redis_server.ws_url,
        make_token(team, channels=[f"submission:{sid}"]),
        [f"submission:{sid}", f"user:{team}"],
    )
    server = FeedServer(Feed("wf", lines, drop_after=len(lines) // 3))
    try:
        follow(server.base, follower, read_timeout=10)
        wait_for(
            lambda: any(e["type"] == "leaderboard.snapshot" for e in public.on("leaderboard:wf"))
        )
        wait_for(lambda: any(e["type"] == "judge.verdict" for e in judge.on(f"submission:{sid}")))
    finally:
        server.close()
        public.close()
        judge.close()

    # judge progress, test by test, then the verdict
    steps = judge.on(f"submission:{sid}")
    assert steps[0]["type"] == "judge.queued"
    tests = [e["data"]["test"] for e in steps if e["type"] == "judge.running"]
    assert len(tests) >= 2 and tests == sorted(tests)
    assert steps[-1]["type"] == "judge.verdict" and steps[-1]["data"]["verdict"] == verdict
    judged = [e["data"] for e in judge.on(f"user:{team}") if e["type"] == "submission.judged"]
    assert any(d["submission"] == sid and d["verdict"] == verdict for d in judged)
    # contest state, in order
    statuses = [e["data"]["status"] for e in public.on("contest:wf")]
    order = ["started", "frozen", "ended", "thawed", "finalized"]
    assert [s for s in order if s in statuses] == order
    assert [statuses.index(s) for s in order] == sorted(statuses.index(s) for s in order)
    # standings: live deltas during the contest, and the final board after the thaw
    boards = public.on("leaderboard:wf")
    # the channel is coalesced (at most one frame per 500 ms): a few self-sufficient boards,
    # each newer than the one before
    deltas = [e["data"]["v"] for e in boards if e["type"] == "leaderboard.delta"]
    assert len(deltas) >= 2 and deltas == sorted(set(deltas))
    final = boards[-1]["data"]
    assert final["top"] == board.snapshot(follower.board_contest())["top"]
    assert final["unfrozen"] is True
