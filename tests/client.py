"""A small protocol client over the `websockets` library, for tests."""

from __future__ import annotations

import asyncio
import json
from collections import deque
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection


class Client:
    """One WebSocket connection speaking the realtime protocol.

    Server frames may carry several JSON objects separated by newlines; ``recv`` returns
    them one at a time. Use ``async with Client.connect(url) as c``.
    """

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self._buffer: deque[dict[str, Any]] = deque()
        self._next_id = 0
        self.welcome: dict[str, Any] = {}

    @classmethod
    async def open(cls, url: str, **kwargs: Any) -> Client:
        ws = await websockets.connect(url, max_size=None, **kwargs)
        client = cls(ws)
        client.welcome = await client.recv()
        assert client.welcome["op"] == "welcome", client.welcome
        return client

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.ws.close()

    async def send(self, obj: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(obj))

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        while not self._buffer:
            frame = await asyncio.wait_for(self.ws.recv(), timeout)
            for line in str(frame).split("\n"):
                if line:
                    self._buffer.append(json.loads(line))
        return self._buffer.popleft()

    async def request(self, obj: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        """Send a command with a fresh id and return the reply with that id (others kept)."""
        self._next_id += 1
        cid = self._next_id
        await self.send({**obj, "id": cid})
        skipped: list[dict[str, Any]] = []
        try:
            while True:
                msg = await self.recv(timeout)
                if msg.get("id") == cid:
                    return msg
                skipped.append(msg)
        finally:
            self._buffer.extendleft(reversed(skipped))

    async def subscribe(self, channel: str, **extra: Any) -> dict[str, Any]:
        return await self.request({"op": "subscribe", "channel": channel, **extra})

    async def auth(self, token: str) -> dict[str, Any]:
        return await self.request({"op": "auth", "token": token})

    async def events(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Collect the next ``count`` event messages (other messages are dropped)."""
        out: list[dict[str, Any]] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(out) < count:
            msg = await self.recv(max(0.01, deadline - loop.time()))
            if msg["op"] == "event":
                out.append(msg)
        return out

    async def closed_code(self, timeout: float = 5.0) -> int | None:
        """Wait for the server to close; return the close code."""
        try:
            while True:
                await asyncio.wait_for(self.ws.recv(), timeout)
        except websockets.ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd else None
