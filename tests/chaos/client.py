"""A chaos client: follows the protocol the way ``static/realtime.js`` does, records a history.

Behaviour (as realtime.js): authenticate, subscribe every wanted channel with ``since`` once it
has a position, apply a reply or an unasked ``subscribed`` with ``recovered: false`` as a
resync, de-duplicate events by offset, reconnect with jittered back-off (honouring
``retry-after=N`` in a close reason) to any node that runs. A dropped subscription (unasked
``unsubscribed``) is forgotten, unless it was dropped for an expired token.

The history is what arrived on the wire, in the checker's format (tests/guarantee/checker.py):
the checker judges the server, not this client's de-duplication.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import websockets
from websockets.asyncio.client import ClientConnection


@dataclass
class Sub:
    """One subscription's position, as realtime.js keeps it."""

    channel: str
    epoch: str | None = None
    offset: int = 0
    status: str = "pending"  # pending (not sent on this connection), sent, live
    sent_since: dict[str, Any] | None = None  # what the last subscribe command carried


@dataclass(frozen=True)
class Identity:
    """A user the client can authenticate as: its token and the private channels it grants."""

    user: str
    token: str
    channels: tuple[str, ...]


@dataclass
class Stats:
    connects: int = 0
    close_codes: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    resyncs: int = 0
    recoveries: int = 0
    churn: int = 0
    pauses: int = 0
    reauths: int = 0
    cut_while_paused: int = 0  # connections the server closed while this client did not read


class ChaosClient:
    """One protocol client; ``run(stop)`` until ``stop`` is set; ``history`` is the record."""

    def __init__(
        self,
        cid: str,
        urls: Callable[[], list[str]],
        rng: random.Random,
        identities: list[Identity],
        wanted: list[str],
        public: list[str],
        private: list[str],
    ) -> None:
        self.cid = cid
        self._urls = urls
        self._rng = rng
        self.identities = identities  # empty: anonymous; the first one is used at first
        self._identity: Identity | None = identities[0] if identities else None
        self.subs: dict[str, Sub] = {c: Sub(c) for c in wanted}
        self._public = public  # channels it may pick up in churn, with its identity's rights
        self._private = private  # every private channel of its cluster (it tries others')
        self.history: list[dict[str, Any]] = []
        self.stats = Stats()
        self._ws: ClientConnection | None = None
        self._pending: dict[int, tuple[str, Sub | None]] = {}
        self._since: dict[int, dict[str, Any]] = {}  # the `since` each subscribe carried
        self._next_id = 0
        self._paused_until = 0.0
        self._ready = False
        self.churning = True

    def rights(self) -> dict[str, list[list[int | None]]]:
        """Which private channels it could read, as history index ranges (for the checker).

        A connection is anonymous until its ``authed`` reply; from that reply on, the
        identity it names holds (the server revokes the old one's channels in the same step).
        """
        by_user = {i.user: i.channels for i in self.identities}
        ranges: dict[str, list[list[int | None]]] = {}
        open_: dict[str, list[int | None]] = {}
        for index, rec in enumerate(self.history):
            if rec["kind"] not in ("connect", "authed"):
                continue
            for span in open_.values():
                span[1] = index - 1
            open_ = {}
            if rec["kind"] == "authed":
                for channel in by_user.get(rec["user"], ()):
                    open_[channel] = [index, None]
                    ranges.setdefault(channel, []).append(open_[channel])
        return ranges

    # --- the connection loop -----------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        while not stop.is_set():
            delay = 0.0
            try:
                url = self._rng.choice(self._urls())
                self._ws = await self._connect(url)
            except (OSError, TimeoutError, websockets.InvalidHandshake) as exc:
                failures += 1
                delay = _retry_after(str(exc)) or min(2.0, 0.1 * 2**failures)
                await _sleep_unless(stop, delay * self._rng.uniform(0.5, 1.5))
                continue
            failures = 0
            self.stats.connects += 1
            self.history.append({"kind": "connect", "node": url, "t": round(loop.time(), 2)})
            code: int | None = None
            reason = ""
            try:
                await self._session(stop, loop)
            except websockets.ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd else None
                reason = exc.rcvd.reason if exc.rcvd else ""
            finally:
                self._ready = False
                ws, self._ws = self._ws, None
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.close(), 2)
            if stop.is_set():
                break  # the end of the run, not a disconnect: the subscriptions count as live
            self.history.append({"kind": "disconnect", "code": code, "t": round(loop.time(), 2)})
            if self._paused_until > loop.time() - 0.6:
                self.stats.cut_while_paused += 1
            key = str(code)
            self.stats.close_codes[key] = self.stats.close_codes.get(key, 0) + 1
            for sub in self.subs.values():
                sub.status = "pending"
            self._pending.clear()
            self._since.clear()
            if code in (1012, 1013):
                delay = _retry_after(reason) or 1.5
            elif code == 1000:
                delay = 0.05  # our own voluntary reconnect
            else:
                delay = 0.3
            await _sleep_unless(stop, delay * self._rng.uniform(0.5, 1.5))

    async def _connect(self, url: str) -> ClientConnection:
        parts = urlsplit(url)
        sock = socket.socket()
        # a small window: a client that stops reading backs up into the server quickly
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(
                loop.sock_connect(sock, (parts.hostname or "127.0.0.1", parts.port or 80)), 5
            )
            return await websockets.connect(
                url,
                sock=sock,
                max_size=None,
                max_queue=4,
                ping_interval=None,
                open_timeout=5,
                close_timeout=2,
            )
        except BaseException:
            sock.close()
            raise

    async def _session(self, stop: asyncio.Event, loop: asyncio.AbstractEventLoop) -> None:
        ws = self._ws
        assert ws is not None
        welcome = json.loads(str(await asyncio.wait_for(ws.recv(), 5)).split("\n")[0])
        assert welcome.get("op") == "welcome", welcome
        if self._identity is not None:
            await self._send({"op": "auth", "token": self._identity.token}, ("auth", None))
        for sub in list(self.subs.values()):
            await self._subscribe(sub)
        self._ready = True  # from now on churn may send commands (realtime.js: after ready)
        while not stop.is_set():
            pause = self._paused_until - loop.time()
            if pause > 0:
                await _sleep_unless(stop, pause)
                continue
            try:
                frame = await asyncio.wait_for(ws.recv(), 0.5)
            except TimeoutError:
                continue
            for line in str(frame).split("\n"):
                if line:
                    self._handle(json.loads(line))
        await ws.close()

    # --- commands --------------------------------------------------------------------

    async def _send(self, command: dict[str, Any], pending: tuple[str, Sub | None]) -> None:
        assert self._ws is not None
        self._next_id += 1
        self._pending[self._next_id] = pending
        if "since" in command:
            self._since[self._next_id] = command["since"]
        await self._ws.send(json.dumps({**command, "id": self._next_id}))

    async def _subscribe(self, sub: Sub) -> None:
        command: dict[str, Any] = {"op": "subscribe", "channel": sub.channel}
        if sub.epoch is not None:
            command["since"] = {"epoch": sub.epoch, "offset": sub.offset}
        sub.sent_since = command.get("since")
        sub.status = "sent"
        await self._send(command, ("subscribe", sub))

    async def _unsubscribe(self, channel: str) -> None:
        self.subs.pop(channel, None)
        await self._send({"op": "unsubscribe", "channel": channel}, ("unsubscribe", None))

    async def churn_once(self) -> str:
        """One random subscription change, as a page would make it; returns what it did."""
        if self._ws is None or not self._ready:
            return "offline"
        self.stats.churn += 1
        rng = self._rng
        choice = rng.random()
        allowed = self._public + list(self._identity.channels if self._identity else ())
        free = [c for c in allowed if c not in self.subs]
        forbidden = [c for c in self._private if c not in allowed]
        try:
            if choice < 0.3 and len(self.subs) > 1:
                channel = rng.choice(sorted(self.subs))
                await self._unsubscribe(channel)
                return f"unsubscribe {channel}"
            if choice < 0.55 and free:
                sub = Sub(rng.choice(free))
                self.subs[sub.channel] = sub
                await self._subscribe(sub)
                return f"subscribe {sub.channel}"
            if choice < 0.75 and free:
                # what a React StrictMode double mount sends: subscribe, unsubscribe, subscribe
                channel = rng.choice(free)
                first = Sub(channel)
                self.subs[channel] = first
                await self._subscribe(first)
                await self._unsubscribe(channel)
                second = Sub(channel)
                self.subs[channel] = second
                await self._subscribe(second)
                return f"strictmode {channel}"
            if choice < 0.8 and forbidden:
                channel = rng.choice(forbidden)
                await self._send(
                    {"op": "subscribe", "channel": channel}, ("subscribe", Sub(channel))
                )
                return f"forbidden {channel}"
            if choice < 0.9 and len(self.identities) > 1:
                # log in as someone else: the server must drop the old user's channels
                self._identity = rng.choice([i for i in self.identities if i is not self._identity])
                self.stats.reauths += 1
                await self._send({"op": "auth", "token": self._identity.token}, ("auth", None))
                return f"reauth {self._identity.user}"
            if self._ws is not None:
                await self._ws.close(1000)  # a page reload
            return "reconnect"
        except websockets.ConnectionClosed:
            return "closed meanwhile"

    def pause(self, seconds: float) -> None:
        """Stop reading for ``seconds`` (a slow reader)."""
        self.stats.pauses += 1
        self._paused_until = asyncio.get_running_loop().time() + seconds

    # --- what arrives ----------------------------------------------------------------

    def _handle(self, msg: dict[str, Any]) -> None:
        op = msg.get("op")
        # one copy of each padding string: hundreds of histories hold the same events
        for event in (msg, msg.get("state") or {}, *(msg.get("missed") or ())):
            data = event.get("data")
            if isinstance(data, dict) and isinstance(data.get("pad"), str):
                data["pad"] = sys.intern(data["pad"])
        pending = self._pending.pop(msg["id"], None) if "id" in msg else None
        since = self._since.pop(msg["id"], None) if "id" in msg else None
        if op == "event":
            self.history.append(
                {
                    "kind": "event",
                    "channel": msg["channel"],
                    "offset": msg["offset"],
                    "type": msg["type"],
                    "data": msg["data"],
                }
            )
            sub = self.subs.get(msg["channel"])
            if sub is not None and sub.status == "live" and msg["offset"] > sub.offset:
                sub.offset = msg["offset"]
        elif op == "subscribed":
            self._on_subscribed(msg, pending, since)
        elif op == "authed":
            self.history.append({"kind": "authed", "user": msg.get("user")})
        elif op == "unsubscribed":
            self.history.append(
                {"kind": "unsubscribed", "channel": msg["channel"], "reason": msg.get("reason")}
            )
            if pending is None:  # dropped by the server
                sub = self.subs.get(msg["channel"])
                if sub is not None and "expired" in str(msg.get("reason")):
                    sub.status = "pending"
                else:
                    self.subs.pop(msg["channel"], None)
        elif op == "error":
            self.history.append(
                {"kind": "error", "channel": msg.get("channel"), "code": msg.get("code")}
            )
            code = str(msg.get("code"))
            self.stats.errors[code] = self.stats.errors.get(code, 0) + 1
            if pending is not None and pending[0] == "subscribe" and pending[1] is not None:
                sub = pending[1]
                if self.subs.get(sub.channel) is sub:
                    del self.subs[sub.channel]  # refused: the page gives it up

    def _on_subscribed(
        self,
        msg: dict[str, Any],
        pending: tuple[str, Sub | None] | None,
        since: dict[str, Any] | None,
    ) -> None:
        missed = msg.get("missed") or []
        state = msg.get("state")
        if pending is not None and pending[0] == "subscribe":
            sub = pending[1]
        else:
            sub = self.subs.get(msg["channel"])
        record: dict[str, Any] = {"since": since} if since is not None else {}
        self.history.append(
            {
                **record,
                "kind": "subscribed",
                "channel": msg["channel"],
                "epoch": msg["epoch"],
                "offset": msg["offset"],
                "recovered": msg.get("recovered"),
                "missed": [
                    {"offset": e["offset"], "type": e["type"], "data": e["data"]} for e in missed
                ],
                "state": (
                    {"offset": state["offset"], "type": state["type"], "data": state["data"]}
                    if state
                    else None
                ),
                "asked": pending is not None,
                "t": round(asyncio.get_running_loop().time(), 2),
            }
        )
        if sub is None or self.subs.get(sub.channel) is not sub:
            return  # a stale reply (realtime.js ignores it)
        sent_since = sub.sent_since is not None
        sub.sent_since = None
        sub.status = "live"
        # an unasked reply at offset 0 names the epoch the channel's first event starts
        epoch_starts = pending is None and msg["offset"] == 0 and sub.offset == 0
        recovered = (
            msg.get("recovered") is True
            and (sent_since if pending is not None else True)
            and (sub.epoch == str(msg["epoch"]) or epoch_starts)
        )
        if recovered:
            sub.epoch = str(msg["epoch"])
            self.stats.recoveries += 1
            for event in missed:
                if event["offset"] > sub.offset:
                    sub.offset = event["offset"]
            sub.offset = max(sub.offset, int(msg["offset"]))
        else:
            if sub.epoch is not None:
                self.stats.resyncs += 1
            sub.epoch = str(msg["epoch"])
            sub.offset = int(msg["offset"])


def _retry_after(text: str) -> float | None:
    match = re.search(r"retry-after=(\d+(?:\.\d+)?)", text, re.IGNORECASE)
    return float(match.group(1)) if match else None


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), max(0.0, seconds))
