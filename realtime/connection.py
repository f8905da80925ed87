"""One established WebSocket connection: it owns its socket once the handshake is done.

Tornado answers the HTTP upgrade (``realtime.handshake``) and then hands the socket over.
From there this class reads and writes it directly, registered once with the event loop:

- reading: one ``recv`` per readiness, frames parsed by ``frames.FrameParser``; a pong or
  a command costs one call, not Tornado's chain of futures (a heartbeat pong cost ~90 µs
  through it), and no coroutine or task is kept per connection;
- writing: the hub builds each event's frame once; a connection queues it, and once per
  loop tick every connection with queued frames writes them in one ``send``. Only what
  the kernel does not take is buffered, and that buffer is what the send-buffer limit
  counts.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import time
from typing import Any

import orjson

from realtime import messages
from realtime.context import ServerContext
from realtime.errors import BrokerUnavailable, CloseCode, ErrorCode
from realtime.frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameError,
    FrameParser,
    close_frame,
    control_frame,
    parse_close,
    text_frame,
)
from realtime.protocol import Action, Close, Reply, Session, Subscribe, Unsubscribe

logger = logging.getLogger(__name__)
audit = logging.getLogger("realtime.audit")

_PING_FRAME = control_frame(OP_PING)
REFUSED_CODES = frozenset({ErrorCode.UNAUTHORIZED, ErrorCode.FORBIDDEN, ErrorCode.TOKEN_EXPIRED})
CLOSE_TIMEOUT = 5.0  # how long a peer has to answer our close frame (Tornado's default too)
_READ_SIZE = 65536


class Connection:
    """One client connection; implements the hub's ``Subscriber``."""

    __slots__ = (
        "_alive",
        "_allowance",
        "_beat_group",
        "_close_timer",
        "_closing",
        "_congested",
        "_deferred",
        "_done",
        "_fd",
        "_first",
        "_held",
        "_more",
        "_offsets",
        "_opened",
        "_out",
        "_parser",
        "_serial",
        "_shut_after_flush",
        "_socket",
        "_token_at",
        "_token_timer",
        "close_code",
        "ctx",
        "ip",
        "session",
        "session_id",
    )

    def __init__(self, ctx: ServerContext, ip: str) -> None:
        self.ctx = ctx
        self.ip = ip
        self.session = Session(ctx.settings, ip_churn=ctx.ip_churn_bucket(ip), revoked=ctx.revoked)
        self.session_id = secrets.token_urlsafe(12)
        # frames queued this tick: the first in a slot (the common case, one event per
        # tick, touches no list), any further ones in a reused list
        self._first: bytes | None = None
        self._more: list[bytes] = []
        self._out: bytearray | None = None  # what the kernel did not take yet
        self._offsets: dict[str, int] = {}  # last offset sent per channel
        # what the hub pushed while a subscribe is in flight (until its `subscribed` reply)
        # / latest coalesced frame while congested: most connections never need them, so
        # they are created on first use
        self._held: dict[str, _Hold] | None = None
        self._deferred: dict[str, bytes] | None = None
        self._serial = 0  # numbers subscribe commands: only the current one may answer
        self._allowance = 0  # bytes of `subscribed` replies the send-buffer limit lets pass
        self._socket: socket.socket | None = None  # set by attach()
        self._fd = -1
        self._parser = FrameParser(ctx.settings.max_message_size)
        self._congested = ctx.settings.max_send_buffer // 2
        self._closing = False  # no more output but a close frame
        self._shut_after_flush = False  # close the socket once the output is written
        self._done = False
        self._alive = True  # answered since the last heartbeat ping
        self._beat_group = -1
        self._token_timer: Any = None
        self._token_at: float | None = None  # the token expiry the timer is set for
        self._close_timer: Any = None
        self._opened = time.monotonic()
        self.close_code: int | None = None

    # -- life cycle ------------------------------------------------------------------

    def open(self) -> None:
        """Register with the process and greet the client (output waits for ``attach``)."""
        ctx = self.ctx
        ctx.connections.add(self)
        self._beat_group = ctx.heartbeat.add(self)
        ctx.per_ip[self.ip] += 1
        ctx.metrics.connections.set(len(ctx.connections))
        logger.info("connection %s opened from %s", self.session_id, self.ip)
        self._send(messages.welcome(self.session_id, ctx.settings.heartbeat))

    def attach(self, sock: socket.socket, buffered: bytes) -> None:
        """Take over the socket from Tornado, with any bytes it had already read."""
        if self._done:
            sock.close()
            return
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._socket, self._fd = sock, sock.fileno()
        loop = asyncio.get_running_loop()
        loop.add_reader(self._fd, self._on_readable)
        if self._out:
            loop.add_writer(self._fd, self._on_writable)
        if buffered:
            self._received(buffered)

    def _finish(self) -> None:
        """Close the socket and forget the connection (once)."""
        if self._done:
            return
        self._done = True
        self._stop_output()
        self._out = None
        sock = self._socket
        if sock is not None:
            loop = asyncio.get_running_loop()
            loop.remove_reader(self._fd)
            loop.remove_writer(self._fd)
            sock.close()
            self._socket = None
        for timer in (self._token_timer, self._close_timer):
            if timer is not None:
                timer.cancel()
        self._token_timer = self._close_timer = None
        ctx = self.ctx
        for channel in list(self.session.channels):
            ctx.node.unsubscribe(self, channel)
        self.session.channels.clear()
        if self._beat_group >= 0:
            ctx.heartbeat.remove(self, self._beat_group)
            self._beat_group = -1
        if self in ctx.connections:
            ctx.connections.discard(self)
            ctx.per_ip[self.ip] -= 1
            if ctx.per_ip[self.ip] <= 0:
                del ctx.per_ip[self.ip]
                ctx.ip_churn.pop(self.ip, None)
        ctx.metrics.connections.set(len(ctx.connections))
        ctx.metrics.closes.labels(str(self.close_code or 1006)).inc()
        if ctx.shutting_down and not ctx.connections:
            ctx.all_closed.set()
        logger.info(
            "connection %s closed from %s: code=%s user=%s after %.1fs",
            self.session_id,
            self.ip,
            self.close_code,
            self.session.identity.user,
            time.monotonic() - self._opened,
        )

    def abort(self) -> None:
        """Drop the connection without a close handshake."""
        self._finish()

    def shutdown(self) -> None:
        """Close with 1012 (server restart): clients reconnect soon."""
        self._close(CloseCode.SERVICE_RESTART, "server restarting")

    def heartbeat(self) -> None:
        """Ping; drop a peer that has not answered (pong or anything) since the last ping."""
        if self._closing or self._done:
            return
        if not self._alive:
            logger.info("connection %s from %s: no answer to ping", self.session_id, self.ip)
            self.abort()
            return
        self._alive = False
        self._queue(_PING_FRAME)

    # -- reading ---------------------------------------------------------------------

    def _on_readable(self) -> None:
        sock = self._socket
        if sock is None:
            return
        try:
            data = sock.recv(_READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the peer went away without a close frame
            self._finish()
            return
        self._received(data)

    def _received(self, data: bytes) -> None:
        self._alive = True
        try:
            frames = self._parser.feed(data)
        except FrameError as exc:
            self._fail(exc.code, exc.reason)
            return
        for opcode, payload in frames:
            if self._done:
                return
            if opcode == OP_TEXT:
                try:
                    text = payload.decode("utf-8")
                except UnicodeDecodeError:
                    self._fail(CloseCode.INVALID_PAYLOAD, "invalid UTF-8")
                    return
                self._on_message(text)
            elif opcode == OP_BINARY:
                self._on_message(payload)
            elif opcode == OP_PING:
                if not self._closing:
                    self._queue(control_frame(OP_PONG, payload))
            elif opcode == OP_CLOSE:
                self._on_close_frame(payload)
                return
            # a pong only proves the peer is alive, which any frame does

    def _on_close_frame(self, payload: bytes) -> None:
        try:
            code, _ = parse_close(payload)  # also checks the reason is UTF-8
        except FrameError as exc:
            self._fail(exc.code, exc.reason)
            return
        if self._closing:  # the answer to our close frame: the handshake is complete
            self._finish()
            return
        self.close_code = code
        # echo the code (RFC 6455 section 5.5.1), then close the TCP connection ourselves
        self._flush()
        self._stop_output()
        self._write(
            close_frame(code) if code is not None else control_frame(OP_CLOSE), control=True
        )
        self._shut_when_written()

    def _fail(self, code: int, reason: str) -> None:
        """Close on a protocol error: send the close frame and stop reading."""
        if self._closing:
            self._finish()
            return
        logger.info("connection %s from %s: %s", self.session_id, self.ip, reason)
        self._close(code, reason)
        self._shut_when_written()

    # -- client commands -------------------------------------------------------------

    def _on_message(self, message: str | bytes) -> None:
        if self._closing:
            return
        self.ctx.metrics.messages_in.inc()
        actions = (
            self.session.receive_binary()
            if isinstance(message, bytes)
            else self.session.receive(message)
        )
        for action in actions:
            self._do(action)

    def _do(self, action: Action) -> None:
        if isinstance(action, Reply):
            if action.error is not None:
                self._audit(action)
            self._send(action.data)
            expires = self.session.identity.expires
            if expires != self._token_at:
                # a new token (maybe shorter-lived, or another user's): its own expiry counts
                if self._token_timer is not None:
                    self._token_timer.cancel()
                    self._token_timer = None
                self._token_at = expires
                if expires is not None:
                    self._schedule_token_check(expires)
        elif isinstance(action, Subscribe):
            self._serial += 1
            if self._held is None:
                self._held = {}
            self._held[action.channel] = _Hold(self._serial)
            asyncio.get_running_loop().create_task(self._subscribe(action, self._serial))
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
            self.ip,
            reply.channel,
            code.value,
            self.session_id,
        )

    def _current(self, channel: str, serial: int) -> bool:
        """True while ``serial`` is the channel's subscribe in flight (not superseded)."""
        held = self._held
        if held is None or self._closing:
            return False
        hold = held.get(channel)
        return hold is not None and hold.serial == serial

    async def _subscribe(self, action: Subscribe, serial: int) -> None:
        channel = action.channel

        def on_read() -> None:
            # the store read about to be sent covers everything pushed until now
            if self._current(channel, serial):
                assert self._held is not None
                self._held[channel].items.clear()

        try:
            result = await self.ctx.node.subscribe(self, channel, action.since, on_read)
        except BrokerUnavailable as exc:
            if self._current(channel, serial):
                self.session.subscribe_failed(channel)
                self._unhold(channel)
                self.ctx.node.unsubscribe(self, channel)
                logger.warning("subscribe %s failed: %s", channel, exc)
                self._close(CloseCode.TRY_AGAIN_LATER, "broker unavailable, retry-after=2")
            else:
                self._forget_stale(channel)
            return
        if not self._current(channel, serial):
            # unsubscribed (maybe subscribed again), or closing, while it was in flight:
            # only the current command's reply may go out
            self._forget_stale(channel)
            return
        hold = self._held[channel] if self._held is not None else _Hold(serial)
        self._unhold(channel)
        frame = text_frame(self._with_id(result.reply, action.command_id))
        # one reply may pass the send-buffer limit: a large `missed` list is not a slow reader
        self._allowance += len(frame)
        self._queue(frame)
        current = result.offset
        self._offsets[channel] = current
        for offset, frame, kind in hold.items:
            if kind == _EPOCH:
                if current == 0:
                    self._queue(frame)  # the reply said the empty epoch
                continue
            if offset <= current:
                continue  # covered by the reply (or by a later resync)
            current = offset
            if kind == _RESYNC:
                self.push_resync(channel, offset, frame)
            else:
                self._push_frame(channel, offset, frame)

    def _forget_stale(self, channel: str) -> None:
        """A superseded subscribe finished: leave the hub unless a newer one uses it."""
        if self._closing or self._done or channel not in self.session.channels:
            self.ctx.node.unsubscribe(self, channel)

    def _unhold(self, channel: str) -> None:
        held = self._held
        if held is None:
            return
        held.pop(channel, None)
        if not held:
            self._held = None  # an emptied dict keeps its table

    @staticmethod
    def _with_id(reply: bytes, command_id: str | int | None) -> bytes:
        if command_id is None:
            return reply
        return reply[:-1] + b',"id":' + orjson.dumps(command_id) + b"}"

    def _drop(self, channel: str) -> None:
        self._offsets.pop(channel, None)
        self._unhold(channel)
        if self._deferred is not None:
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
            hold = self._held.get(channel) if self._held is not None else None
            if hold is not None:  # its `subscribed` reply is not out yet
                hold.items.append((offset, frame, _EVENT))
            return
        if offset <= last:
            return  # already delivered (from history, or a resync moved past it)
        self._offsets[channel] = offset
        deferred = self._deferred
        if coalesced and self._out is not None and len(self._out) > self._congested:
            # a slow leaderboard watcher skips to the latest version instead of being cut off
            if deferred is None:
                self._deferred = deferred = {}
            elif channel in deferred:
                self.ctx.metrics.frames_skipped.inc()
            deferred[channel] = frame
            return
        if deferred is not None and deferred.pop(channel, None) is not None:
            # this newer frame goes out now: the older deferred one must not follow it
            self.ctx.metrics.frames_skipped.inc()
        if self._first is None:
            self._first = frame
            ctx = self.ctx  # _mark_dirty, inlined: this runs once per delivery
            ctx.dirty.append(self)
            if not ctx.flush_scheduled:
                ctx.flush_scheduled = True
                asyncio.get_running_loop().call_soon(_flush_all, ctx)
        else:
            self._more.append(frame)

    def _push_frame(self, channel: str, offset: int, frame: bytes) -> None:
        last = self._offsets.get(channel)
        if last is None or offset <= last:
            return  # not subscribed any more, or already delivered
        self._offsets[channel] = offset
        if self._deferred is not None:
            self._deferred.pop(channel, None)
        self._queue(frame)

    def push_resync(self, channel: str, offset: int, frame: bytes) -> None:
        """Queue an unasked ``subscribed`` message and continue after ``offset``.

        While the channel's own subscribe is in flight the resync is held too: its reply
        may come from an older store read, and then the resync must follow it. A resync
        supersedes whatever was held before it.
        """
        hold = self._held.get(channel) if self._held is not None else None
        if hold is not None:
            hold.items.clear()
            hold.items.append((offset, frame, _RESYNC))
            return
        if channel not in self._offsets:
            return  # not subscribed
        self._offsets[channel] = offset
        if self._deferred is not None:
            self._deferred.pop(channel, None)
        self._queue(frame)

    def push_epoch(self, channel: str, frame: bytes) -> None:
        """Queue the epoch of the channel's first event if nothing was sent here yet."""
        hold = self._held.get(channel) if self._held is not None else None
        if hold is not None:
            hold.items.append((0, frame, _EPOCH))
        elif self._offsets.get(channel) == 0:
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

    def _flush(self) -> int:
        """Write what this tick queued in one send; return the bytes written.

        ``_flush_all`` does the same inline for every dirty connection (the hot path).
        """
        data = self._first
        if data is None:
            return 0
        self._first = None
        more = self._more
        if more:
            data += b"".join(more)
            # the list is reused: a new one per connection per tick would survive into the
            # oldest GC generation and make full collections run over every connection
            more.clear()
        self._write(data)
        return len(data)

    def _write(self, data: bytes, control: bool = False) -> None:
        """Send ``data`` now, buffering what the kernel does not take.

        Event frames count against the send-buffer limit; a close frame (``control``:
        small, and the last) goes out past it and while closing.
        """
        if self._closing and not control:
            return
        out = self._out
        if out is None:
            sock = self._socket
            if sock is not None:
                # fast path: nothing buffered, so the bytes go straight to the kernel
                try:
                    sent = sock.send(data)
                except (BlockingIOError, InterruptedError):
                    sent = 0
                except OSError:
                    self._finish()
                    return
                if sent == len(data):
                    self._allowance = 0
                    return
                data = data[sent:]
            out = self._out = bytearray()
            if sock is not None:
                asyncio.get_running_loop().add_writer(self._fd, self._on_writable)
        limit = self.ctx.settings.max_send_buffer + self._allowance
        if not control and len(out) + len(data) > limit:
            self._slow_consumer()
            return
        out += data

    def _on_writable(self) -> None:
        out, sock = self._out, self._socket
        if sock is None:
            return
        if out:
            try:
                sent = sock.send(out)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._finish()
                return
            del out[:sent]
            if out:
                return
        asyncio.get_running_loop().remove_writer(self._fd)
        self._out = None
        self._allowance = 0
        if self._shut_after_flush:
            self._finish()
            return
        deferred = self._deferred
        if deferred and not self._closing:
            self._deferred = None
            for frame in deferred.values():
                self._queue(frame)

    def _shut_when_written(self) -> None:
        """Close the TCP connection once our last frames (the close frame) are out."""
        if self._out is None:
            self._finish()
            return
        self._shut_after_flush = True
        if self._close_timer is None:  # a peer that stopped reading does not hold it open
            self._close_timer = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, self.abort)

    def _slow_consumer(self) -> None:
        self.ctx.metrics.slow_consumers.inc()
        logger.warning(
            "connection %s cut off: send buffer over %d bytes",
            self.session_id,
            self.ctx.settings.max_send_buffer,
        )
        # the close frame queues behind the unread data; if the peer never reads it, the
        # close timeout drops the socket, so memory stays bounded by the limit
        self._close(CloseCode.TRY_AGAIN_LATER, "slow consumer")

    def _close(self, code: int, reason: str) -> None:
        """Start the closing handshake: queued frames, then a close frame; wait for the answer."""
        if self._closing or self._done:
            return
        self.ctx.metrics.bytes_out.inc(self._flush())
        if self._closing or self._done:
            return  # that last write found a slow consumer or a dead peer, and closed
        self._stop_output()
        self.close_code = code
        self._write(close_frame(code, reason), control=True)
        if not self._done:
            self._close_timer = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, self.abort)

    def _stop_output(self) -> None:
        self._closing = True
        self._first = None
        self._more.clear()
        self._offsets.clear()  # later fan-out pushes stop at their first lookup
        self._held = None
        self._deferred = None

    # -- operator control (realtime.admin) -------------------------------------------

    def disconnect(self, reason: str) -> None:
        """Close with 1008 (policy violation): the browser client does not reconnect."""
        self._close(CloseCode.POLICY_VIOLATION, reason)

    def revoke(self, channels: list[str] | None, reason: str) -> list[str]:
        """Drop subscriptions and send each an ``unsubscribed`` with ``reason``.

        ``channels`` None: every non-public one, and the connection continues as anonymous
        (as after token expiry). Returns the channels dropped.
        """
        from realtime.auth import ANONYMOUS  # here: this section is all realtime.admin adds

        if self._closing or self._done:
            return []
        session = self.session
        if channels is None:
            namespaces = self.ctx.settings.namespaces
            dropped = [
                c
                for c in session.channels
                if (ns := namespaces.get(c.split(":", 1)[0])) is None or ns.access != "public"
            ]
            session.identity = ANONYMOUS
        else:
            dropped = [c for c in channels if c in session.channels]
        for channel in sorted(dropped):
            session.channels.discard(channel)
            self._do(Unsubscribe(channel, None, reason))
        return dropped


_EVENT, _RESYNC, _EPOCH = 0, 1, 2  # kinds of held frames


class _Hold:
    """What the hub pushed for a channel while its subscribe (number ``serial``) is in flight:
    (offset, frame, kind) in order."""

    __slots__ = ("items", "serial")

    def __init__(self, serial: int) -> None:
        self.serial = serial
        self.items: list[tuple[int, bytes, int]] = []


def _flush_all(ctx: ServerContext) -> None:
    """Write every connection's queued frames (one callback per loop tick)."""
    ctx.flush_scheduled = False
    dirty, ctx.dirty = ctx.dirty, []
    frames = sent = 0
    for conn in dirty:
        # Connection._flush, inlined: this loop runs once per delivery
        data = conn._first
        if data is None:
            continue  # closed since it was queued
        conn._first = None
        more = conn._more
        if more:
            frames += len(more)
            data += b"".join(more)
            more.clear()
        frames += 1
        sent += len(data)
        conn._write(data)
    # counted once per tick: a prometheus inc per connection would cost as much as the send
    ctx.metrics.messages_out.inc(frames)
    ctx.metrics.bytes_out.inc(sent)
