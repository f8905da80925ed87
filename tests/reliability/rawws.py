"""A raw RFC 6455 client over a plain socket, for frames `websockets` refuses to send.

Used for invalid UTF-8, fragmented frames, random byte streams and clients that stop
reading. Blocking sockets with timeouts; one instance per connection.
"""

from __future__ import annotations

import base64
import os
import socket
import struct
import time

CLOSED = -1  # pseudo close code: the server closed the TCP connection without a close frame


def handshake_request(port: int, path: str = "/ws", extra: str = "") -> bytes:
    """Return the bytes of a WebSocket upgrade request."""
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"{extra}\r\n"
    ).encode()


def frame(opcode: int, payload: bytes, fin: bool = True, rsv: int = 0) -> bytes:
    """Build one masked client frame."""
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    size = len(payload)
    if size < 126:
        head += bytes([0x80 | size])
    elif size < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack("!H", size)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", size)
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class RawClient:
    """One raw WebSocket connection (handshake done on construction)."""

    def __init__(self, port: int, rcvbuf: int | None = None, timeout: float = 5.0) -> None:
        self.sock = socket.socket()
        if rcvbuf is not None:
            # before connect, so the TCP window stays small: the server's buffer fills fast
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        self.sock.sendall(handshake_request(port))
        self._buf = b""
        head = self._read_until(b"\r\n\r\n")
        self.status = int(head.split(b" ", 2)[1])
        if self.status != 101:
            raise ConnectionError(f"handshake answered {self.status}")

    def _fill(self) -> bool:
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if not data:
            return False
        self._buf += data
        return True

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self._buf:
            if not self._fill():
                raise ConnectionError("closed during handshake")
        head, self._buf = self._buf.split(marker, 1)
        return head

    def _read_exact(self, n: int) -> bytes | None:
        while len(self._buf) < n:
            if not self._fill():
                return None
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_text(self, text: str | bytes) -> None:
        self.sock.sendall(frame(0x1, text.encode() if isinstance(text, str) else text))

    def read_frame(self) -> tuple[int, bytes] | None:
        """Return (opcode, payload) of the next server frame, or None at EOF."""
        head = self._read_exact(2)
        if head is None:
            return None
        size = head[1] & 0x7F
        if size == 126:
            ext = self._read_exact(2)
            if ext is None:
                return None
            size = struct.unpack("!H", ext)[0]
        elif size == 127:
            ext = self._read_exact(8)
            if ext is None:
                return None
            size = struct.unpack("!Q", ext)[0]
        payload = self._read_exact(size)
        if payload is None:
            return None
        return head[0] & 0x0F, payload

    def messages_until_close(self, timeout: float = 10.0) -> tuple[list[bytes], int]:
        """Read text frames until the server closes; return them and the close code.

        The close code is ``CLOSED`` when the TCP connection ended without a close frame.
        """
        texts: list[bytes] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                got = self.read_frame()
            except TimeoutError:
                continue
            if got is None:
                return texts, CLOSED
            opcode, payload = got
            if opcode == 0x8:
                return texts, struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            if opcode == 0x1:
                texts.append(payload)
        raise TimeoutError("the server did not close")

    def next_text(self, timeout: float = 5.0) -> bytes:
        """Return the next text frame (pings and pongs skipped)."""
        self.sock.settimeout(timeout)
        while True:
            got = self.read_frame()
            if got is None:
                raise ConnectionError("closed")
            if got[0] == 0x8:
                raise ConnectionError(f"close frame {got[1][:2]!r}")
            if got[0] == 0x1:
                return got[1]

    def close(self) -> None:
        self.sock.close()


class AsyncRaw:
    """A cheap asyncio WebSocket connection for herds of thousands (no frame parsing beyond
    what the tests need)."""

    def __init__(self, reader: object, writer: object, status: int, headers: dict[str, str]):
        import asyncio

        assert isinstance(reader, asyncio.StreamReader)
        assert isinstance(writer, asyncio.StreamWriter)
        self.reader = reader
        self.writer = writer
        self.status = status
        self.headers = headers

    @classmethod
    async def connect(cls, port: int, host: str = "127.0.0.1") -> AsyncRaw:
        """Open a TCP connection and do the handshake; check ``status`` (101 or a refusal)."""
        import asyncio

        reader, writer = await asyncio.open_connection(host, port)
        writer.write(handshake_request(port))
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        conn = cls(reader, writer, int(lines[0].split(" ", 2)[1]), headers)
        if conn.status != 101:
            writer.close()
        return conn

    async def read_frame(self) -> tuple[int, bytes] | None:
        import asyncio

        try:
            head = await self.reader.readexactly(2)
            size = head[1] & 0x7F
            if size == 126:
                size = struct.unpack("!H", await self.reader.readexactly(2))[0]
            elif size == 127:
                size = struct.unpack("!Q", await self.reader.readexactly(8))[0]
            return head[0] & 0x0F, await self.reader.readexactly(size)
        except (asyncio.IncompleteReadError, ConnectionError):
            return None

    async def close_code(self) -> int:
        """Read until the server closes; return its close code (``CLOSED`` without a frame)."""
        while True:
            got = await self.read_frame()
            if got is None:
                return CLOSED
            if got[0] == 0x8:
                self.writer.close()
                return struct.unpack("!H", got[1][:2])[0] if len(got[1]) >= 2 else 1005

    def close(self) -> None:
        self.writer.close()
