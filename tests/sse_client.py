"""A small blocking Server-Sent Events reader for the tests (``GET /sse``).

It speaks HTTP/1.1 over a plain socket and decodes chunked bodies itself, so that a test
can also open a stream and *not* read it (a slow reader) with a small receive buffer.
"""

from __future__ import annotations

import json
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode


@dataclass
class Message:
    """One SSE message: ``data`` decoded as JSON; ``comment`` for a comment-only block."""

    id: str | None
    data: Any
    retry: int | None = None
    comment: str | None = None


class SseClosed(Exception):
    """The server ended the stream."""


class SseStream:
    """One open ``GET /sse`` request."""

    def __init__(
        self,
        port: int,
        channels: list[str],
        token: str | None = None,
        last_event_id: str | None = None,
        query_last_event_id: str | None = None,
        headers: dict[str, str] | None = None,
        rcvbuf: int | None = None,
        timeout: float = 10.0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        params: list[tuple[str, str]] = [("channel", c) for c in channels]
        if token is not None:
            params.append(("token", token))
        if query_last_event_id is not None:
            params.append(("last_event_id", query_last_event_id))
        self.sock = socket.socket()
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        if tls is not None:
            self.sock = tls.wrap_socket(self.sock, server_hostname="127.0.0.1")
        lines = [f"GET /sse?{urlencode(params)} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
        lines.append("Accept: text/event-stream")
        if last_event_id is not None:
            lines.append(f"Last-Event-ID: {last_event_id}")
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}")
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self._raw = b""
        self._body = b""
        self._eof = False
        head = self._read_until(b"\r\n\r\n", timeout)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split()[1])
        self.headers = {
            k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in header_lines if h)
        }
        self.last_id: str | None = None

    def _recv(self) -> bool:
        try:
            data = self.sock.recv(65536)
        except (TimeoutError, ssl.SSLWantReadError):
            return True
        if not data:
            self._eof = True
            return False
        self._raw += data
        return True

    def _read_until(self, marker: bytes, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        while marker not in self._raw:
            if time.monotonic() > deadline or not self._recv():
                raise SseClosed(f"no {marker!r} in {self._raw[:200]!r}")
        head, self._raw = self._raw.split(marker, 1)
        return head

    def _dechunk(self) -> None:
        """Move complete chunks from the raw bytes into the body."""
        while True:
            if b"\r\n" not in self._raw:
                return
            size_line, rest = self._raw.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                self._eof = True
                return
            if len(rest) < size + 2:
                return
            self._body += rest[:size]
            self._raw = rest[size + 2 :]

    def next(self, timeout: float = 10.0, comments: bool = False) -> Message:
        """Return the next message (comment blocks only when ``comments``)."""
        deadline = time.monotonic() + timeout
        while True:
            self._dechunk()
            while b"\n\n" in self._body:
                block, self._body = self._body.split(b"\n\n", 1)
                message = _parse_block(block.decode())
                if message.id is not None:
                    self.last_id = message.id
                if message.comment is not None and not comments:
                    continue
                if message.data is None and message.comment is None:
                    continue  # a retry-only block
                return message
            if self._eof:
                raise SseClosed("the server ended the stream")
            if time.monotonic() > deadline:
                raise TimeoutError("no SSE message in time")
            self.sock.settimeout(max(0.05, min(1.0, deadline - time.monotonic())))
            if not self._recv() and not self._raw:
                raise SseClosed("the server closed the connection")

    def until(self, predicate: Any, timeout: float = 10.0) -> Message:
        """Skip messages until one whose data matches ``predicate``."""
        deadline = time.monotonic() + timeout
        while True:
            message = self.next(max(0.01, deadline - time.monotonic()))
            if predicate(message.data):
                return message

    def close(self) -> None:
        self.sock.close()


def _parse_block(block: str) -> Message:
    event_id: str | None = None
    data: list[str] = []
    retry: int | None = None
    comment: str | None = None
    for line in block.split("\n"):
        if line.startswith(":"):
            comment = line[1:].strip()
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "id":
            event_id = value
        elif name == "data":
            data.append(value)
        elif name == "retry":
            retry = int(value)
    decoded = json.loads("\n".join(data)) if data else None
    return Message(event_id, decoded, retry, comment)
