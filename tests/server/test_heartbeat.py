"""Heartbeat against a real server: silent peers are dropped, pings are spread over time."""

from __future__ import annotations

import asyncio
import itertools
import math
import selectors
import socket
import time
from typing import Any

from tests.client import Client, raw_ws


def watch(socks: list[socket.socket], seconds: float) -> tuple[list[float], list[float]]:
    """Read every socket (never answering): time of its first ping, and of its EOF."""
    start = time.monotonic()
    first_ping = [float("nan")] * len(socks)
    closed = [float("nan")] * len(socks)
    buffers = [b""] * len(socks)
    sel = selectors.DefaultSelector()
    for i, sock in enumerate(socks):
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ, i)
    while time.monotonic() - start < seconds and sel.get_map():
        for key, _ in sel.select(timeout=0.05):
            i = key.data
            try:
                chunk = socks[i].recv(65536)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                chunk = b""
            now = time.monotonic() - start
            if not chunk:
                closed[i] = now
                sel.unregister(socks[i])
                continue
            buffers[i] += chunk
            buf = buffers[i]
            while len(buf) >= 2 and len(buf) >= 2 + (buf[1] & 0x7F):  # short frames only
                opcode, size = buf[0] & 0x0F, buf[1] & 0x7F
                if opcode == 0x9 and math.isnan(first_ping[i]):
                    first_ping[i] = now
                buf = buf[2 + size :]
            buffers[i] = buf
    sel.close()
    return first_ping, closed


def test_silent_peers_are_dropped_and_pings_are_spread(server_factory: Any) -> None:
    """heartbeat=2: ten groups pinged 0.2 s apart; a peer that never answers is dropped."""
    server = server_factory(heartbeat="2")

    async def answering_client_survives() -> None:
        async with await Client.open(server.ws_url) as c:  # websockets answers pings
            await asyncio.sleep(5.5)
            assert (await c.request({"op": "ping"}))["op"] == "pong"

    socks = [raw_ws(server.port) for _ in range(8)]
    try:
        loop_result: list[Any] = []

        async def both() -> None:
            task = asyncio.create_task(answering_client_survives())
            loop_result.append(await asyncio.to_thread(watch, socks, 7.0))
            await task

        asyncio.run(both())
        first_ping, closed = loop_result[0]
    finally:
        for sock in socks:
            sock.close()
    assert all(t <= 2.6 for t in first_ping), first_ping  # every peer pinged within the interval
    assert all(t <= 5.2 for t in closed), closed  # and dropped at its next ping
    for ping, close in zip(first_ping, closed, strict=True):
        assert 1.5 <= close - ping <= 2.6, (first_ping, closed)
    # not all at once: the first pings fall on at least three different ticks
    ticks = sorted(first_ping)
    distinct = 1 + sum(1 for a, b in itertools.pairwise(ticks) if b - a > 0.1)
    assert distinct >= 3, first_ping
