"""A small protocol client over the `websockets` library, for tests."""

from __future__ import annotations

import asyncio
import json
import socket
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
        # channel -> epoch announced by an unasked `subscribed` (recovered, offset 0): the
        # epoch a channel's first event starts when we subscribed before any event
        self.epoch_notices: dict[str, str] = {}

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
                    msg = json.loads(line)
                    if msg.get("op") == "subscribed" and "id" not in msg and msg["offset"] == 0:
                        self.epoch_notices[msg["channel"]] = msg["epoch"]
                    self._buffer.append(msg)
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


def raw_ws(port: int, rcvbuf: int = 4096) -> socket.socket:
    """Open a WebSocket on a plain socket with a small receive window (a slow reader)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: small window
    sock.connect(("127.0.0.1", port))
    sock.sendall(
        b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert b" 101 " in head.split(b"\r\n")[0], head
    return sock


def masked_text(payload: bytes) -> bytes:
    """A masked client text frame (payload under 126 bytes)."""
    mask = b"\x01\x02\x03\x04"
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    assert len(payload) < 126
    return bytes((0x81, 0x80 | len(payload))) + mask + body


def read_frames(sock: socket.socket, until: float) -> list[tuple[int, bytes]]:
    """Read unmasked server frames until ``until`` (monotonic) or EOF: (opcode, payload)."""
    import time

    buf = b""
    frames: list[tuple[int, bytes]] = []
    sock.settimeout(0.2)
    while time.monotonic() < until:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        if not chunk:
            break
        buf += chunk
        while len(buf) >= 2:
            length, start = buf[1] & 0x7F, 2
            if length == 126:
                length, start = int.from_bytes(buf[2:4], "big"), 4
            elif length == 127:
                length, start = int.from_bytes(buf[2:10], "big"), 10
            if len(buf) < start + length:
                break
            frames.append((buf[0] & 0x0F, buf[start : start + length]))
            buf = buf[start + length :]
    return frames
