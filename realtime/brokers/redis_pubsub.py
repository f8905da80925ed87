"""Redis pub/sub links spoken directly (RESP via hiredis), for one Redis, Sentinel or Cluster.

``PubSubConnection`` is one connection; ``PubSubLink`` keeps one connected (reconnecting
with back-off), carries a set of channels with SUBSCRIBE or, on a cluster, SSUBSCRIBE, and
reports every loss, so that the node can re-check its channels: pub/sub is at-most-once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import hiredis
from redis.exceptions import RedisError

from realtime.brokers import redis_layout
from realtime.brokers.link import Backoff
from realtime.brokers.redis_urls import RedisTarget
from realtime.envelope import Event
from realtime.errors import BrokerUnavailable

logger = logging.getLogger(__name__)


def _command(*args: str | bytes) -> bytes:
    """Encode one RESP command."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        raw = arg.encode() if isinstance(arg, str) else arg
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


Address = tuple[str, int]


class PubSubConnection:
    """One dedicated pub/sub connection, spoken directly (RESP via hiredis).

    Kept apart from redis-py's PubSub so that a broken link is always noticed and
    reported instead of being silently re-established behind the node's back.
    """

    def __init__(self, address: Address, target: RedisTarget, name: str) -> None:
        self._address = address
        self._target = target
        self._name = name
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._parser = hiredis.Reader()

    async def connect(self) -> None:
        host, port = self._address
        self._reader, self._writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=self._target.tls or None), timeout=3.0
        )
        password, username = self._target.password, self._target.username
        if password:
            args = ("AUTH", username, password) if username else ("AUTH", password)
            await self.call(*args)
        if self._target.db and self._target.kind != "cluster":
            await self.call("SELECT", str(self._target.db))
        # a name lets an operator (or a fault test) find and kill just this connection
        await self.call("CLIENT", "SETNAME", self._name)

    async def call(self, *args: str) -> Any:
        """Send a command and read its reply (only before subscribing)."""
        self.send(*args)
        reply = await self.read(wait=5.0)
        if isinstance(reply, hiredis.ReplyError):
            raise RedisError(str(reply))
        return reply

    def send(self, *args: str | bytes) -> None:
        assert self._writer is not None
        self._writer.write(_command(*args))

    async def read(self, wait: float) -> Any:
        """Return the next reply, or raise TimeoutError / ConnectionError."""
        assert self._reader is not None
        while True:
            reply = self._parser.gets()
            if reply is not False:
                return reply
            data = await asyncio.wait_for(self._reader.read(262144), timeout=wait)
            if not data:
                raise ConnectionError("redis closed the connection")
            self._parser.feed(data)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()


def parse_message(channel: str, payload: bytes) -> Event | None:
    """Decode a pub/sub message ``"<epoch> <offset> <published-ms> <event-json>"``."""
    try:
        epoch, offset, stamp, data = payload.split(b" ", 3)
        return Event(channel, epoch.decode(), int(offset), data, int(stamp) / 1000.0)
    except ValueError:
        logger.warning("ignored a malformed message on %s", channel)
        return None


class PubSubLink:
    """One pub/sub connection to one Redis, and the channels it carries; reconnects.

    ``locate()`` names the server before each attempt (fixed, or asked of the sentinels);
    ``sharded`` uses SSUBSCRIBE (Redis Cluster, one command per channel since each may
    hash to another slot). A subscribe waits until Redis confirms it, so that a store
    read taken afterwards cannot miss an event that pub/sub will not bring.
    """

    PING_INTERVAL = 5.0
    CONFIRM_TIMEOUT = 5.0

    def __init__(
        self,
        *,
        locate: Callable[[], Awaitable[Address]],
        target: RedisTarget,
        name: str,
        prefix: str,
        sharded: bool,
        on_event: Callable[[Event], None],
        on_up: Callable[[], None],
        on_down: Callable[[str], None],
        on_moved: Callable[[str], None] | None = None,
        idle_channel: str | None = None,
    ) -> None:
        self._locate = locate
        self._target = target
        self._name = name
        self._prefix = prefix
        self._sharded = sharded
        self._on_event = on_event
        self._on_up = on_up
        self._on_down = on_down
        self._on_moved = on_moved
        self._idle_channel = idle_channel
        self.channels: set[str] = set()
        # one future per SUBSCRIBE sent, confirmed in order: a subscribe, unsubscribe,
        # subscribe before Redis answers sends a second SUBSCRIBE and waits for its reply
        self._pending: dict[str, deque[asyncio.Future[None]]] = {}
        self._unsubscribes: dict[str, int] = {}
        self._dropped: set[str] = set()  # unsubscribed by Redis itself (their slot moved)
        self._conn: PubSubConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self.up = False
        self.failing = False  # the last attempt failed or the connection was lost
        self.address: Address | None = None

    @property
    def _verbs(self) -> tuple[str, str]:
        return ("SSUBSCRIBE", "SUNSUBSCRIBE") if self._sharded else ("SUBSCRIBE", "UNSUBSCRIBE")

    def start(self) -> None:
        """Connect (and reconnect) in the background."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self._name)

    async def close(self) -> None:
        """Stop reconnecting and close the connection (no ``on_down``)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def key(self, channel: str) -> str:
        return redis_layout.pubsub_channel(self._prefix, channel)

    async def _run(self) -> None:
        backoff = Backoff()
        while True:
            conn: PubSubConnection | None = None
            try:
                self.address = await self._locate()
                conn = PubSubConnection(self.address, self._target, self._name)
                await conn.connect()
                self._send_all(conn)
                self._conn = conn
                self.up = True
                self.failing = False
                backoff.connected()
                self._on_up()
                await self._listen(conn)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, TimeoutError) as exc:
                self._lost(f"redis unreachable: {exc or type(exc).__name__}")
            except Exception:
                logger.exception("redis listener failed")
                self._lost("redis listener error")
            finally:
                self._conn = None
                self.up = False
                for futures in self._pending.values():
                    for fut in futures:
                        if not fut.done():
                            fut.set_exception(BrokerUnavailable("redis connection lost"))
                            fut.exception()
                self._pending.clear()
                self._unsubscribes.clear()
                self._dropped.clear()
                if conn is not None:
                    await conn.close()
            await asyncio.sleep(backoff.next_delay())

    def _lost(self, status: str) -> None:
        self.failing = True
        self._on_down(status)

    def _send_all(self, conn: PubSubConnection) -> None:
        verb = self._verbs[0]
        if self._sharded:
            for channel in self.channels:
                conn.send(verb, self.key(channel))
        elif self.channels:
            conn.send(verb, *[self.key(c) for c in self.channels])
        elif self._idle_channel is not None:
            # an idle subscriber still needs the pub/sub mode for its pings
            conn.send(verb, self._idle_channel)

    async def _listen(self, conn: PubSubConnection) -> None:
        strip = len(self._prefix) + 1
        waiting_pong = False
        while True:
            try:
                reply = await conn.read(wait=self.PING_INTERVAL)
            except TimeoutError:
                if waiting_pong:
                    raise ConnectionError("redis did not answer a ping") from None
                conn.send("PING")
                waiting_pong = True
                continue
            waiting_pong = False
            if isinstance(reply, hiredis.ReplyError):
                # MOVED / ASK / CLUSTERDOWN for a channel this server no longer owns
                if self._on_moved is not None:
                    self._on_moved(str(reply))
                raise ConnectionError(f"redis refused a subscription: {reply}")
            if not isinstance(reply, list) or not reply:
                continue
            kind = reply[0]
            if kind in (b"message", b"smessage"):
                event = parse_message(reply[1][strip:-1].decode(), reply[2])
                if event is not None:
                    self._on_event(event)
            elif kind in (b"subscribe", b"ssubscribe"):
                futures = self._pending.get(reply[1][strip:-1].decode())
                if futures:
                    fut = futures.popleft()
                    if not fut.done():
                        fut.set_result(None)
            elif kind == b"sunsubscribe" and isinstance(reply[1], bytes):
                self._unsubscribed(reply[1][strip:-1].decode())

    def _unsubscribed(self, channel: str) -> None:
        sent = self._unsubscribes.get(channel, 0)
        if sent:
            self._unsubscribes[channel] = sent - 1
        elif channel in self.channels and self._on_moved is not None:
            # not asked for: the slot moved to another shard (resharding)
            self._dropped.add(channel)
            self._on_moved(f"slot of {channel} moved")

    async def subscribe(self, channel: str) -> None:
        """Carry ``channel`` from now on; wait (up to 5 s) until Redis confirms.

        When the link is down the channel is remembered and subscribed on reconnect.
        """
        if channel in self.channels:
            return
        self.channels.add(channel)
        self._dropped.discard(channel)
        conn = self._conn
        pending = self._pending.setdefault(channel, deque())
        if conn is not None:
            fut = asyncio.get_running_loop().create_future()
            pending.append(fut)
            conn.send(self._verbs[0], self.key(channel))
        elif self.failing:
            return  # down: subscribed on reconnect, and the node re-checks then
        elif pending:
            fut = pending[-1]
        else:
            # the first connect is under way: it subscribes every channel, wait for that
            fut = asyncio.get_running_loop().create_future()
            pending.append(fut)
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout=self.CONFIRM_TIMEOUT)
        except (TimeoutError, BrokerUnavailable) as exc:
            logger.warning("redis subscribe %s not confirmed: %s", channel, exc)

    def unsubscribe(self, channel: str) -> None:
        """Stop carrying ``channel`` (idempotent)."""
        if channel not in self.channels:
            return
        self.channels.discard(channel)
        conn = self._conn
        if channel in self._dropped:
            self._dropped.discard(channel)  # Redis has dropped it already (and would MOVE us)
        elif conn is not None:
            self._unsubscribes[channel] = self._unsubscribes.get(channel, 0) + 1
            conn.send(self._verbs[1], self.key(channel))


def subscriber_name(prefix: str) -> str:
    """The CLIENT SETNAME of a node's pub/sub links: realtime-sub:<prefix><pid>.

    An operator (or a fault test) finds and kills just these connections by it.
    """
    return re.sub(r"[^A-Za-z0-9:_.\-]", "_", f"realtime-sub:{prefix}{os.getpid()}")


def fixed(address: Address) -> Callable[[], Awaitable[Address]]:
    """A ``locate`` for a server that does not move."""

    async def locate() -> Address:
        return address

    return locate
