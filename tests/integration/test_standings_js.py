"""The browser's StandingsView (static/standings.js, run by Node) against the real board.

The seeded scenario of ``test_standings_view``: verdicts recorded in real Redis, their moves
fed to each JavaScript view in a shuffled order, its reads answered by
``Leaderboard.window``; at checkpoints every track must equal a fresh read of the board.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from django_bridge.leaderboard import Contest, Leaderboard
from tests.conftest import REDIS_URL, require_service
from tests.integration.test_standings_view import Moves

DRIVER = Path(__file__).with_name("standings_node_driver.js")


class NodeViews:
    """A Node process holding JavaScript StandingsViews, spoken to in JSON lines."""

    def __init__(self) -> None:
        node = shutil.which("node")
        if node is None:
            pytest.fail("node is required to test static/standings.js")
        self.proc = subprocess.Popen(
            [node, str(DRIVER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )

    def call(self, **cmd: Any) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(orjson.dumps(cmd) + b"\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, "the node driver died"
        return orjson.loads(line)["out"]

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(5)


@pytest.fixture
def node() -> Iterator[NodeViews]:
    views = NodeViews()
    yield views
    views.close()


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    conn: redis.Redis = redis.Redis.from_url(require_service(REDIS_URL, 6379))
    yield conn
    conn.close()


def _strip(rows: list[dict[str, Any]] | None) -> list[tuple[Any, ...]]:
    assert rows is not None
    return [(r["rank"], r["user"], r["key"]) for r in rows]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("rules", ["icpc", "ioi"])
def test_javascript_view_follows_the_board(
    node: NodeViews, client: redis.Redis, seed: int, rules: str
) -> None:
    """Own row, a page and the rows around the viewer stay equal to the board."""
    rng = random.Random(seed)
    prefix = f"test-sjs-{uuid.uuid4().hex[:8]}:"
    moves = Moves()
    board = Leaderboard(client, prefix=prefix, publish=moves)
    contest = Contest(id="j", rules=rules, top_n=10)  # type: ignore[arg-type]
    users = [f"u{i:02d}" for i in range(50)]
    pages = {}
    for i in range(6):
        pages[i] = (rng.randrange(0, 40), 10)
        node.call(op="new", id=i, me=users[i * 7], start=pages[i][0], size=10, margin=3, k=2)
    try:
        delivered = 0
        for step in range(300):
            result: Any = rng.choice(["AC", "WA"]) if rules == "icpc" else rng.randint(0, 100)
            board.record_verdict(contest, rng.choice(users), rng.choice("ABC"), result, step * 9.5)
            if step % 30 != 29:
                continue
            batch, delivered = moves.events[delivered:], len(moves.events)
            v = board.snapshot(contest)["v"]
            for i in pages:
                shuffled = batch[:]
                rng.shuffle(shuffled)
                for event in shuffled:
                    node.call(op="feed", id=i, event=event)
                for name, query in node.call(op="requests", id=i).items():
                    node.call(op="load", id=i, name=name, window=board.window(contest, **query))
                me = users[i * 7]
                shown = {
                    "own": {"around": me, "k": 0},
                    "page": {"start": pages[i][0], "count": 10},
                    "around": {"around": me, "k": 2},
                }
                for name, query in shown.items():
                    assert node.call(op="version", id=i, name=name) == v
                    want = board.window(contest, **query)["rows"]
                    got = node.call(op="rows", id=i, name=name)
                    assert _strip(got) == _strip(want), f"seed {seed} step {step} view {i} {name}"
    finally:
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            client.unlink(key)
