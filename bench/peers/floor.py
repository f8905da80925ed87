"""The floor: a raw asyncio-transport WebSocket server that writes one pre-built frame to N sockets.

It does the least any server must do per delivery: the frame of an event is built once and
``transport.write`` is called once per subscriber. The handshake and client frames are
parsed by hand (enough for the load generator, not a general server). Events come from the
realtime Redis layout's pub/sub channel, like our server's.

Run: ``python -m bench.peers.floor --port 8891 --prefix bench-x:``
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import re
import signal
import socket
import struct
from typing import cast

import redis.asyncio as aioredis

from bench.peers.common import peer_parser, raise_fd_limit, split_redis_message, subscribed_reply

logger = logging.getLogger(__name__)
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
KEY_RE = re.compile(rb"(?im)^sec-websocket-key:\s*(\S+)")


def ws_frame(payload: bytes, opcode: int = 1) -> bytes:
    """Build one unmasked server frame (FIN set)."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return head + payload


def unmask(payload: bytes, mask: bytes) -> bytes:
    """XOR a client payload with its 4-byte mask."""
    repeated = (mask * (len(payload) // 4 + 1))[: len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        len(payload), "big"
    )


class FloorServer:
    """Channel -> set of transports; one frame per event written to each."""

    def __init__(self) -> None:
        self.channels: dict[str, set[asyncio.Transport]] = {}

    def deliver(self, channel: str, event_json: bytes) -> None:
        frame = ws_frame(event_json)
        for transport in self.channels.get(channel, ()):
            transport.write(frame)


class FloorProtocol(asyncio.Protocol):
    """One connection: hand-made handshake, then masked client frames."""

    def __init__(self, server: FloorServer) -> None:
        self.server = server
        self.buf = bytearray()
        self.upgraded = False
        self.transport: asyncio.Transport | None = None
        self.joined: list[str] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buf += data
        if not self.upgraded:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > 16384:
                    self.transport.close()
                return
            match = KEY_RE.search(bytes(self.buf[:end]))
            del self.buf[: end + 4]
            if match is None:
                self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                self.transport.close()
                return
            accept = base64.b64encode(hashlib.sha1(match.group(1) + GUID).digest())
            self.transport.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
            )
            self.upgraded = True
        self.read_frames()

    def read_frames(self) -> None:
        buf = self.buf
        while len(buf) >= 2:
            opcode, length, at = buf[0] & 0x0F, buf[1] & 0x7F, 2
            if length == 126:
                if len(buf) < 4:
                    return
                (length,), at = struct.unpack_from("!H", buf, 2), 4
            elif length == 127:
                if len(buf) < 10:
                    return
                (length,), at = struct.unpack_from("!Q", buf, 2), 10
            if len(buf) < at + 4 + length:
                return
            mask = bytes(buf[at : at + 4])
            payload = unmask(bytes(buf[at + 4 : at + 4 + length]), mask)
            del buf[: at + 4 + length]
            self.on_frame(opcode, payload)

    def on_frame(self, opcode: int, payload: bytes) -> None:
        assert self.transport is not None
        if opcode == 1:
            try:
                msg = json.loads(payload)
            except ValueError:
                return
            if msg.get("op") == "subscribe" and isinstance(msg.get("channel"), str):
                channel = msg["channel"]
                self.server.channels.setdefault(channel, set()).add(self.transport)
                self.joined.append(channel)
                reply = json.dumps(subscribed_reply(channel)).encode()
                self.transport.write(ws_frame(reply))
        elif opcode == 9:
            self.transport.write(ws_frame(payload, 0xA))
        elif opcode == 8:
            self.transport.write(ws_frame(payload[:2], 0x8))
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        for channel in self.joined:
            if self.transport is not None:
                self.server.channels.get(channel, set()).discard(self.transport)


async def listen_redis(server: FloorServer, url: str, prefix: str) -> None:
    """Feed events from the realtime layout's pub/sub channels into the fan-out."""
    client = aioredis.Redis.from_url(url)
    pubsub = client.pubsub()
    await pubsub.psubscribe(prefix + "{*}")
    async for msg in pubsub.listen():
        if msg["type"] == "pmessage":
            channel, event_json = split_redis_message(prefix, msg["channel"], msg["data"])
            server.deliver(channel, event_json)


async def serve(sock: socket.socket, redis_url: str, prefix: str) -> None:
    server = FloorServer()
    loop = asyncio.get_running_loop()
    await loop.create_server(lambda: FloorProtocol(server), sock=sock, backlog=4096)
    await listen_redis(server, redis_url, prefix)


def run_worker(sock: socket.socket, args: argparse.Namespace) -> None:
    sock.setblocking(False)
    if not args.no_uvloop:
        import uvloop

        uvloop.install()
    asyncio.run(serve(sock, args.redis_url, args.prefix))


def main() -> None:
    parser = peer_parser("The floor: one pre-built frame written to N raw sockets per event.")
    parser.add_argument("--no-uvloop", action="store_true")
    parser.add_argument(
        "--workers", type=int, default=1, help="forked processes accepting on one socket"
    )
    args = parser.parse_args()
    raise_fd_limit()
    if args.workers <= 1:
        run_worker(socket.create_server((args.host, args.port), backlog=4096), args)
        return
    # like `realtime serve --workers N`, several processes on one port (the open-file limit
    # is per process, so more than ~20,000 connections need several); each has a socket of
    # its own (SO_REUSEPORT), so the kernel spreads connections evenly and none of them
    # runs into its limit while another has room
    children = []
    for _ in range(args.workers):
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            sock = socket.create_server((args.host, args.port), backlog=4096, reuse_port=True)
            run_worker(sock, args)
            os._exit(0)
        children.append(pid)

    def stop(signum: int, frame: object) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for child in children:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(child, 0)


if __name__ == "__main__":
    main()
