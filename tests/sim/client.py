"""A simulated browser client that follows the protocol the way static/realtime.js does.

It keeps realtime.js's bookkeeping (subscriptions with their last position, pending command
ids, stale-reply filtering, back-off, token refresh on ``token_expired``) and records every
message the server sent, as the checker's history. Its own filtering (dropping an offset it
already has) does not hide anything from the checker: the history is the wire.

Next to the history it keeps ``allowed``: for each record of a private channel, whether the
client had the right to it, judged from the client's own knowledge (which token the server
held when a command was processed, the token's ``exp`` plus the grace period, with a little
slack for frames already queued).
"""

from __future__ import annotations

import random
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from tests.sim.loop import Pipe

if TYPE_CHECKING:
    from tests.sim.world import World

READ_PERIOD = 0.05  # a slow reader reads every this often
RIGHT_SLACK = 1.0  # seconds a frame queued before a revocation may still be on its way


@dataclass(frozen=True, slots=True)
class Token:
    """A token the simulation issued: its JWT and what it grants."""

    jwt: str
    user: str
    channels: tuple[str, ...]
    exp: float  # virtual wall-clock seconds

    def grants(self, channel: str) -> bool:
        namespace, _, rest = channel.partition(":")
        if namespace == "user":
            return rest == self.user
        return channel in self.channels


@dataclass(slots=True)
class Sub:
    channel: str
    epoch: str | None = None
    offset: int = 0
    status: str = "pending"  # pending | sent | live | closed | failed
    sent_since: dict[str, Any] | None = None
    sent_at: float = 0.0


def _frame(opcode: int, payload: bytes) -> bytes:
    """A client frame: masked (with a zero key, which leaves the payload as it is)."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return head + b"\0\0\0\0" + payload


class SimClient:
    """One page with a RealtimeClient; ``history`` is what it saw."""

    def __init__(
        self,
        world: World,
        cid: str,
        seed: int,
        token: Token | None,
        get_token: Callable[[], Token] | None,
    ) -> None:
        self.world = world
        self.loop = world.loop
        self.cid = cid
        self.rng = random.Random(seed)
        self.token = token
        self.get_token = get_token
        self.history: list[dict[str, Any]] = []
        self.allowed: list[bool] = []
        self.subs: dict[str, Sub] = {}
        self.pending: dict[int, tuple[str, Any]] = {}
        self.next_id = 1
        self.pipe: Pipe | None = None
        self.ready = False
        self.closed = False  # stopped for good (1008, a refused token)
        self.state = "connecting"
        self.attempt = 0
        self.read_rate = 0  # bytes per 10 ms when slow; 0: reads at once
        self._buf = b""
        self._read_scheduled = False
        self._reconnect: Any = None
        self._stable: Any = None
        self._refreshing = False
        # what the server's session holds: the last token sent in an auth, and the last one
        # whose `authed` came back (frames after it were queued under it)
        self._server_token: Token | None = None
        self._wire_token: Token | None = None
        self._auth_tokens: dict[int, Token] = {}

    # -- connection life cycle ---------------------------------------------------------

    def start(self) -> None:
        self._connect()

    def _connect(self) -> None:
        if self.closed or self.pipe is not None:
            return
        self._reconnect = None
        self.state = "connecting"
        now = self.world.wall()
        stale = self.token is None or self.token.exp - now < 5.0
        if self.get_token is not None and stale:
            self.loop.call_later(0.01, self._token_then_open)
        else:
            self._open()

    def _token_then_open(self) -> None:
        if self.closed or self.pipe is not None:
            return
        assert self.get_token is not None
        self.token = self.get_token()
        self._open()

    def _open(self) -> None:
        self.ready = False
        self._buf = b""
        self._server_token = self._wire_token = None
        self.pipe = self.world.accept(self)
        self.history.append({"kind": "connect", "t": self.loop.time()})
        self.allowed.append(True)
        if self.read_rate:
            self.set_slow(self.read_rate)

    def drop(self) -> None:
        """The network goes away under the page (no close frame): reconnect later."""
        if self.pipe is None:
            return
        self._lost(None)

    def _lost(self, code: int | None, reason: str = "") -> None:
        pipe = self.pipe
        if pipe is not None:
            pipe.client_close()
            self.pipe = None
        self.history.append({"kind": "disconnect", "code": code, "t": self.loop.time()})
        self.allowed.append(True)
        self.ready = False
        self.pending.clear()
        if self._stable is not None:
            self._stable.cancel()
            self._stable = None
        for sub in self.subs.values():
            if sub.status in ("sent", "live"):
                sub.status = "pending"
        if code == 1008:
            self.closed = True
            self.state = "closed"
            return
        if code == 1012:
            delay = self.rng.uniform(0.1, 1.5)
            self.attempt += 1
        elif code == 1013:
            match = re.search(r"retry-after=(\d+(?:\.\d+)?)", reason)
            wait = float(match.group(1)) if match else 0.0
            if wait > 0:
                delay = wait + self.rng.uniform(0, max(1.0, wait * 0.5))
            else:
                delay = self.rng.uniform(0.5, 3.0)
            self.attempt += 1
        else:
            delay = self._backoff()
        self.state = "disconnected"
        self._reconnect = self.loop.call_later(delay, self._connect)

    def _backoff(self) -> float:
        ceiling = min(20.0, 0.5 * 2**self.attempt)
        self.attempt += 1
        return self.rng.uniform(min(0.05, ceiling), ceiling)

    # -- reading -----------------------------------------------------------------------

    def on_down(self) -> None:
        """The server wrote (or closed): read now, unless this client reads slowly."""
        if self.read_rate == 0 and not self._read_scheduled:
            self._read_scheduled = True
            self.loop.call_soon(self._read)

    def set_slow(self, rate: int) -> None:
        """Read at most ``rate`` bytes every 50 ms (0: read everything at once)."""
        self.read_rate = rate
        if rate and not self._read_scheduled:
            self._read_scheduled = True
            self.loop.call_later(READ_PERIOD, self._read)
        elif not rate:
            self.on_down()

    def _read(self) -> None:
        self._read_scheduled = False
        pipe = self.pipe
        if pipe is None:
            return
        limit = self.read_rate or (1 << 30)
        data = pipe.client_read(limit)
        if data:
            self._buf += data
            self._parse(pipe)
        if self.pipe is pipe and pipe.server_closed and not pipe.down:
            self._lost(None)  # closed without a close frame (or we never read it)
            return
        if self.read_rate and self.pipe is not None and not self._read_scheduled:
            self._read_scheduled = True
            self.loop.call_later(READ_PERIOD, self._read)

    def _parse(self, pipe: Pipe) -> None:
        buf = self._buf
        pos = 0
        while len(buf) - pos >= 2 and self.pipe is pipe:
            b0, b1 = buf[pos], buf[pos + 1]
            n, head = b1 & 0x7F, 2
            if n == 126:
                if len(buf) - pos < 4:
                    break
                n, head = struct.unpack_from("!H", buf, pos + 2)[0], 4
            elif n == 127:
                if len(buf) - pos < 10:
                    break
                n, head = struct.unpack_from("!Q", buf, pos + 2)[0], 10
            if len(buf) - pos < head + n:
                break
            payload = buf[pos + head : pos + head + n]
            pos += head + n
            opcode = b0 & 0x0F
            if opcode == 0x1:
                self._message(orjson.loads(payload))
            elif opcode == 0x9:
                self._send_raw(_frame(0xA, payload))
            elif opcode == 0x8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                reason = payload[2:].decode("utf-8", "replace")
                self._send_raw(_frame(0x8, payload[:2]))
                self._lost(code, reason)
                return
        self._buf = buf[pos:]

    # -- sending -----------------------------------------------------------------------

    def _send_raw(self, frame: bytes) -> None:
        if self.pipe is not None:
            self.pipe.client_write(frame)

    def send_binary(self, count: int) -> None:
        """Send ``count`` binary frames (abuse: they must count against the rate limit)."""
        for _ in range(count):
            self._send_raw(_frame(0x2, b"{}"))

    def _command(self, obj: dict[str, Any]) -> None:
        if self.world.trace is not None:
            shown = {k: (v if k != "token" else "...") for k, v in obj.items()}
            self.world.log(f"{self.cid} > {orjson.dumps(shown).decode()}")
        self._send_raw(_frame(0x1, orjson.dumps(obj)))

    def _send_auth(self) -> None:
        assert self.token is not None
        cid = self.next_id
        self.next_id += 1
        self.pending[cid] = ("auth", None)
        self._auth_tokens[cid] = self.token
        self._server_token = self.token
        self._command({"op": "auth", "token": self.token.jwt, "id": cid})

    def _send_subscribe(self, sub: Sub) -> None:
        cid = self.next_id
        self.next_id += 1
        command: dict[str, Any] = {"op": "subscribe", "channel": sub.channel, "id": cid}
        if sub.epoch is not None:
            command["since"] = {"epoch": sub.epoch, "offset": sub.offset}
        sub.sent_since = command.get("since")
        sub.status = "sent"
        sub.sent_at = self.loop.time()
        token = self._server_token
        may = (
            token is not None and token.grants(sub.channel) and self.world.wall() < token.exp
        ) or not self.world.is_private(sub.channel)
        self.pending[cid] = ("subscribe", (sub, may, sub.sent_since))
        self._command(command)

    # -- the page's API ----------------------------------------------------------------

    def subscribe(self, channel: str, since: tuple[str, int] | None = None) -> None:
        if channel in self.subs or self.closed:
            return
        sub = self.subs[channel] = Sub(channel)
        if since is not None:
            sub.epoch, sub.offset = since
        if self.ready:
            self._send_subscribe(sub)

    def unsubscribe(self, channel: str) -> Sub | None:
        sub = self.subs.pop(channel, None)
        if sub is None:
            return None
        was_sent = sub.status in ("live", "sent")
        sub.status = "closed"
        if was_sent and self.ready:
            cid = self.next_id
            self.next_id += 1
            self.pending[cid] = ("unsubscribe", sub)
            self._command({"op": "unsubscribe", "channel": channel, "id": cid})
        return sub

    def resubscribe(self, channel: str) -> None:
        """Unsubscribe, then subscribe again from the last position (``since``)."""
        sub = self.unsubscribe(channel)
        if sub is not None:
            since = (sub.epoch, sub.offset) if sub.epoch is not None else None
            self.subscribe(channel, since)

    def strict_mode(self, channel: str) -> None:
        """What a React StrictMode double mount sends: subscribe, unsubscribe, subscribe."""
        self.unsubscribe(channel)
        self.subscribe(channel)
        self.unsubscribe(channel)
        self.subscribe(channel)

    def set_token(self, token: Token) -> None:
        self.token = token
        if self.ready:
            self._send_auth()

    # -- messages from the server ------------------------------------------------------

    def _record(self, rec: dict[str, Any], allowed: bool) -> None:
        rec["t"] = self.loop.time()
        self.history.append(rec)
        self.allowed.append(allowed)

    def _may_read(self, channel: str) -> bool:
        if not self.world.is_private(channel):
            return True
        token = self._wire_token
        return (
            token is not None
            and token.grants(channel)
            and self.world.wall() < token.exp + self.world.grace + RIGHT_SLACK
        )

    def _message(self, msg: dict[str, Any]) -> None:
        if self.world.trace is not None:
            text = orjson.dumps(msg).decode()
            self.world.log(f"{self.cid} < {text if len(text) < 200 else text[:197] + '...'}")
        op = msg.get("op")
        mid = msg.get("id")
        pending = self.pending.pop(mid, None) if isinstance(mid, int) else None
        channel = str(msg.get("channel"))
        if op == "event":
            self._record(
                {
                    "kind": "event",
                    "channel": channel,
                    "offset": msg["offset"],
                    "type": msg["type"],
                    "data": msg["data"],
                },
                self._may_read(channel),
            )
            sub = self.subs.get(channel)
            if sub is not None and sub.status == "live":
                self._deliver(sub, msg)
        elif op == "welcome":
            if self.token is not None:
                self._send_auth()
            else:
                self._become_ready()
        elif op == "authed":
            if pending is not None and isinstance(mid, int):
                self._wire_token = self._auth_tokens.get(mid)
            self._refreshing = False
            if not self.ready:
                self._become_ready()
            else:
                self._resubscribe_all()
        elif op == "subscribed":
            self._on_subscribed(msg, pending)
        elif op == "unsubscribed":
            self._record(
                {"kind": "unsubscribed", "channel": channel, "reason": msg.get("reason")}, True
            )
            if pending is None:
                self._on_dropped(msg)
        elif op == "error":
            self._record(
                {"kind": "error", "channel": msg.get("channel"), "code": msg.get("code")}, True
            )
            self._on_error(msg, pending)

    def _on_subscribed(self, msg: dict[str, Any], pending: tuple[str, Any] | None) -> None:
        channel = msg["channel"]
        asked = "id" in msg
        if asked and pending is not None and pending[0] == "subscribe":
            allowed = bool(pending[1][1])
        elif asked:
            allowed = not self.world.is_private(channel)  # a reply to nothing we know
        else:
            allowed = self._may_read(channel)
        state = msg.get("state")
        since = pending[1][2] if pending is not None and pending[0] == "subscribe" else None
        self._record(
            {
                "kind": "subscribed",
                "channel": channel,
                "epoch": msg["epoch"],
                "offset": msg["offset"],
                "recovered": msg["recovered"] if "missed" in msg else None,
                "missed": [
                    {"offset": m["offset"], "type": m["type"], "data": m["data"]}
                    for m in msg.get("missed") or ()
                ],
                "state": None
                if state is None
                else {"offset": state["offset"], "type": state["type"], "data": state["data"]},
                "asked": asked,
                "since": since,
            },
            allowed,
        )
        if pending is not None and pending[0] == "subscribe":
            sub: Sub | None = pending[1][0]
        else:
            sub = self.subs.get(channel)
        if (
            sub is None
            or self.subs.get(sub.channel) is not sub
            or sub.status in ("closed", "failed")
        ):
            return  # a stale reply
        since = sub.sent_since
        sub.sent_since = None
        sub.status = "live"
        # an unasked reply at offset 0 names the epoch the channel's first event starts
        epoch_starts = pending is None and msg["offset"] == 0 and sub.offset == 0
        recovered = (
            msg["recovered"] is True
            and (since is not None if pending is not None else True)
            and (sub.epoch == msg["epoch"] or epoch_starts)
        )
        if recovered:
            sub.epoch = msg["epoch"]
            for event in msg.get("missed") or ():
                self._deliver(sub, event)
            if msg["offset"] > sub.offset:
                sub.offset = msg["offset"]
        else:
            sub.epoch, sub.offset = msg["epoch"], msg["offset"]

    def _deliver(self, sub: Sub, event: dict[str, Any]) -> None:
        if event["offset"] <= sub.offset:
            return
        sub.offset = event["offset"]

    def _on_dropped(self, msg: dict[str, Any]) -> None:
        sub = self.subs.get(msg["channel"])
        if sub is None or sub.status in ("closed", "failed"):
            return
        if "expired" in (msg.get("reason") or ""):
            sub.status = "pending"
            self._refresh_token()
            return
        del self.subs[sub.channel]
        sub.status = "closed"

    def _on_error(self, msg: dict[str, Any], pending: tuple[str, Any] | None) -> None:
        code = msg.get("code")
        if pending is not None and pending[0] == "auth":
            if code == "token_expired" and self.get_token is not None:
                self._refresh_token()
                return
            self._stop()
            return
        sub: Sub | None = None
        if pending is not None and pending[0] == "subscribe":
            sub = pending[1][0]
        elif pending is None and msg.get("channel"):
            candidate = self.subs.get(msg["channel"])
            if candidate is not None and candidate.status == "sent":
                sub = candidate
        if sub is not None:
            if self.subs.get(sub.channel) is not sub or sub.status in ("closed", "failed"):
                return
            if code == "rate_limited":
                sub.status = "pending"
                self.loop.call_later(self.rng.uniform(1, 3), self._retry, sub)
                return
            if code == "token_expired" and self.get_token is not None:
                sub.status = "pending"
                self._refresh_token()
                return
            del self.subs[sub.channel]
            sub.status = "failed"
            return
        if pending is None and code == "token_expired":
            self._refresh_token()

    def _retry(self, sub: Sub) -> None:
        if self.ready and sub.status == "pending" and self.subs.get(sub.channel) is sub:
            self._send_subscribe(sub)

    def _refresh_token(self) -> None:
        if self._refreshing or self.get_token is None:
            return
        self._refreshing = True
        pipe = self.pipe
        self.loop.call_later(0.01, self._refreshed, pipe)

    def _refreshed(self, pipe: Pipe | None) -> None:
        self._refreshing = False
        assert self.get_token is not None
        self.token = self.get_token()
        if pipe is not None and pipe is self.pipe:
            self._send_auth()

    def _become_ready(self) -> None:
        self.ready = True
        self.state = "connected"
        if self._stable is not None:
            self._stable.cancel()
        self._stable = self.loop.call_later(10.0, self._reset_attempts)
        self._resubscribe_all()

    def _reset_attempts(self) -> None:
        self._stable = None
        self.attempt = 0

    def _resubscribe_all(self) -> None:
        for sub in list(self.subs.values()):
            if sub.status == "pending":
                self._send_subscribe(sub)

    def _stop(self) -> None:
        self.closed = True
        if self.pipe is not None:
            self._lost(1008)
        self.state = "closed"
