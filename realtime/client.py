"""A Python client of the realtime protocol (asyncio), for bots, services and tests.

The same semantics as the browser client ``static/realtime.js``: it authenticates (and
re-authenticates with ``get_token`` when the token expires), reconnects with jittered
back-off (sooner after a server restart, 1012; after the server's hint, 1013), re-subscribes
with ``since`` so that missed events arrive first, resyncs from ``state`` when the server
cannot recover, and drops what it has already delivered by offset::

    async with RealtimeClient("ws://127.0.0.1:8888/ws", token=token) as rt:
        sub = rt.subscribe("contest:42", on_event=print, on_state=print)
        async for event in sub.events():
            ...

Handlers run on the event loop; an exception in one is logged, never raised into the client.
The wire protocol: docs/PROTOCOL.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import WebSocketClientConnection, WebSocketClosedError, websocket_connect

logger = logging.getLogger(__name__)

Handler = Callable[..., Any]
TokenSource = Callable[[], Awaitable[str]]
_RETRY_AFTER = re.compile(r"retry-after=(\d+(?:\.\d+)?)", re.IGNORECASE)


class ClientError(Exception):
    """The client stopped for good (a 1008 close, a bad URL)."""


class Subscription:
    """One channel's subscription and its position (``epoch``, ``offset``).

    ``status``: "pending" (waiting for a connection), "sent", "live", "closed"
    (unsubscribed by the server or by us) or "failed" (refused; ``error`` says why).
    """

    def __init__(
        self,
        client: RealtimeClient,
        channel: str,
        on_event: Handler | None,
        on_state: Handler | None,
        on_unsubscribed: Handler | None,
        on_error: Handler | None,
    ) -> None:
        self.client = client
        self.channel = channel
        self.epoch: str | None = None
        self.offset = 0
        self.status = "pending"
        self.error: dict[str, Any] | None = None
        self._handlers = (on_event, on_state, on_unsubscribed, on_error)
        self._queue: asyncio.Queue[dict[str, Any] | None] | None = None
        self._since_sent: dict[str, Any] | None = None

    @property
    def position(self) -> dict[str, Any] | None:
        """``{"epoch", "offset"}`` to resume from (e.g. in another process), or None."""
        return None if self.epoch is None else {"epoch": self.epoch, "offset": self.offset}

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Iterate over this channel's events (state resyncs arrive as ``op: "state"``).

        Only for a subscription made without ``on_event``.
        """
        if self._queue is None:
            raise RuntimeError("subscribed with on_event: events are given to the handler")
        while True:
            item = await self._queue.get()
            if item is None:
                return
            yield item

    async def unsubscribe(self) -> None:
        """Stop receiving this channel."""
        await self.client.unsubscribe(self.channel)

    def _call(self, index: int, *args: Any) -> None:
        handler = self._handlers[index]
        if handler is None:
            return
        try:
            handler(*args)
        except Exception:
            logger.exception("realtime client handler for %s failed", self.channel)

    def _deliver(self, event: dict[str, Any]) -> None:
        offset = event.get("offset")
        if isinstance(offset, int):
            if offset <= self.offset:
                return  # already delivered (same epoch)
            self.offset = offset
        if self._queue is not None:
            self._queue.put_nowait(event)
        self._call(0, event)

    def _resync(self, state: dict[str, Any] | None) -> None:
        if self._queue is not None:
            self._queue.put_nowait({"op": "state", "channel": self.channel, "state": state})
        self._call(1, state)

    def _end(self, reason: str) -> None:
        self.status = "closed"
        if self._queue is not None:
            self._queue.put_nowait(None)
        self._call(2, reason)


class RealtimeClient:
    """A connection to a realtime server that survives disconnects (see the module doc)."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        get_token: TokenSource | None = None,
        min_delay: float = 0.5,
        max_delay: float = 30.0,
        restart_delay: float = 1.5,
        stable_after: float = 10.0,
        connect_timeout: float = 10.0,
        headers: dict[str, str] | None = None,
    ) -> None:
        if not url.startswith(("ws://", "wss://")):
            raise ValueError(f"url must start with ws:// or wss://, got {url!r}")
        self.url = url
        self.session: str | None = None
        self.user: str | None = None
        self.server_time_offset = 0.0
        self.state = "idle"  # idle, connecting, connected, disconnected, closed
        self.connects = 0  # successful connections so far (reconnects = connects - 1)
        self._token = token
        self._get_token = get_token
        self._min_delay, self._max_delay = min_delay, max_delay
        self._restart_delay = restart_delay
        self._stable_after = stable_after
        self._connect_timeout = connect_timeout
        self._headers = headers or {}
        self._subs: dict[str, Subscription] = {}
        self._pending: dict[int, tuple[str, Subscription | None]] = {}
        self._next_id = 1
        self._ws: WebSocketClientConnection | None = None
        self._ready = False
        self._attempt = 0
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._listeners: dict[str, list[Handler]] = {}
        self._refreshing = False

    # -- public API --------------------------------------------------------------------

    async def __aenter__(self) -> RealtimeClient:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def start(self) -> None:
        """Start connecting in the background (reconnects until ``close``)."""
        if self._task is None:
            self._closed = False
            self._task = asyncio.get_running_loop().create_task(self._run(), name="realtime")

    async def wait_connected(self) -> None:
        """Wait until the client is connected (and authenticated); wrap in a timeout."""
        await self._connected.wait()

    def on(self, name: str, handler: Handler) -> None:
        """Listen to "connected", "disconnected" (code, reason) or "error" (dict)."""
        self._listeners.setdefault(name, []).append(handler)

    def subscribe(
        self,
        channel: str,
        *,
        on_event: Handler | None = None,
        on_state: Handler | None = None,
        on_unsubscribed: Handler | None = None,
        on_error: Handler | None = None,
        since: dict[str, Any] | None = None,
    ) -> Subscription:
        """Subscribe to ``channel``; ``since`` ({epoch, offset}) resumes a known position.

        Without ``on_event`` the events are queued for ``Subscription.events()``.
        """
        if channel in self._subs:
            raise ValueError(f"already subscribed to {channel}")
        sub = Subscription(self, channel, on_event, on_state, on_unsubscribed, on_error)
        if since is not None:
            sub.epoch, sub.offset = str(since["epoch"]), int(since["offset"])
        if on_event is None:
            sub._queue = asyncio.Queue()
        self._subs[channel] = sub
        if self._ready:
            self._send_subscribe(sub)
        return sub

    async def unsubscribe(self, channel: str) -> None:
        """Drop a subscription (the server is told when connected)."""
        sub = self._subs.pop(channel, None)
        if sub is None:
            return
        sub._end("client")
        if self._ready:
            self._send({"op": "unsubscribe", "channel": channel, "id": self._take_id()})

    def subscription(self, channel: str) -> Subscription | None:
        """The subscription of a channel, if any."""
        return self._subs.get(channel)

    def now(self) -> float:
        """The server's clock (unix seconds)."""
        return time.time() + self.server_time_offset

    async def set_token(self, token: str) -> None:
        """Use a new token from now on (sent at once when connected)."""
        self._token = token
        if self._ready:
            self._send_auth()

    async def close(self) -> None:
        """Close the connection and stop reconnecting."""
        self._closed = True
        ws = self._ws
        if ws is not None:
            ws.close(1000, "client closed")
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.state = "closed"
        for sub in self._subs.values():
            if sub._queue is not None:
                sub._queue.put_nowait(None)

    # -- connection loop ---------------------------------------------------------------

    async def _run(self) -> None:
        while not self._closed:
            delay = await self._connect_once()
            if self._closed or delay is None:
                break
            self.state = "disconnected"
            await asyncio.sleep(delay)
        self.state = "closed"

    async def _connect_once(self) -> float | None:
        """One connection's life; return the delay before the next (None: stop)."""
        self.state = "connecting"
        try:
            if self._get_token is not None and self._token_stale():
                self._token = await self._get_token()
            request = HTTPRequest(
                self.url, headers=self._headers, connect_timeout=self._connect_timeout
            )
            ws = await websocket_connect(request, max_message_size=64 * 1024 * 1024)
        except HTTPClientError as exc:
            self._emit("error", {"code": "handshake", "message": str(exc)})
            return self._backoff()
        except (OSError, TimeoutError) as exc:
            self._emit("error", {"code": "unreachable", "message": str(exc)})
            return self._backoff()
        except Exception as exc:  # getToken failed: retry with back-off
            self._emit("error", {"code": "token_unavailable", "message": repr(exc)})
            return self._backoff()
        self._ws = ws
        stable: asyncio.TimerHandle | None = None
        try:
            while True:
                message = await ws.read_message()
                if message is None:
                    break
                if isinstance(message, bytes):
                    continue
                for line in message.split("\n"):
                    if line.strip():
                        self._dispatch(orjson.loads(line))
                if self._ready and stable is None:
                    stable = asyncio.get_running_loop().call_later(
                        self._stable_after, self._reset_attempts
                    )
        finally:
            if stable is not None:
                stable.cancel()
            self._lost()
        code, reason = ws.close_code, ws.close_reason or ""
        self._emit("disconnected", code, reason)
        if self._closed:
            return None
        if code == 1008:
            self._emit("error", {"code": "policy_violation", "message": reason})
            return None
        if code == 1012:
            self._attempt += 1
            return random.uniform(0.1, self._restart_delay)
        if code == 1013:
            hint = _RETRY_AFTER.search(reason)
            wait = float(hint.group(1)) if hint else 0.0
            self._attempt += 1
            if wait > 0:
                return wait + random.uniform(0, max(1.0, wait * 0.5))
            return random.uniform(0.5, self._restart_delay * 2)
        return self._backoff()

    def _reset_attempts(self) -> None:
        self._attempt = 0

    def _backoff(self) -> float:
        """Full-jitter exponential back-off."""
        ceiling = min(self._max_delay, self._min_delay * (2**self._attempt))
        self._attempt += 1
        return random.uniform(min(0.05, ceiling), ceiling)

    def _token_stale(self) -> bool:
        if self._token is None:
            return True
        expires = _token_expiry(self._token)
        return expires is not None and expires - self.now() < 30.0

    def _lost(self) -> None:
        self._ws = None
        self._ready = False
        self._connected.clear()
        self._pending.clear()
        for sub in self._subs.values():
            if sub.status in ("sent", "live"):
                sub.status = "pending"

    # -- messages ----------------------------------------------------------------------

    def _take_id(self) -> int:
        cid = self._next_id
        self._next_id += 1
        return cid

    def _send(self, message: dict[str, Any]) -> None:
        ws = self._ws
        if ws is None:
            return
        with contextlib.suppress(WebSocketClosedError):
            ws.write_message(orjson.dumps(message).decode())

    def _send_auth(self) -> None:
        cid = self._take_id()
        self._pending[cid] = ("auth", None)
        self._send({"op": "auth", "token": self._token, "id": cid})

    def _send_subscribe(self, sub: Subscription) -> None:
        cid = self._take_id()
        command: dict[str, Any] = {"op": "subscribe", "channel": sub.channel, "id": cid}
        if sub.epoch is not None:
            command["since"] = {"epoch": sub.epoch, "offset": sub.offset}
        sub._since_sent = command.get("since")
        sub.status = "sent"
        self._pending[cid] = ("subscribe", sub)
        self._send(command)

    def _dispatch(self, msg: dict[str, Any]) -> None:
        pending = None
        cid = msg.get("id")
        if isinstance(cid, int):
            pending = self._pending.pop(cid, None)
        op = msg.get("op")
        if op == "event":
            sub = self._subs.get(msg.get("channel", ""))
            if sub is not None and sub.status == "live":
                sub._deliver(msg)
        elif op == "welcome":
            self.session = msg.get("session")
            if isinstance(msg.get("time"), int | float):
                self.server_time_offset = msg["time"] / 1000.0 - time.time()
            if self._token:
                self._send_auth()
            else:
                self._become_ready()
        elif op == "authed":
            self.user = msg.get("user")
            if not self._ready:
                self._become_ready()
            else:
                self._resubscribe()
        elif op == "subscribed":
            self._on_subscribed(msg, pending)
        elif op == "unsubscribed":
            if pending is None:
                self._on_dropped(msg)
        elif op == "error":
            self._on_error(msg, pending)

    def _become_ready(self) -> None:
        self._ready = True
        self.connects += 1
        self.state = "connected"
        self._connected.set()
        self._resubscribe()
        self._emit("connected", self.session, self.user)

    def _resubscribe(self) -> None:
        for sub in self._subs.values():
            if sub.status == "pending":
                self._send_subscribe(sub)

    def _on_subscribed(
        self, msg: dict[str, Any], pending: tuple[str, Subscription | None] | None
    ) -> None:
        sub = pending[1] if pending is not None else self._subs.get(msg.get("channel", ""))
        if sub is None or self._subs.get(sub.channel) is not sub:
            return  # a stale reply
        since = sub._since_sent
        sub._since_sent = None
        sub.status = "live"
        epoch, offset = str(msg.get("epoch")), msg.get("offset", 0)
        # an unasked reply at offset 0 names the epoch the channel's first event starts
        epoch_starts = pending is None and offset == 0 and sub.offset == 0
        recovered = (
            msg.get("recovered") is True
            and (since is not None if pending is not None else True)
            and (sub.epoch == epoch or epoch_starts)
        )
        if recovered:
            sub.epoch = epoch
            for event in msg.get("missed") or ():
                sub._deliver(event)
            if isinstance(offset, int) and offset > sub.offset:
                sub.offset = offset
        else:
            sub.epoch, sub.offset = epoch, offset if isinstance(offset, int) else 0
            sub._resync(msg.get("state"))

    def _on_dropped(self, msg: dict[str, Any]) -> None:
        sub = self._subs.get(msg.get("channel", ""))
        if sub is None:
            return
        reason = str(msg.get("reason") or "")
        if "expired" in reason:
            sub.status = "pending"  # subscribed again once re-authenticated
            self._refresh_token()
            return
        del self._subs[sub.channel]
        sub._end(reason)

    def _on_error(
        self, msg: dict[str, Any], pending: tuple[str, Subscription | None] | None
    ) -> None:
        code = str(msg.get("code"))
        if pending is not None and pending[0] == "subscribe" and pending[1] is not None:
            sub = pending[1]
            if code == "rate_limited":
                sub.status = "pending"
                asyncio.get_running_loop().call_later(
                    random.uniform(1.0, 2.0), self._retry_subscribe, sub
                )
                return
            if code == "token_expired" and self._get_token is not None:
                sub.status = "pending"
                self._refresh_token()
                return
            sub.status, sub.error = "failed", msg
            sub._call(3, msg)
            return
        if code == "token_expired" and self._get_token is not None:
            self._refresh_token()
        elif pending is not None and pending[0] == "auth" and not self._ready:
            self._become_ready()  # carry on as anonymous
        self._emit("error", msg)

    def _retry_subscribe(self, sub: Subscription) -> None:
        if self._ready and self._subs.get(sub.channel) is sub and sub.status == "pending":
            self._send_subscribe(sub)

    def _refresh_token(self) -> None:
        if self._refreshing or self._get_token is None:
            return
        self._refreshing = True
        ws = self._ws
        get_token = self._get_token

        async def refresh() -> None:
            try:
                self._token = await get_token()
            except Exception as exc:
                self._emit("error", {"code": "token_unavailable", "message": repr(exc)})
                if ws is not None and ws is self._ws:
                    ws.close(4001, "token unavailable")  # reconnecting fetches one again
                return
            finally:
                self._refreshing = False
            if ws is not None and ws is self._ws:
                self._send_auth()

        asyncio.get_running_loop().create_task(refresh())

    def _emit(self, name: str, *args: Any) -> None:
        for handler in self._listeners.get(name, ()):
            try:
                handler(*args)
            except Exception:
                logger.exception("realtime client %s listener failed", name)


def _token_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT, read without verifying it (only to refresh in time)."""
    import base64

    try:
        payload = token.split(".")[1]
        claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, orjson.JSONDecodeError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, int | float) else None
