"""Leaderboard channels coalesce; a slow leaderboard watcher skips ahead instead of being cut."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from tests.client import Client, masked_text, raw_ws, read_frames

CONFIG = """
[namespaces.leaderboard]
access = "public"
coalesce_ms = {ms}

[namespaces.contest]
access = "public"
"""


def server_with_coalesce(server_factory: Any, tmp_path: Path, ms: int, **settings: str) -> Any:
    conf = tmp_path / "realtime.toml"
    conf.write_text(CONFIG.format(ms=ms))
    return server_factory(args=["--config", str(conf)], **settings)


def test_burst_costs_a_watcher_a_few_frames(server_factory: Any, tmp_path: Path) -> None:
    """300 events in ~1.5 s at a 500 ms window: a handful of frames, ending at the latest."""
    server = server_with_coalesce(server_factory, tmp_path, 500)

    async def scenario() -> tuple[list[int], list[int]]:
        async with (
            await Client.open(server.ws_url) as board,
            await Client.open(server.ws_url) as feed,
        ):
            await board.subscribe("leaderboard:1")
            await feed.subscribe("contest:1")
            start = time.monotonic()
            for i in range(30):
                server.publish(*[{"channel": "leaderboard:1", "type": "t", "data": i}] * 10)
                server.publish({"channel": "contest:1", "type": "t", "data": i})
                await asyncio.sleep(0.05)
            elapsed = time.monotonic() - start
            got: list[int] = []
            while not got or got[-1] != 300:
                got.append((await board.recv(timeout=3))["offset"])
            assert len(got) <= elapsed / 0.5 + 3, (len(got), elapsed)
            contest = [e["offset"] for e in await feed.events(30)]
            return got, contest

    board_offsets, contest_offsets = asyncio.run(scenario())
    assert board_offsets == sorted(board_offsets) and board_offsets[-1] == 300
    assert contest_offsets == list(range(1, 31))  # contest channels never skip


def test_slow_leaderboard_watcher_skips_to_latest(server_factory: Any, tmp_path: Path) -> None:
    """A watcher that stops reading is not cut off; when it reads again it gets the latest."""
    # a 1 ms window sends nearly every event: the volume outgrows what the kernel buffers
    server = server_with_coalesce(server_factory, tmp_path, 1, max_send_buffer="65536")
    slow = raw_ws(server.port)
    slow.sendall(masked_text(b'{"op":"subscribe","channel":"leaderboard:2"}'))
    blob = "z" * 16000
    published = 0
    # publish until the server has had to skip frames for it: how much the kernel buffers
    # in front of the server's own limit varies, so the loop is bounded by count, not fixed
    while published < 600 and metric(server, "realtime_frames_skipped_total") < 5:
        for _ in range(10):
            published += 1
            server.publish({"channel": "leaderboard:2", "type": "t", "data": {"pad": blob}})
        time.sleep(0.05)
    frames = read_frames(slow, until=time.monotonic() + 3)
    slow.close()
    assert metric(server, "realtime_frames_skipped_total") >= 5, published
    assert all(opcode != 0x8 for opcode, _ in frames), "closed instead of skipping ahead"
    events = [json.loads(p) for op, p in frames if op == 0x1 and b'"op":"event"' in p]
    offsets = [e["offset"] for e in events]
    assert offsets and offsets[-1] == published, (offsets[-5:], published)
    assert offsets == sorted(set(offsets)) and len(offsets) < published
    assert metric(server, "realtime_slow_consumers_dropped_total") == 0


def metric(server: Any, name: str) -> float:
    _, body = server.get("/metrics")
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")
