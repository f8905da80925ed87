"""The WebSocket handshake: Tornado answers the HTTP upgrade, then hands the socket over.

Tornado checks the request (Upgrade, version, key, origin) and writes the 101 answer.
Past that point nothing of Tornado's stays with the connection: its handler, request,
stream and protocol objects are released, and ``connection.Connection`` reads and writes
the socket itself. Tornado's per-connection machinery (a stream with two deques, a task
and a chain of futures per frame read) cost about 8 KB a connection and ~90 µs per
heartbeat pong.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any
from urllib.parse import urlsplit

import tornado.websocket

from realtime.connection import Connection
from realtime.context import ServerContext

logger = logging.getLogger(__name__)

LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
ORIGIN_LOG_PERIOD = 10.0  # seconds between two lines about the same refused Origin
ORIGIN_LOG_MAX = 1024  # distinct origins remembered for the rate limit


class _Protocol(tornado.websocket.WebSocketProtocol13):
    """Tornado's RFC 6455 handshake; the frame loop is replaced by the hand-over."""

    async def _receive_frame_loop(self) -> None:
        handler, stream = self.handler, self.stream
        if not isinstance(handler, WebSocketHandshake) or stream is None:
            self._abort()
            return
        conn, handler._connection = handler._connection, None
        sock = stream.socket
        if conn is None or sock is None or stream.closed() or stream.writing():
            # gone already, or the kernel did not even take the 101 answer: the peer is not
            # reading, and would not read the welcome either
            if conn is not None:
                conn.abort()
            self._abort()
            return
        # what Tornado read past the request (a client may send right after the upgrade)
        buffered = bytes(stream._read_buffer)
        stream.io_loop.remove_handler(sock)  # Tornado stops watching the socket
        conn.attach(sock, buffered)


class WebSocketHandshake(tornado.websocket.WebSocketHandler):
    """``GET /ws``: refuses past the limits, otherwise upgrades and creates a Connection."""

    _connection: Connection | None
    ctx: ServerContext

    def initialize(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self._connection = None

    def prepare(self) -> None:
        """Refuse the handshake (503 + Retry-After) past a limit, before Tornado upgrades."""
        ctx = self.ctx
        ip = self.request.remote_ip or ""
        refusal = None
        if ctx.shutting_down:
            refusal = "server is shutting down"
        elif len(ctx.connections) >= ctx.settings.max_connections:
            refusal = "connection limit reached"
        elif (
            ctx.settings.max_connections_per_ip
            and ctx.per_ip[ip] >= ctx.settings.max_connections_per_ip
        ):
            refusal = "connection limit per address reached"
        elif ctx.connect_bucket is not None and not ctx.connect_bucket.take():
            # the contest-start herd: answer the excess at once, spread their retries
            refusal = "too many new connections, retry later"
        if refusal is not None:
            ctx.metrics.refused_connections.inc()
            _log_refusal(ctx, refusal)
            self.set_status(503)
            self.set_header("Retry-After", str(random.randint(1, 5)))
            self.finish(refusal)

    def check_origin(self, origin: str) -> bool:
        settings = self.ctx.settings
        allowed = settings.allowed_origins
        if "*" in allowed:
            return True
        # unset: same host only (Tornado's check)
        ok = origin.rstrip("/") in allowed if allowed else super().check_origin(origin)
        if not ok and (settings.dev or settings.demo) and is_local_origin(origin):
            ok = True  # --dev: Django's runserver on another local port
        if not ok:
            self.ctx.metrics.refused_origins.inc()
            _log_refused_origin(self.ctx, origin)
        return ok

    def get_compression_options(self) -> dict[str, Any] | None:
        # no permessage-deflate: a compressed frame differs per connection, which would turn
        # the build-once fan-out back into per-connection work (docs/PERFORMANCE.md)
        return None

    def get_websocket_protocol(self) -> tornado.websocket.WebSocketProtocol | None:
        protocol = super().get_websocket_protocol()
        if isinstance(protocol, tornado.websocket.WebSocketProtocol13):
            return _Protocol(self, False, protocol.params)
        return protocol

    def open(self, *args: str, **kwargs: str) -> None:
        conn = Connection(self.ctx, self.request.remote_ip or "")
        self._connection = conn
        conn.open()

    def on_close(self) -> None:
        # only reached when the hand-over did not happen (the socket closed first)
        conn = self._connection
        if conn is not None:
            self._connection = None
            conn.abort()


def _log_refusal(ctx: ServerContext, reason: str) -> None:
    """Log refused handshakes as one line a second: a herd must not also flood the log."""
    now = time.monotonic()
    ctx.refused_unlogged += 1
    if now - ctx.refused_logged_at >= 1.0:
        logger.warning("refused %d handshakes (latest: %s)", ctx.refused_unlogged, reason)
        ctx.refused_unlogged = 0
        ctx.refused_logged_at = now


def is_local_origin(origin: str) -> bool:
    """Return whether an Origin names this machine (localhost, 127.0.0.1, [::1])."""
    try:
        host = urlsplit(origin).hostname or ""
    except ValueError:
        return False
    return host in LOCAL_HOSTS or host.endswith(".localhost")


def _log_refused_origin(ctx: ServerContext, origin: str) -> None:
    """Log a refused Origin with the setting to change, at most once a period per origin.

    Without this line a page on another origin just reconnects for ever: the browser shows
    a failed handshake and nothing on the server says why.
    """
    now = time.monotonic()
    origin = origin[:200]
    logged_at, count = ctx.origin_log.get(origin, (float("-inf"), 0))
    count += 1
    if now - logged_at < ORIGIN_LOG_PERIOD:
        ctx.origin_log[origin] = (logged_at, count)
        return
    if len(ctx.origin_log) >= ORIGIN_LOG_MAX and origin not in ctx.origin_log:
        ctx.origin_log.clear()  # an Origin flood must not grow memory
    ctx.origin_log[origin] = (now, 0)
    allowed = ctx.settings.allowed_origins
    where = "allowed: " + ", ".join(allowed) if allowed else "unset: same host only"
    logger.warning(
        "refused WebSocket handshake (403) from Origin %r (%d since its last line): add it to "
        "allowed_origins (REALTIME_ALLOWED_ORIGINS, %s); --dev allows local origins",
        origin,
        count,
        where,
    )
