"""``GET /sse``: the Server-Sent Events transport, for networks that block WebSockets.

One stream carries the channels named in its URL (``channel``, repeatable) for the identity
of its ``token``, with the WebSocket's access rules, recovery and resync. Every message's
``data`` is the JSON object the WebSocket would send. Each event's ``id`` holds every
channel's position (``epoch:offset``, comma-separated, in the URL's channel order), so a
plain ``EventSource`` that reconnects sends them back as ``Last-Event-ID`` and recovers all
of its channels on any node. docs/PROTOCOL.md, "Server-Sent Events", is the contract.

A stream is a hub ``Subscriber`` like a WebSocket connection: events of a channel are held
until its ``subscribed`` message is written, and what the client has not read counts
against ``max_send_buffer`` (past it the stream is cut off; the client reconnects and
recovers).
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson
import tornado.web

from realtime import messages
from realtime.auth import ANONYMOUS, Identity, check_channel, verify_token
from realtime.context import ServerContext
from realtime.errors import BrokerUnavailable, ErrorCode, ProtocolError
from realtime.messages import Since

logger = logging.getLogger(__name__)

HEARTBEAT_COMMENT = b": ping\n\n"
MAX_EPOCH = 64


@dataclass(slots=True)
class _Channel:
    """One channel of a stream: its position and the frames held before ``subscribed``."""

    name: str
    epoch: str | None = None
    offset: int = 0
    # not None until `subscribed` is written: (offset, frame, kind) pushed meanwhile, kind
    # 0 an event, 1 a resync (replaces what was held before it), 2 the epoch notice
    held: list[tuple[int, bytes, int]] | None = None
    live: bool = False  # subscribed through the node (unsubscribe it at the end)


@dataclass(slots=True)
class _Output:
    """Messages queued in this loop tick, written together at its end."""

    buffer: bytearray = field(default_factory=bytearray)
    scheduled: bool = False


def _unsent(handler: tornado.web.RequestHandler) -> int:
    """Bytes written to the response that the kernel has not taken (the client's backlog)."""
    stream = getattr(handler.request.connection, "stream", None)
    if stream is None:
        return 0
    # Tornado has no public figure; its IOStream's write indexes are the exact one
    return int(stream._total_write_index - stream._total_write_done_index)


def parse_positions(text: str | None, count: int) -> list[Since | None]:
    """Parse a ``Last-Event-ID`` (``epoch:offset`` per channel, comma-separated).

    An entry that is empty or malformed is no position: that channel resyncs from its
    state, which never hides a gap.
    """
    positions: list[Since | None] = [None] * count
    if not text:
        return positions
    for index, entry in enumerate(text.split(",")[:count]):
        epoch, sep, offset = entry.strip().rpartition(":")
        if sep and epoch and len(epoch) <= MAX_EPOCH and offset.isdigit():
            value = int(offset)
            if value <= messages.MAX_OFFSET:
                positions[index] = Since(epoch=epoch, offset=value)
    return positions


def format_positions(channels: list[_Channel]) -> bytes:
    """The ``id`` of a message: every channel's position, in the stream's order."""
    return b",".join(
        f"{c.epoch}:{c.offset}".encode() if c.epoch is not None else b"" for c in channels
    )


def frame_payload(frame: bytes) -> bytes:
    """The payload of an unmasked server text frame (``frames.text_frame``)."""
    length = frame[1] & 0x7F
    if length < 126:
        return frame[2:]
    return frame[4:] if length == 126 else frame[10:]


def sse_message(data: bytes, event_id: bytes | None = None) -> bytes:
    """Encode one SSE message; ``data`` is JSON (a raw newline would split a data line)."""
    head = b"id: " + event_id + b"\n" if event_id is not None else b""
    if b"\n" in data or b"\r" in data:
        lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        return head + b"".join(b"data: " + line + b"\n" for line in lines) + b"\n"
    return head + b"data: " + data + b"\n\n"


class SseHandler(tornado.web.RequestHandler):
    """``GET /sse?channel=..&channel=..&token=..``: one event stream; a hub ``Subscriber``."""

    ctx: ServerContext

    def initialize(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self.ip = ""
        self.session_id = secrets.token_urlsafe(12)
        self.identity: Identity = ANONYMOUS
        self._channels: list[_Channel] = []
        self._by_name: dict[str, _Channel] = {}
        self._out = _Output()
        self._done = False
        self._registered = False
        self._beat_group = -1
        self._timers: list[asyncio.TimerHandle] = []
        self._ended: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # subscribes in flight (kept referenced)
        # the latest frame per coalesced channel while the client is behind (latest wins)
        self._deferred: dict[str, tuple[int, bytes]] | None = None
        self._congested = self.ctx.settings.max_send_buffer // 2

    # -- admission -------------------------------------------------------------------

    def prepare(self) -> None:
        """Refuse past the same limits as the WebSocket handshake (503 + Retry-After)."""
        ctx = self.ctx
        self.ip = self.request.remote_ip or ""
        if not self._origin_allowed():
            self.set_status(403)
            self.finish("origin not allowed")
            return
        settings = ctx.settings
        refusal = None
        if ctx.shutting_down:
            refusal = "server is shutting down"
        elif len(ctx.connections) + len(ctx.streams) >= settings.max_connections:
            refusal = "connection limit reached"
        elif settings.max_connections_per_ip and ctx.per_ip[self.ip] >= (
            settings.max_connections_per_ip
        ):
            refusal = "connection limit per address reached"
        elif ctx.connect_bucket is not None and not ctx.connect_bucket.take():
            refusal = "too many new connections, retry later"
        if refusal is not None:
            ctx.metrics.refused_connections.inc()
            self.set_status(503)
            self.set_header("Retry-After", str(random.randint(1, 5)))
            self.finish(refusal)

    def _origin_allowed(self) -> bool:
        """The WebSocket's Origin rule; no Origin (same-origin GET, non-browser) is allowed."""
        origin = self.request.headers.get("Origin")
        if origin is None:
            return True
        allowed = self.ctx.settings.allowed_origins
        if "*" in allowed:
            self.set_header("Access-Control-Allow-Origin", "*")
            return True
        if allowed:
            ok = origin.rstrip("/") in allowed
        else:
            ok = urlsplit(origin).netloc.lower() == self.request.host.lower()
        if ok:
            self.set_header("Access-Control-Allow-Origin", origin)
            self.set_header("Vary", "Origin")
        return ok

    # -- the stream ------------------------------------------------------------------

    async def get(self) -> None:
        ctx = self.ctx
        self._ended = asyncio.get_running_loop().create_future()
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Accel-Buffering", "no")  # nginx: do not buffer this response
        self._register()
        # a plain EventSource waits this long before reconnecting: spread a herd
        self._emit(b"retry: %d\n\n" % random.randint(1000, 3000))
        self._emit(sse_message(messages.welcome(self.session_id, ctx.settings.heartbeat)))
        self._authenticate(self.get_query_argument("token", None))
        names = list(dict.fromkeys(self.get_query_arguments("channel")))
        header = self.request.headers.get("Last-Event-ID")
        since = parse_positions(
            header if header is not None else self.get_query_argument("last_event_id", None),
            len(names),
        )
        for index, name in enumerate(names):
            self._open_channel(name, since[index])
        await self._ended

    def _register(self) -> None:
        ctx = self.ctx
        ctx.streams.add(self)
        ctx.per_ip[self.ip] += 1
        self._beat_group = ctx.heartbeat.add(self)
        self._registered = True
        logger.info("event stream %s opened from %s", self.session_id, self.ip)

    def _authenticate(self, token: str | None) -> None:
        if token is None:
            return
        settings = self.ctx.settings
        try:
            self.identity = verify_token(token, settings.secret or "", settings.require_exp)
        except ProtocolError as exc:
            # as a failed `auth` on the WebSocket: the stream goes on as anonymous
            self.ctx.metrics.auth_failures.labels(exc.code.value).inc()
            self._emit(sse_message(messages.error(exc.code, exc.message)))
            return
        self._emit(sse_message(messages.authed(self.identity.user or "", None)))
        if self.identity.expires is not None:
            self._at(self.identity.expires, self._token_expired)

    def _open_channel(self, name: str, since: Since | None) -> None:
        settings = self.ctx.settings
        channel = _Channel(name)
        if since is not None:
            channel.epoch, channel.offset = since.epoch, since.offset
        self._channels.append(channel)  # keeps the id's positions aligned with the URL
        try:
            check_channel(settings.namespaces, self.identity, name)
            if len(self._by_name) >= settings.max_subscriptions:
                raise ProtocolError(
                    ErrorCode.TOO_MANY_SUBSCRIPTIONS,
                    f"at most {settings.max_subscriptions} subscriptions per connection",
                    name,
                )
        except ProtocolError as exc:
            self._emit(sse_message(messages.error(exc.code, exc.message, exc.channel)))
            return
        channel.held = []
        channel.live = True
        self._by_name[name] = channel
        task = asyncio.get_running_loop().create_task(self._subscribe(channel, since))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _subscribe(self, channel: _Channel, since: Since | None) -> None:
        def on_read() -> None:
            if channel.held is not None:
                channel.held.clear()  # the store read about to be sent covers it

        try:
            result = await self.ctx.node.subscribe(self, channel.name, since, on_read)
        except BrokerUnavailable as exc:
            channel.live = False
            self.ctx.node.unsubscribe(self, channel.name)
            logger.warning("event stream subscribe %s failed: %s", channel.name, exc)
            # the client reconnects (with its positions) once the store answers again
            self._emit(b"retry: %d\n\n" % random.randint(2000, 4000))
            self._end()
            return
        if self._done:
            self.ctx.node.unsubscribe(self, channel.name)
            return
        reply = orjson.loads(result.reply)
        channel.epoch, channel.offset = str(reply["epoch"]), result.offset
        self._emit(sse_message(result.reply, format_positions(self._channels)))
        held, channel.held = channel.held or [], None
        for offset, frame, kind in held:
            if kind == 2:
                if channel.offset == 0:
                    self.push_epoch(channel.name, frame)
            elif kind == 1:
                if offset > channel.offset:
                    self.push_resync(channel.name, offset, frame)
            else:
                self._deliver(channel, offset, frame)

    # -- the hub's Subscriber interface ----------------------------------------------

    def push(self, channel: str, offset: int, frame: bytes, coalesced: bool) -> None:
        """Queue an event (never blocks); drop it if ``offset`` was already sent."""
        state = self._by_name.get(channel)
        if state is None or self._done:
            return
        if state.held is not None:
            state.held.append((offset, frame, 0))
            return
        if coalesced and _unsent(self) > self._congested:
            # a slow leaderboard watcher skips to the latest version instead of being cut off
            if self._deferred is None:
                self._deferred = {}
            elif channel in self._deferred:
                self.ctx.metrics.frames_skipped.inc()
            self._deferred[channel] = (offset, frame)
            return
        if self._deferred is not None and self._deferred.pop(channel, None) is not None:
            self.ctx.metrics.frames_skipped.inc()  # this newer frame replaces the deferred one
        self._deliver(state, offset, frame)

    def push_resync(self, channel: str, offset: int, frame: bytes) -> None:
        """Queue an unasked ``subscribed`` (recovered false) and continue after ``offset``."""
        state = self._by_name.get(channel)
        if state is None or self._done:
            return
        if state.held is not None:
            # its own `subscribed` may come from an older read: the resync follows it
            state.held.clear()
            state.held.append((offset, frame, 1))
            return
        if self._deferred is not None:
            self._deferred.pop(channel, None)
        payload = frame_payload(frame)
        state.epoch = str(orjson.loads(payload)["epoch"])
        state.offset = offset
        self._emit(sse_message(payload, format_positions(self._channels)))

    def push_epoch(self, channel: str, frame: bytes) -> None:
        """The epoch the channel's first event starts, for a stream still at offset 0."""
        state = self._by_name.get(channel)
        if state is None or self._done:
            return
        if state.held is not None:
            state.held.append((0, frame, 2))
            return
        if state.offset != 0:
            return
        payload = frame_payload(frame)
        state.epoch = str(orjson.loads(payload)["epoch"])
        self._emit(sse_message(payload, format_positions(self._channels)))

    def _deliver(self, state: _Channel, offset: int, frame: bytes) -> None:
        if offset <= state.offset:
            return  # already sent (from history, or a resync moved past it)
        state.offset = offset
        self._emit(sse_message(frame_payload(frame), format_positions(self._channels)))

    def heartbeat(self) -> None:
        """A comment line keeps proxies from timing the idle stream out."""
        self._emit(HEARTBEAT_COMMENT)

    # -- tokens ----------------------------------------------------------------------

    def _at(self, when: float, callback: Any) -> None:
        delay = max(0.0, when - time.time())
        self._timers.append(asyncio.get_running_loop().call_later(delay, callback))

    def _token_expired(self) -> None:
        """As on the WebSocket: tell the client, then drop private channels after a grace."""
        if self._done:
            return
        self._emit(sse_message(messages.error(ErrorCode.TOKEN_EXPIRED, "token has expired")))
        self._at(time.time() + self.ctx.settings.heartbeat, self._revoke_private)

    def _revoke_private(self) -> None:
        if self._done:
            return
        self.identity = ANONYMOUS
        for state in list(self._by_name.values()):
            try:
                check_channel(self.ctx.settings.namespaces, ANONYMOUS, state.name)
            except ProtocolError:
                del self._by_name[state.name]
                if state.live:
                    state.live = False
                    self.ctx.node.unsubscribe(self, state.name)
                message = messages.unsubscribed(state.name, None, "token_expired")
                self._emit(sse_message(message))

    # -- output ----------------------------------------------------------------------

    def _emit(self, data: bytes) -> None:
        out = self._out
        if self._done:
            return
        out.buffer += data
        if not out.scheduled:
            out.scheduled = True
            asyncio.get_running_loop().call_soon(self._write)

    def _write(self) -> None:
        """Hand what this tick queued to Tornado, which sends what the kernel takes now.

        What the kernel did not take stays in the stream's buffer: that is what the
        client has not read, and past ``max_send_buffer`` the stream is cut off.
        """
        out = self._out
        out.scheduled = False
        if self._done or not out.buffer:
            return
        data = bytes(out.buffer)
        out.buffer.clear()
        self.ctx.metrics.bytes_out.inc(len(data))
        try:
            self.write(data)
            self.flush().add_done_callback(self._written)
        except Exception:  # the client went away meanwhile
            self._end()
            return
        if _unsent(self) > self.ctx.settings.max_send_buffer:
            self.ctx.metrics.slow_consumers.inc()
            logger.warning(
                "event stream %s cut off: send buffer over %d bytes",
                self.session_id,
                self.ctx.settings.max_send_buffer,
            )
            self._end(abort=True)

    def _written(self, future: asyncio.Future[None]) -> None:
        if not future.cancelled() and future.exception() is not None:
            self._end()
            return
        deferred = self._deferred
        if deferred and not self._done and _unsent(self) <= self._congested:
            self._deferred = None
            for channel, (offset, frame) in deferred.items():
                state = self._by_name.get(channel)
                if state is not None and state.held is None:
                    self._deliver(state, offset, frame)

    # -- the end ---------------------------------------------------------------------

    def on_connection_close(self) -> None:
        self._end()

    def _end(self, abort: bool = False) -> None:
        """Forget the stream (once): unsubscribe, unregister, close the response."""
        if self._done:
            return
        self._done = True
        ctx = self.ctx
        for timer in self._timers:
            timer.cancel()
        for state in self._by_name.values():
            if state.live:
                ctx.node.unsubscribe(self, state.name)
        self._by_name.clear()
        if self._registered:
            self._registered = False
            ctx.streams.discard(self)
            ctx.per_ip[self.ip] -= 1
            if ctx.per_ip[self.ip] <= 0:
                del ctx.per_ip[self.ip]
            ctx.heartbeat.remove(self, self._beat_group)
            logger.info("event stream %s closed from %s", self.session_id, self.ip)
        connection = self.request.connection
        if abort and connection is not None:
            connection.close()  # type: ignore[attr-defined]
        elif self._out.buffer:
            self.write(bytes(self._out.buffer))  # e.g. a retry: hint; finish() sends it
            self._out.buffer.clear()
        if self._ended is not None and not self._ended.done():
            self._ended.set_result(None)
