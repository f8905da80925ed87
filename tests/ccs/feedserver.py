"""A local Contest API event-feed server for the tests (loopback, a thread).

It serves ``lines`` at ``/api/contests/<id>/event-feed`` as NDJSON with keep-alive
newlines, resumes after ``since_token`` / ``since_id``, answers 400 to an unknown resume
point or while ``refuse`` is positive, can cut the first connection in the middle of a line
(``drop_after``), holds before a line until released (``hold_at``, ``gate``), checks basic
auth (503 for any path under ``/unavailable/``), and after the last line sends keep-alives until the
client goes away.
"""

from __future__ import annotations

import base64
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson


@dataclass
class Feed:
    """What the server serves and what it saw."""

    contest_id: str
    lines: list[bytes]
    user: str | None = None
    password: str | None = None
    drop_after: int | None = None  # the first connection breaks after this many lines
    refuse: int = 0  # answer 400 to this many resumed requests
    keepalive_every: int = 97  # a blank line after every n lines
    hold_at: int | None = None  # stop before this line (sending keep-alives) until ``gate``
    gate: threading.Event = field(default_factory=threading.Event)
    requests: list[str] = field(default_factory=list)
    positions: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for i, line in enumerate(self.lines):
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # a malformed line (some tests serve them on purpose)
            if not isinstance(event, dict):
                continue
            mark = event.get("token") if "op" not in event else event.get("id")
            if mark is not None:
                self.positions[str(mark)] = i


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet tests

    def do_GET(self) -> None:
        feed = self.server.feed
        url = urllib.parse.urlsplit(self.path)
        feed.requests.append(self.path)
        if url.path.startswith("/unavailable/"):
            self.send_error(503)
            return
        if url.path != f"/api/contests/{feed.contest_id}/event-feed":
            self.send_error(404)
            return
        if feed.user is not None:
            pair = f"{feed.user}:{feed.password}".encode()
            if self.headers.get("Authorization") != "Basic " + base64.b64encode(pair).decode():
                self.send_error(401)
                return
        query = urllib.parse.parse_qs(url.query)
        resume = (query.get("since_token") or query.get("since_id") or [None])[0]
        start = 0
        if resume is not None:
            if feed.refuse > 0 or resume not in feed.positions:
                feed.refuse -= 1
                self.send_error(400, "token expired")
                return
            start = feed.positions[resume] + 1
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.end_headers()
        drop = feed.drop_after
        feed.drop_after = None
        try:
            for n, line in enumerate(feed.lines[start:], 1):
                while start + n - 1 == feed.hold_at and not feed.gate.is_set():
                    self.wfile.write(b"\n")  # keep-alives while held
                    self.wfile.flush()
                    time.sleep(0.05)
                if drop is not None and n > drop:
                    self.wfile.write(line[: len(line) // 2])  # cut mid-line
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(line + b"\n")
                if n % feed.keepalive_every == 0:
                    self.wfile.write(b"\n")
            while not self.server.stopping.is_set():
                self.wfile.write(b"\n")  # keep-alive until the client leaves
                self.wfile.flush()
                time.sleep(0.05)
        except (BrokenPipeError, ConnectionResetError):
            pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    feed: Feed
    stopping: threading.Event


class FeedServer:
    """Serve ``feed`` on 127.0.0.1 (a free port) until ``close``."""

    def __init__(self, feed: Feed) -> None:
        self.feed = feed
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.feed = feed
        self._server.stopping = threading.Event()
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def base(self) -> str:
        """The API base URL (what the follower is given)."""
        return f"http://127.0.0.1:{self._server.server_address[1]}/api"

    def close(self) -> None:
        """Stop serving and close every connection."""
        self._server.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
