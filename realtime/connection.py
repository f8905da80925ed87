"""The WebSocket handler: a thin adapter between Tornado and the sans-I/O session.

Outgoing frames do not go through ``write_message``: the hub builds each event's frame
once, and a connection only appends it to a list. Once per loop tick every connection
with queued frames writes them in one ``send`` straight to its socket; only what the
kernel does not take goes into Tornado's stream buffer, which is what the send-buffer
limit counts.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import socket
import time
from typing import Any

import orjson
import tornado.httputil
import tornado.websocket
from tornado.iostream import IOStream, StreamClosedError

from realtime import messages
from realtime.context import ServerContext
from realtime.errors import BrokerUnavailable, CloseCode, ErrorCode
from realtime.frames import text_frame
from realtime.protocol import Action, Close, Reply, Session, Subscribe, Unsubscribe

logger = logging.getLogger(__name__)
audit = logging.getLogger("realtime.audit")

_PING_FRAME = b"\x89\x00"
_NO_HEADERS = tornado.httputil.HTTPHeaders()
REFUSED_CODES = frozenset({ErrorCode.UNAUTHORIZED, ErrorCode.FORBIDDEN, ErrorCode.TOKEN_EXPIRED})


class _Protocol(tornado.websocket.WebSocketProtocol13):
    """Tornado's RFC 6455 protocol, closing with 1007 on invalid UTF-8 (Tornado aborts).

    It also tells the connection whenever Tornado itself writes a frame (pong, close), so
    that the fan-out's direct socket writes only look at Tornado's buffer after one.
    """

    def _write_frame(
        self, fin: bool, opcode: int, data: bytes, flags: int = 0
    ) -> asyncio.Future[None]:
        handler = self.handler
        if isinstance(handler, WebSocketConnection):
            handler._tornado_wrote = True
        return super()._write_frame(fin, opcode, data, flags)

    async def _receive_frame_loop(self) -> None:
        # Tornado awaits this at the end of the handshake's coroutines (_execute, get,
        # accept_connection, _accept_connection), which would then stay suspended, each
        # holding its frame and locals, for the connection's lifetime (about 2 KB). As a
        # task of its own, the loop lets them finish once the handshake is done.
        reader = asyncio.get_running_loop().create_task(super()._receive_frame_loop())
        reader.add_done_callback(self._reader_done)
        handler = self.handler
        if isinstance(handler, WebSocketConnection):
            # a strong reference (the loop keeps only weak ones), in a slot: a new attribute
            # here would grow this object's __dict__ by 1.5 KB
            handler._reader = reader

    def _reader_done(self, task: asyncio.Task[None]) -> None:
        handler = self.handler
        if isinstance(handler, WebSocketConnection):
            handler._reader = None
        # what accept_connection did for the loop when it was awaited there
        if task.cancelled():
            self._abort()
            return
        exc = task.exception()
        if exc is not None:
            if not isinstance(exc, ValueError):  # ValueError: a malformed frame
                logger.error("receive loop failed", exc_info=exc)
            self._abort()

    def _handle_message(self, opcode: int, data: bytes) -> asyncio.Future[None] | None:
        if opcode == 0x1 and not self._frame_compressed:
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                self.close(CloseCode.INVALID_PAYLOAD, "invalid UTF-8")
                return None
        return super()._handle_message(opcode, data)


class WebSocketConnection(tornado.websocket.WebSocketHandler):
    """One client connection; implements the hub's ``Subscriber``."""

    # our state in slots keeps Tornado's per-handler __dict__ in its smaller size class
    __slots__ = (
        "_alive",
        "_beat_group",
        "_closing",
        "_congested",
        "_deferred",
        "_first",
        "_held",
        "_ip",
        "_more",
        "_offsets",
        "_opened",
        "_queued",
        "_reader",
        "_socket",
        "_stream",
        "_token_timer",
        "_tornado_wrote",
        "ctx",
        "session",
        "session_id",
    )
    ctx: ServerContext

    def initialize(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self.session = Session(ctx.settings)
        self.session_id = secrets.token_urlsafe(12)
        # frames queued this tick: the first in a slot (the common case, one event per
        # tick, touches no list), any further ones in a reused list
        self._first: bytes | None = None
        self._more: list[bytes] = []
        self._queued = 0  # bytes handed to the stream and not yet written
        self._offsets: dict[str, int] = {}  # last offset sent per channel
        self._held: dict[str, list[tuple[int, bytes]]] = {}  # frames held until `subscribed`
        self._deferred: dict[str, bytes] = {}  # latest coalesced frame while congested
        self._stream: IOStream | None = None  # set in open(); written directly by _write
        self._socket: socket.socket | None = None
        self._congested = ctx.settings.max_send_buffer // 2
        # Tornado may have bytes in its stream buffer (the handshake, a pong, a close frame)
        self._tornado_wrote = True
        self._closing = False
        self._alive = True  # answered since the last heartbeat ping
        self._beat_group = -1  # its group in ctx.heartbeat, once open
        self._token_timer: Any = None
        self._reader: asyncio.Task[None] | None = None  # the receive loop (_Protocol)
        self._ip = ""
        self._opened = time.monotonic()

    # -- handshake -------------------------------------------------------------------

    def prepare(self) -> None:
        """Refuse the handshake (503 + Retry-After) past a limit, before Tornado upgrades.

        Done here rather than by wrapping ``get``: a wrapper's coroutine frame would stay
        alive, holding memory, for as long as the connection.
        """
        ctx = self.ctx
        self._ip = self.request.remote_ip or ""
        refusal = None
        if ctx.shutting_down:
            refusal = "server is shutting down"
        elif len(ctx.connections) >= ctx.settings.max_connections:
            refusal = "connection limit reached"
        elif (
            ctx.settings.max_connections_per_ip
            and ctx.per_ip[self._ip] >= ctx.settings.max_connections_per_ip
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
        allowed = self.ctx.settings.allowed_origins
        if "*" in allowed:
            return True
        if allowed:
            return origin.rstrip("/") in allowed
        return super().check_origin(origin)  # same host only

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
        ctx = self.ctx
        ctx.connections.add(self)
        self._beat_group = ctx.heartbeat.add(self)
        ctx.per_ip[self._ip] += 1
        ctx.metrics.connections.set(len(ctx.connections))
        stream = self.ws_connection.stream if self.ws_connection else None
        if stream is not None and stream.socket is not None:
            stream.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._stream, self._socket = stream, stream.socket
        self._opened = time.monotonic()
        # the handshake is done: its headers and template namespace would otherwise stay
        # alive as long as the connection (a few KB each, times tens of thousands)
        # (Tornado's own get() coroutine keeps a reference to the request headers for the
        # connection's lifetime, so they are emptied rather than just dropped)
        for headers in (self.request.headers, self._headers):
            headers.clear()
            for table in vars(headers).values():
                if isinstance(table, dict):
                    table.clear()  # an emptied dict keeps its table; clear() releases it
        self.request.headers = _NO_HEADERS
        self.request.connection = None  # detached HTTP/1 state, holding the headers again
        self.request.server_connection = None  # and its server side (address context, ...)
        self._headers = _NO_HEADERS
        self.ui = None  # type: ignore[assignment]
        logger.info("connection %s opened from %s", self.session_id, self._ip)
        self._send(messages.welcome(self.session_id, ctx.settings.heartbeat))

    def on_pong(self, data: bytes) -> None:
        self._alive = True

    def heartbeat(self) -> None:
        """Ping; drop a peer that has not answered (pong or anything) since the last ping."""
        if self._closing:
            return
        if not self._alive:
            logger.info("connection %s from %s: no answer to ping", self.session_id, self._ip)
            self.abort()
            return
        self._alive = False
        self._queue(_PING_FRAME)

    # -- client commands -------------------------------------------------------------

    def on_message(self, message: str | bytes) -> None:
        self._alive = True
        if self._closing:
            return
        self.ctx.metrics.messages_in.inc()
        if isinstance(message, bytes):
            self._send(messages.error(ErrorCode.BAD_REQUEST, "send text frames"))
            return
        for action in self.session.receive(message):
            self._do(action)

    def _do(self, action: Action) -> None:
        if isinstance(action, Reply):
            if action.error is not None:
                self._audit(action)
            self._send(action.data)
            if self.session.identity.expires is not None and self._token_timer is None:
                self._schedule_token_check(self.session.identity.expires)
        elif isinstance(action, Subscribe):
            self._held[action.channel] = []
            asyncio.get_running_loop().create_task(self._subscribe(action))
        elif isinstance(action, Unsubscribe):
            self._drop(action.channel)
            self._send(messages.unsubscribed(action.channel, action.command_id, action.reason))
        elif isinstance(action, Close):
            self._close(action.code, action.reason)

    def _audit(self, reply: Reply) -> None:
        """Count a refused auth or subscribe, and log it for the audit trail."""
        code = reply.error
        if code not in REFUSED_CODES:
            return
        assert code is not None
        self.ctx.metrics.auth_failures.labels(code.value).inc()
        # lets an operator spot probing of other users' channels
        audit.warning(
            "denied user=%s ip=%s channel=%s reason=%s connection=%s",
            self.session.identity.user,
            self._ip,
            reply.channel,
            code.value,
            self.session_id,
        )

    async def _subscribe(self, action: Subscribe) -> None:
        channel = action.channel
        try:
            result = await self.ctx.node.subscribe(self, channel, action.since)
        except BrokerUnavailable as exc:
            self.session.subscribe_failed(channel)
            self._held.pop(channel, None)
            logger.warning("subscribe %s failed: %s", channel, exc)
            self._close(CloseCode.TRY_AGAIN_LATER, "broker unavailable, retry-after=2")
            return
        if self._closing or channel not in self.session.channels:
            # closed or unsubscribed while the subscribe was in flight
            self.ctx.node.unsubscribe(self, channel)
            self._held.pop(channel, None)
            return
        self._send(self._with_id(result.reply, action.command_id))
        # never backwards: a quick unsubscribe + subscribe may already have moved it on
        self._offsets[channel] = max(result.offset, self._offsets.get(channel, 0))
        for offset, frame in self._held.pop(channel, ()):
            self._push_frame(channel, offset, frame)

    @staticmethod
    def _with_id(reply: bytes, command_id: str | int | None) -> bytes:
        if command_id is None:
            return reply
        return reply[:-1] + b',"id":' + orjson.dumps(command_id) + b"}"

    def _drop(self, channel: str) -> None:
        self._offsets.pop(channel, None)
        self._held.pop(channel, None)
        self._deferred.pop(channel, None)
        self.ctx.node.unsubscribe(self, channel)

    def _schedule_token_check(self, when: float) -> None:
        """Call ``_check_token`` at unix time ``when``."""
        delay = max(0.0, when - time.time())
        self._token_timer = asyncio.get_running_loop().call_later(delay, self._check_token)

    def _check_token(self) -> None:
        self._token_timer = None
        if self._closing:
            return
        actions, again = self.session.check_token(grace=float(self.ctx.settings.heartbeat))
        for action in actions:
            self._do(action)
        if again is not None and self._token_timer is None:
            self._schedule_token_check(again)

    # -- the hub's Subscriber interface ----------------------------------------------

    def push(self, channel: str, offset: int, frame: bytes, coalesced: bool) -> None:
        """Queue an event frame (event loop only; never blocks).

        The fan-out calls this once per subscriber per event: it is kept to a few dict and
        list operations, with no further calls on the common path.
        """
        last = self._offsets.get(channel)
        if last is None:
            held = self._held.get(channel)
            if held is not None:  # its `subscribed` reply is not out yet
                held.append((offset, frame))
            return
        if offset <= last:
            return  # already delivered (from history, or a resync moved past it)
        self._offsets[channel] = offset
        if coalesced and self._queued > self._congested:
            # a slow leaderboard watcher skips to the latest version instead of being cut off
            if channel in self._deferred:
                self.ctx.metrics.frames_skipped.inc()
            self._deferred[channel] = frame
            return
        if self._first is None:
            self._first = frame
            self._mark_dirty()
        else:
            self._more.append(frame)

    def _push_frame(self, channel: str, offset: int, frame: bytes) -> None:
        last = self._offsets.get(channel)
        if last is None or offset <= last:
            return  # not subscribed any more, or already delivered
        self._offsets[channel] = offset
        self._queue(frame)

    def push_resync(self, channel: str, offset: int, frame: bytes) -> None:
        """Queue an unasked ``subscribed`` message and continue after ``offset``."""
        if channel in self._held or channel not in self._offsets:
            return  # its own `subscribed` reply is on the way
        self._offsets[channel] = offset
        self._deferred.pop(channel, None)
        self._queue(frame)

    # -- output ----------------------------------------------------------------------

    def _send(self, message: bytes) -> None:
        self._queue(text_frame(message))

    def _queue(self, frame: bytes) -> None:
        if self._closing:
            return
        if self._first is None:
            self._first = frame
            self._mark_dirty()
        else:
            self._more.append(frame)

    def _mark_dirty(self) -> None:
        ctx = self.ctx
        ctx.dirty.append(self)
        if not ctx.flush_scheduled:
            ctx.flush_scheduled = True
            asyncio.get_running_loop().call_soon(_flush_all, ctx)

    def _take(self) -> tuple[bytes, int]:
        """Return this tick's frames joined, and how many; the queue is empty after."""
        first = self._first
        if first is None:
            return b"", 0
        self._first = None
        more = self._more
        if not more:
            return first, 1
        data = first + b"".join(more)
        count = 1 + len(more)
        # the list is reused: a new one per connection per tick would survive into the
        # oldest GC generation and make full collections run over every connection
        more.clear()
        return data, count

    def _flush(self) -> int:
        """Write what this tick queued in one send; return the bytes written."""
        data, _ = self._take()
        if data:
            self._write(data)
        return len(data)

    def _write(self, data: bytes) -> None:
        stream, sock = self._stream, self._socket
        if stream is None or sock is None or self._closing:
            return
        if self._tornado_wrote and not stream.writing():
            self._tornado_wrote = False  # Tornado's buffer is empty again
        if self._queued == 0 and not self._tornado_wrote:
            # fast path: nothing buffered anywhere, so writing straight to the socket keeps
            # the byte order (a closed socket raises OSError here)
            try:
                sent = sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self.abort()
                return
            if sent == len(data):
                return
            data = data[sent:]
        size = len(data)
        if self._queued + size > self.ctx.settings.max_send_buffer:
            self._slow_consumer()
            return
        self._queued += size
        try:
            future = stream.write(data)
        except StreamClosedError:
            return
        future.add_done_callback(lambda f: self._drained(size, f))

    def _drained(self, size: int, future: Any) -> None:
        self._queued -= size
        if future.exception() is not None:
            return
        if self._queued == 0 and self._deferred:
            deferred, self._deferred = self._deferred, {}
            for frame in deferred.values():
                self._queue(frame)

    def _slow_consumer(self) -> None:
        self.ctx.metrics.slow_consumers.inc()
        logger.warning(
            "connection %s cut off: send buffer over %d bytes",
            self.session_id,
            self.ctx.settings.max_send_buffer,
        )
        # the close frame queues behind the unread data; Tornado aborts the stream if the
        # peer never reads it, so memory stays bounded by the limit
        self._close(CloseCode.TRY_AGAIN_LATER, "slow consumer")

    def _close(self, code: int, reason: str) -> None:
        if self._closing:
            return
        self.ctx.metrics.bytes_out.inc(self._flush())
        self._stop_output()
        self.close(code, reason)

    def _stop_output(self) -> None:
        self._closing = True
        self._first = None
        self._more.clear()
        self._offsets.clear()  # later fan-out pushes stop at their first lookup
        self._held.clear()
        self._deferred.clear()

    def abort(self) -> None:
        """Drop the connection without a close handshake."""
        self._stop_output()
        conn = self.ws_connection
        if conn is not None and conn.stream is not None:
            conn.stream.close()

    def on_close(self) -> None:
        ctx = self.ctx
        self._stop_output()
        if self._token_timer is not None:
            self._token_timer.cancel()
        for channel in list(self.session.channels):
            ctx.node.unsubscribe(self, channel)
        self.session.channels.clear()
        if self._beat_group >= 0:
            ctx.heartbeat.remove(self, self._beat_group)
            self._beat_group = -1
        if self in ctx.connections:
            ctx.connections.discard(self)
            ctx.per_ip[self._ip] -= 1
            if ctx.per_ip[self._ip] <= 0:
                del ctx.per_ip[self._ip]
        ctx.metrics.connections.set(len(ctx.connections))
        if ctx.shutting_down and not ctx.connections:
            ctx.all_closed.set()
        logger.info(
            "connection %s closed from %s: code=%s user=%s after %.1fs",
            self.session_id,
            self._ip,
            self.close_code,
            self.session.identity.user,
            time.monotonic() - self._opened,
        )

    def shutdown(self) -> None:
        """Close with 1012 (server restart): clients reconnect soon."""
        self._close(CloseCode.SERVICE_RESTART, "server restarting")


def _log_refusal(ctx: ServerContext, reason: str) -> None:
    """Log refused handshakes as one line a second: a herd must not also flood the log."""
    now = time.monotonic()
    ctx.refused_unlogged += 1
    if now - ctx.refused_logged_at >= 1.0:
        logger.warning("refused %d handshakes (latest: %s)", ctx.refused_unlogged, reason)
        ctx.refused_unlogged = 0
        ctx.refused_logged_at = now


def _flush_all(ctx: ServerContext) -> None:
    """Write every connection's queued frames (one callback per loop tick)."""
    ctx.flush_scheduled = False
    dirty, ctx.dirty = ctx.dirty, []
    frames = sent = 0
    for conn in dirty:
        data, count = conn._take()
        if count:
            frames += count
            sent += len(data)
            conn._write(data)
    # counted once per tick: a prometheus inc per connection would cost as much as the send
    ctx.metrics.messages_out.inc(frames)
    ctx.metrics.bytes_out.inc(sent)
