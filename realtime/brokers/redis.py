"""The ``redis://`` broker: Redis pub/sub for transport, Redis keys for the channel store.

Layout and scripts: ``redis_layout`` (shared with the Django bridge). Pub/sub is
at-most-once, so this module reports every (re)connect to the node through ``on_health``,
and the node compares offsets to find and fill gaps from history.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.connection import parse_url
from redis.exceptions import RedisError

from realtime.brokers import redis_layout
from realtime.brokers.base import EventCallback, HealthCallback, Snapshot
from realtime.brokers.link import LinkHealth, backoff_delays
from realtime.envelope import Envelope, Event, Published
from realtime.errors import BrokerUnavailable

logger = logging.getLogger(__name__)


def store_client(url: str) -> aioredis.Redis:
    """A Redis client for store reads and publishes.

    Its pool blocks (up to 5 s) when all 32 connections are busy, so a burst of store reads
    waits its turn instead of failing with "Too many connections".
    """
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=32, timeout=5, socket_connect_timeout=3, socket_timeout=5
    )
    return aioredis.Redis(connection_pool=pool)


class RedisStore:
    """Offsets, history and state in Redis; the publish step is one atomic script.

    Shared by the Redis broker and the AMQP broker (with ``publish_to_pubsub=False``).
    """

    def __init__(
        self,
        client: aioredis.Redis,
        prefix: str,
        history_size: int,
        history_ttl: int,
        meta_ttl: int,
        publish_to_pubsub: bool = True,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._history_size = history_size
        self._history_ttl = history_ttl
        self._meta_ttl = meta_ttl
        self._publish_to_pubsub = publish_to_pubsub
        self._publish_script = client.register_script(redis_layout.PUBLISH_SCRIPT)
        self._snapshot_script = client.register_script(redis_layout.SNAPSHOT_SCRIPT)
        self._renew_script = client.register_script(redis_layout.RENEW_EPOCH_SCRIPT)

    async def publish(self, envelope: Envelope) -> tuple[Published, Event | None]:
        """Run the publish script; return where it landed and the event (None if duplicate)."""
        keys, args = redis_layout.envelope_args(
            self._prefix,
            envelope,
            history_size=self._history_size,
            history_ttl=self._history_ttl,
            meta_ttl=self._meta_ttl,
            now_ms=int(time.time() * 1000),
            do_publish=self._publish_to_pubsub,
        )
        try:
            epoch, offset, duplicate, event_json = await self._publish_script(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"redis: {exc}") from exc
        epoch_s = epoch.decode()
        published = Published(envelope.channel, epoch_s, int(offset), duplicate=bool(duplicate))
        if duplicate:
            return published, None
        return published, Event(envelope.channel, epoch_s, int(offset), bytes(event_json))

    async def snapshot(self, channel: str, history: int) -> Snapshot:
        """Read epoch, offset, state and up to ``history`` newest events in one script."""
        keys = list(redis_layout.channel_keys(self._prefix, channel))
        args: list[str | int] = [
            min(history, self._history_size),
            redis_layout.new_epoch(),
            self._meta_ttl,
        ]
        try:
            reply = await self._snapshot_script(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"redis: {exc}") from exc
        epoch = reply[0].decode()
        offset = int(reply[1])
        state = bytes(reply[2]) if reply[2] else None
        horizon_ms = (time.time() - self._history_ttl) * 1000
        events: list[Event] = []
        for item in reply[3:]:
            stamp, _, data = bytes(item).partition(b" ")
            if float(stamp) < horizon_ms:
                events.clear()  # older than the TTL: only a suffix of history is usable
                continue
            event_offset = redis_layout.event_offset(data)
            if event_offset is None:
                events.clear()  # not an event we can place: what follows stands alone
                continue
            events.append(Event(channel, epoch, event_offset, data))
        return Snapshot(epoch=epoch, offset=offset, state=state, history=events)

    async def renew_epoch(self, channel: str, epoch: str) -> Snapshot:
        """Give the channel a new epoch if it still has ``epoch`` (see RENEW_EPOCH_SCRIPT)."""
        keys = list(redis_layout.channel_keys(self._prefix, channel))
        try:
            reply = await self._renew_script(keys=keys, args=[epoch, redis_layout.new_epoch()])
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"redis: {exc}") from exc
        state = bytes(reply[2]) if reply[2] else None
        return Snapshot(epoch=reply[0].decode(), offset=int(reply[1]), state=state, history=[])


def _command(*args: str | bytes) -> bytes:
    """Encode one RESP command."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        raw = arg.encode() if isinstance(arg, str) else arg
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


class _Subscriber:
    """One dedicated pub/sub connection, spoken directly (RESP via hiredis).

    Kept apart from redis-py's PubSub so that a broken link is always noticed and
    reported instead of being silently re-established behind the node's back.
    """

    def __init__(self, url: str, name: str) -> None:
        self._params = parse_url(url)
        self._name = name
        self._ssl = url.startswith("rediss://")
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._parser = hiredis.Reader()

    async def connect(self) -> None:
        host = str(self._params.get("host", "127.0.0.1"))
        port = int(self._params.get("port", 6379))
        self._reader, self._writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=self._ssl or None), timeout=3.0
        )
        password = self._params.get("password")
        if password:
            username = self._params.get("username")
            args = ("AUTH", str(username), str(password)) if username else ("AUTH", str(password))
            await self.call(*args)
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


class RedisBroker:
    """Redis pub/sub transport plus ``RedisStore``; reconnects with back-off."""

    PING_INTERVAL = 5.0

    def __init__(
        self,
        url: str,
        prefix: str,
        history_size: int,
        history_ttl: int,
        meta_ttl: int,
    ) -> None:
        self._url = url
        self._prefix = prefix
        self._client = store_client(url)
        self._store = RedisStore(self._client, prefix, history_size, history_ttl, meta_ttl)
        self._channels: set[str] = set()
        self._pending: dict[str, asyncio.Future[None]] = {}
        self._sub: _Subscriber | None = None
        self._task: asyncio.Task[None] | None = None
        self._on_event: EventCallback | None = None
        self._health = LinkHealth("redis", url, logger)

    @property
    def healthy(self) -> bool:
        """True while the pub/sub connection is up."""
        return self._health.healthy

    @property
    def status(self) -> str:
        """ "connected" or why not."""
        return self._health.status

    @property
    def connection_name(self) -> str:
        """The CLIENT SETNAME of the pub/sub connection: realtime-sub:<prefix><pid>."""
        return re.sub(r"[^A-Za-z0-9:_.\-]", "_", f"realtime-sub:{self._prefix}{os.getpid()}")

    @property
    def reconnects(self) -> int:
        """How many times the pub/sub connection was re-established."""
        return self._health.reconnects

    async def start(self, on_event: EventCallback, on_health: HealthCallback) -> None:
        """Start the listener task; it connects (and reconnects) in the background."""
        self._on_event = on_event
        self._health.bind(on_health)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="redis-listener")

    async def _run(self) -> None:
        delays = backoff_delays()
        while True:
            sub = _Subscriber(self._url, self.connection_name)
            try:
                await sub.connect()
                if self._channels:
                    sub.send("SUBSCRIBE", *[self._key(c) for c in self._channels])
                else:
                    # an idle subscriber still needs the pub/sub mode for its pings
                    sub.send("SUBSCRIBE", self._prefix + "-")
                self._sub = sub
                self._health.up()
                delays = backoff_delays()
                await self._listen(sub)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, TimeoutError) as exc:
                self._health.down(f"redis unreachable: {exc or type(exc).__name__}")
            except Exception:
                logger.exception("redis listener failed")
                self._health.down("redis listener error")
            finally:
                self._sub = None
                for fut in self._pending.values():
                    if not fut.done():
                        fut.set_exception(BrokerUnavailable("redis connection lost"))
                self._pending.clear()
                await sub.close()
            await asyncio.sleep(next(delays))

    def _key(self, channel: str) -> str:
        return redis_layout.pubsub_channel(self._prefix, channel)

    async def _listen(self, sub: _Subscriber) -> None:
        strip = len(self._prefix) + 1
        waiting_pong = False
        while True:
            try:
                reply = await sub.read(wait=self.PING_INTERVAL)
            except TimeoutError:
                if waiting_pong:
                    raise ConnectionError("redis did not answer a ping") from None
                sub.send("PING")
                waiting_pong = True
                continue
            waiting_pong = False
            if not isinstance(reply, list) or not reply:
                continue
            kind = reply[0]
            if kind == b"message":
                self._deliver(reply[1][strip:-1].decode(), reply[2])
            elif kind == b"subscribe":
                fut = self._pending.pop(reply[1][strip:-1].decode(), None)
                if fut is not None and not fut.done():
                    fut.set_result(None)

    def _deliver(self, channel: str, payload: bytes) -> None:
        try:
            epoch, offset, stamp, data = payload.split(b" ", 3)
            event = Event(channel, epoch.decode(), int(offset), data, int(stamp) / 1000.0)
        except ValueError:
            logger.warning("ignored a malformed message on %s", channel)
            return
        if self._on_event is not None:
            self._on_event(event)

    async def subscribe(self, channel: str) -> None:
        """Subscribe and wait until Redis confirms, so no later publish is missed.

        When the link is down the channel is remembered and subscribed on reconnect;
        the node re-checks every channel for gaps when health returns.
        """
        if channel in self._channels:
            return
        self._channels.add(channel)
        sub = self._sub
        if sub is None:
            return
        fut = self._pending.get(channel)
        if fut is None:
            fut = self._pending[channel] = asyncio.get_running_loop().create_future()
            sub.send("SUBSCRIBE", self._key(channel))
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout=5.0)
        except (TimeoutError, BrokerUnavailable) as exc:
            logger.warning("redis subscribe %s not confirmed: %s", channel, exc)

    async def unsubscribe(self, channel: str) -> None:
        """Unsubscribe (idempotent)."""
        if channel not in self._channels:
            return
        self._channels.discard(channel)
        sub = self._sub
        if sub is not None:
            sub.send("UNSUBSCRIBE", self._key(channel))

    async def publish(self, envelope: Envelope) -> Published:
        """Store and publish in one atomic script."""
        published, _ = await self._store.publish(envelope)
        return published

    async def snapshot(self, channel: str, history: int) -> Snapshot:
        """Read the channel's store."""
        return await self._store.snapshot(channel, history)

    async def renew_epoch(self, channel: str, epoch: str) -> Snapshot:
        """Give the channel a new epoch if it still has ``epoch``."""
        return await self._store.renew_epoch(channel, epoch)

    async def close(self) -> None:
        """Stop the listener and close connections."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._health.closed()
        await self._client.aclose()
