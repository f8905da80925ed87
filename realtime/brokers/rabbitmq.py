"""The ``amqp://`` broker: a RabbitMQ topic exchange for transport, Redis or memory as store.

Each server process declares its own exclusive, auto-delete queue on the durable topic
exchange (``amqp_layout``) and consumes it. Two modes, picked by ``REALTIME_REDIS_URL``:

* Redis store: publishers number events in Redis (the same script as the Redis broker,
  without its PUBLISH) and send the numbered event; the queue is bound with one routing key
  per channel that has local subscribers. Offsets and epochs are shared by every node.
* no store: publishers send the raw envelope; the queue is bound to every channel (``#``)
  and each node numbers every event in its own ``MemoryStore`` (node-local epochs).

Connection loss (broker restart, connection closed by the broker, channel error) is
reported through ``on_health(False)``; the broker reconnects with back-off, declares a new
queue, re-binds, and reports ``on_health(True)`` so the node re-checks every channel.
pika's callbacks are turned into futures by ``_Link``; everything runs on the event loop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import hashlib
import itertools
import logging
import os
import secrets
import time
from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions
import redis.asyncio as aioredis
from pika.adapters.asyncio_connection import AsyncioConnection
from redis.exceptions import RedisError

from realtime.brokers import amqp_layout
from realtime.brokers.base import EventCallback, HealthCallback, Snapshot
from realtime.brokers.link import Backoff, LinkHealth
from realtime.brokers.memory_store import MemoryStore
from realtime.brokers.redis import RedisStore, store_client
from realtime.config import Settings
from realtime.envelope import Envelope, Event, Published
from realtime.errors import BrokerUnavailable

logger = logging.getLogger(__name__)

STORE_PING_INTERVAL = 2.0
# pika logs each failed connection attempt as ten ERROR lines; this module reports the
# link's state itself (WARNING when it goes down, INFO when it comes back)
logging.getLogger("pika").setLevel(logging.CRITICAL)

CONNECT_TIMEOUT = 5.0
RPC_TIMEOUT = 5.0
CONFIRM_TIMEOUT = 5.0
HEARTBEAT = 10  # seconds; a silently dead broker is noticed within about two of these
MALFORMED_LOG_INTERVAL = 10.0

MessageHandler = Callable[[str, Any, bytes], None]


class _Link:
    """One AMQP connection and its one channel, with pika's callbacks turned into futures.

    ``lost`` resolves (with the reason) the first time the connection or the channel
    closes; from then on every pending and later operation fails with ``ConnectionError``.
    A lost link is never reused. Event loop only.
    """

    def __init__(
        self, params: Any, loop: asyncio.AbstractEventLoop, on_message: MessageHandler
    ) -> None:
        self._params = params
        self._loop = loop
        self._on_message = on_message
        self._conn: Any = None
        self._channel: Any = None
        self.lost: asyncio.Future[str] = loop.create_future()
        self._pending: set[asyncio.Future[Any]] = set()
        self._confirms: dict[int, asyncio.Future[None]] = {}
        self._tag = 0

    async def open(self) -> None:
        """Connect, open a channel and turn on publisher confirms.

        Raises:
            ConnectionError, TimeoutError: the link could not be set up.
        """
        opened = self._future()
        self._conn = AsyncioConnection(
            self._params,
            on_open_callback=lambda _conn: _resolve(opened, None),
            on_open_error_callback=lambda _conn, exc: self._lose(f"cannot connect: {exc!r}"),
            on_close_callback=lambda _conn, reason: self._lose(f"connection closed: {reason!r}"),
            custom_ioloop=self._loop,
        )
        await self._wait(opened, CONNECT_TIMEOUT)
        conn = self._conn
        channel = await self.rpc(lambda cb: conn.channel(on_open_callback=cb))
        channel.add_on_close_callback(self._on_channel_closed)
        self._channel = channel
        await self.rpc(lambda cb: channel.confirm_delivery(self._on_confirm, callback=cb))

    @property
    def channel(self) -> Any:
        """The open pika channel (only after ``open``)."""
        return self._channel

    async def rpc(self, start: Callable[[Callable[[Any], None]], None]) -> Any:
        """Run one synchronous AMQP method: ``start(callback)`` sends it; return its reply.

        Raises:
            ConnectionError: the link is (or gets) lost.
            TimeoutError: no reply within ``RPC_TIMEOUT``.
        """
        fut = self._future()
        try:
            start(lambda reply: _resolve(fut, reply))
        except pika.exceptions.AMQPError as exc:
            self._pending.discard(fut)
            raise ConnectionError(f"amqp: {exc!r}") from exc
        return await self._wait(fut, RPC_TIMEOUT)

    def publish(self, exchange: str, routing_key: str, body: bytes, properties: Any) -> Any:
        """Send one message; return a future that resolves when the broker confirms it.

        Raises:
            ConnectionError: the link is lost.
        """
        if self.lost.done() or self._channel is None:
            raise ConnectionError(self.lost.result() if self.lost.done() else "not open")
        try:
            self._channel.basic_publish(exchange, routing_key, body, properties)
        except pika.exceptions.AMQPError as exc:
            raise ConnectionError(f"amqp: {exc!r}") from exc
        self._tag += 1  # confirms number the channel's publishes from 1
        fut: asyncio.Future[None] = self._loop.create_future()
        self._confirms[self._tag] = fut
        return fut

    async def consume(self, queue: str) -> None:
        """Start consuming ``queue`` (auto-ack: the exclusive queue dies with the link)."""
        channel = self._channel
        await self.rpc(
            lambda cb: channel.basic_consume(
                queue, self._deliver, auto_ack=True, exclusive=True, callback=cb
            )
        )

    def close(self) -> None:
        """Close the connection (idempotent); ``lost`` resolves when it is closed."""
        if self._conn is not None and not (self._conn.is_closing or self._conn.is_closed):
            # a connection that already broke may refuse in its own way
            with contextlib.suppress(pika.exceptions.AMQPError):
                self._conn.close()
        elif self._conn is None:
            self._lose("closed")

    def _deliver(self, _channel: Any, method: Any, properties: Any, body: bytes) -> None:
        try:
            self._on_message(method.routing_key, properties, body)
        except Exception:
            # never let one message break pika's frame processing
            logger.exception("amqp message handler failed")

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        ok = isinstance(method, pika.spec.Basic.Ack)
        tags = (
            [t for t in self._confirms if t <= method.delivery_tag]
            if method.multiple
            else [method.delivery_tag]
        )
        for tag in tags:
            fut = self._confirms.pop(tag, None)
            if fut is None or fut.done():
                continue
            if ok:
                fut.set_result(None)
            else:
                fut.set_exception(ConnectionError("amqp: the broker refused the message (nack)"))

    def _on_channel_closed(self, _channel: Any, reason: Any) -> None:
        self._lose(f"channel closed: {reason!r}")
        # a channel error leaves the connection open: close it so that all is rebuilt
        self.close()

    def _lose(self, reason: str) -> None:
        if not self.lost.done():
            self.lost.set_result(reason)
        failures = [*self._pending, *self._confirms.values()]
        self._pending.clear()
        self._confirms.clear()
        for fut in failures:
            if not fut.done():
                fut.set_exception(ConnectionError(reason))

    def _future(self) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = self._loop.create_future()
        if self.lost.done():
            fut.set_exception(ConnectionError(self.lost.result()))
        else:
            self._pending.add(fut)
        return fut

    async def _wait(self, fut: asyncio.Future[Any], limit: float) -> Any:
        try:
            return await asyncio.wait_for(fut, limit)
        finally:
            self._pending.discard(fut)


def _resolve(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


class RabbitMQBroker:
    """AMQP transport plus a Redis or in-process store; reconnects with back-off."""

    def __init__(self, settings: Settings) -> None:
        self._url = settings.broker_url
        self._exchange = settings.amqp_exchange
        self._history = (settings.history_size, settings.history_ttl, settings.meta_ttl)
        self._redis: aioredis.Redis | None = None
        self._store: RedisStore | None = None
        self._local: MemoryStore | None = None
        if settings.redis_url:
            self._redis = store_client(settings.redis_url)
            self._store = RedisStore(
                self._redis, settings.redis_prefix, *self._history, publish_to_pubsub=False
            )
        else:
            self._local = MemoryStore(*self._history)
        self._node_id = secrets.token_hex(6)
        # unique per process and exchange, so an operator (or a test) can find this link
        self._connection_name = f"realtime {self._exchange} pid {os.getpid()} {self._node_id}"
        self._channels: set[str] = set()
        self._link: _Link | None = None
        self._queue = ""
        self._task: asyncio.Task[None] | None = None
        self._on_event: EventCallback | None = None
        self._health = LinkHealth("rabbitmq", self._url, logger)
        self._order = asyncio.Lock()
        self._echo_ids = itertools.count(1)
        self._echoes: dict[str, asyncio.Future[Published]] = {}
        self._malformed_logged = 0.0
        self._store_error: str | None = None  # set while the Redis store does not answer
        self._store_watch: asyncio.Task[None] | None = None
        self._mismatch: str | None = None  # a setup mismatch seen in the traffic
        # numbered events stored in Redis whose AMQP send failed: resent after a reconnect
        self._unsent: collections.deque[tuple[str, bytes]] = collections.deque(maxlen=10_000)
        self._raw_tasks: set[asyncio.Task[Published]] = set()
        # set by the server: counts setup mismatches in realtime_misconfigured_total
        self.on_misconfigured: Callable[[str], None] | None = None

    # -- state ----------------------------------------------------------------------

    @property
    def stored_channels(self) -> int | None:
        """Channels in this process's own store (None with the Redis store)."""
        return self._local.channel_count if self._local is not None else None

    @property
    def healthy(self) -> bool:
        """True while the AMQP link is up, its queue consumed, and the store answers."""
        return self._health.healthy and self._store_error is None

    @property
    def status(self) -> str:
        """ "connected" or why not, with any setup mismatch seen in the traffic."""
        status = self._store_error or self._health.status
        if self._mismatch is not None:
            status += f" (warning: {self._mismatch})"
        return status

    @property
    def reconnects(self) -> int:
        """How many times the AMQP link was re-established."""
        return self._health.reconnects

    @property
    def connection_name(self) -> str:
        """The ``connection_name`` client property this process's link carries."""
        return self._connection_name

    # -- connection loop ------------------------------------------------------------

    async def start(self, on_event: EventCallback, on_health: HealthCallback) -> None:
        """Start the connection task; it connects (and reconnects) in the background."""
        self._on_event = on_event
        self._health.bind(on_health)
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run(), name="amqp-link")
        if self._redis is not None:
            self._store_watch = loop.create_task(self._watch_store(), name="amqp-store-watch")

    async def _watch_store(self) -> None:
        """Ping the Redis store so that /healthz reports it down (publishes would fail)."""
        assert self._redis is not None
        while True:
            try:
                await self._redis.ping()
                if self._store_error is not None:
                    logger.info("redis store answers again")
                self._store_error = None
            except (RedisError, OSError) as exc:
                if self._store_error is None:
                    logger.warning("redis store unreachable: %s", exc)
                self._store_error = f"redis store unreachable: {exc}"
            await asyncio.sleep(STORE_PING_INTERVAL)

    def _params(self) -> Any:
        params = pika.URLParameters(self._url)
        if "heartbeat" not in self._url:
            params.heartbeat = HEARTBEAT
        params.connection_attempts = 1
        params.socket_timeout = CONNECT_TIMEOUT
        params.client_properties = {"connection_name": self._connection_name}
        return params

    async def _run(self) -> None:
        backoff = Backoff()
        loop = asyncio.get_running_loop()
        while True:
            link = _Link(self._params(), loop, self._on_message)
            try:
                if self._redis is not None:
                    await self._redis.ping()
                await link.open()
                if self._health.reconnects_pending and self._local is not None:
                    # events published while we were away never reached this store: new
                    # epochs make every subscriber resync instead of silently missing them
                    # (replaced before consuming, so no new event lands in the old one)
                    self._local = MemoryStore(*self._history)
                self._link = link
                await self._declare(link)
                self._health.up()
                backoff.connected()
                if self._unsent:
                    await self._resend_unsent()
                reason = await asyncio.shield(link.lost)  # cancelling us must not cancel it
                self._health.down(f"rabbitmq link lost: {reason}")
            except asyncio.CancelledError:
                raise
            except (ConnectionError, TimeoutError, OSError, pika.exceptions.AMQPError) as exc:
                self._health.down(f"rabbitmq unreachable: {exc or type(exc).__name__}")
            except RedisError as exc:
                self._health.down(f"redis store unreachable: {exc}")
            except Exception:
                logger.exception("rabbitmq link failed")
                self._health.down("rabbitmq link error")
            finally:
                self._link = None
                self._queue = ""
                self._fail_echoes("rabbitmq link lost")
                link.close()
            await asyncio.sleep(backoff.next_delay())

    async def _declare(self, link: _Link) -> None:
        """Declare the exchange and this link's queue, bind, and start consuming."""
        channel = link.channel
        await link.rpc(
            lambda cb: channel.exchange_declare(
                self._exchange, amqp_layout.EXCHANGE_TYPE, durable=True, callback=cb
            )
        )
        # a fresh name per link: the old exclusive queue may linger until the broker
        # notices the old connection is gone
        name = f"{self._exchange}.node.{self._node_id}.{secrets.token_hex(3)}"
        await link.rpc(
            lambda cb: channel.queue_declare(name, exclusive=True, auto_delete=True, callback=cb)
        )
        self._queue = name
        if self._local is not None:
            await self._bind(link, amqp_layout.ALL_CHANNELS)
        else:
            # nowait binds and one barrier: a channel processes methods in order, so the
            # barrier's reply means every bind is in place (2.5x faster: docs/RABBITMQ.md)
            for chan in self._channels:
                channel.queue_bind(name, self._exchange, amqp_layout.routing_key(chan))
            await link.rpc(lambda cb: channel.basic_qos(prefetch_count=0, callback=cb))
        await link.consume(name)

    async def _bind(self, link: _Link, key: str) -> None:
        channel, queue = link.channel, self._queue
        await link.rpc(lambda cb: channel.queue_bind(queue, self._exchange, key, callback=cb))

    # -- messages -------------------------------------------------------------------

    def _on_message(self, routing: str, properties: Any, body: bytes) -> None:
        try:
            message = amqp_layout.decode(body, routing)
        except amqp_layout.MessageError as exc:
            self._malformed(routing, str(exc))
            return
        if isinstance(message, amqp_layout.Numbered):
            if self._local is not None:
                self._malformed(routing, "numbered message but this node has no Redis store")
                return
            event = message.event
        else:
            if self._local is None:
                self._number_raw(routing, message.envelope, body)
                return
            published, new = self._local.publish(message.envelope)
            echo = self._echoes.pop(properties.correlation_id or "", None)
            if echo is not None and not echo.done():
                echo.set_result(published)
            if new is None:
                return  # a duplicate id
            event = new
        if event.channel in self._channels and self._on_event is not None:
            self._on_event(event)

    def _number_raw(self, routing: str, envelope: Envelope, body: bytes) -> None:
        """Number a raw envelope in the shared Redis store, once for all nodes.

        A raw envelope here means a publisher that does not know the Redis store (a Django
        site without ``REDIS_URL``). Dropping it would lose every event silently; instead
        every node that receives it runs the publish script with the same de-duplication id
        (the envelope's, or a digest of the body), and the one that numbers it sends the
        numbered event to every node. The mismatch is still loud: a metric, /healthz and a
        warning line, because ordering across publishers is only as good as the arrival
        order at the first node.
        """
        self._mismatch = (
            "raw AMQP envelopes arrive while nodes number events in Redis: give the publisher "
            "the same REDIS_URL"
        )
        self._metrics_misconfigured()
        self._malformed(routing, self._mismatch)
        if envelope.id is None:
            digest = hashlib.sha256(body).hexdigest()[:32]
            envelope = dataclasses.replace(envelope, id=f"raw-{digest}")
        task = asyncio.get_running_loop().create_task(self._publish_numbered(envelope))
        self._raw_tasks.add(task)
        task.add_done_callback(self._raw_done)

    def _raw_done(self, task: asyncio.Task[Published]) -> None:
        self._raw_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("could not number a raw envelope: %s", task.exception())

    def _metrics_misconfigured(self) -> None:
        if self.on_misconfigured is not None:
            self.on_misconfigured("raw_envelope_with_redis_store")

    def _malformed(self, routing: str, why: str) -> None:
        now = time.monotonic()
        if now - self._malformed_logged >= MALFORMED_LOG_INTERVAL:
            self._malformed_logged = now
            logger.warning("ignored an amqp message (routing key %r): %s", routing, why)

    def _fail_echoes(self, reason: str) -> None:
        echoes, self._echoes = self._echoes, {}
        for fut in echoes.values():
            if not fut.done():
                fut.set_exception(BrokerUnavailable(reason))

    # -- Broker interface -----------------------------------------------------------

    async def subscribe(self, channel: str) -> None:
        """Bind the channel's routing key and wait for the broker's Bind-Ok.

        When the link is down the channel is remembered and bound on reconnect; the node
        re-checks every channel for gaps when health returns. Without a Redis store every
        channel is already bound (``#``) and this only filters.
        """
        if channel in self._channels:
            return
        self._channels.add(channel)
        link = self._link
        if link is None or self._local is not None or not self._queue:
            return
        try:
            await self._bind(link, amqp_layout.routing_key(channel))
        except (ConnectionError, TimeoutError) as exc:
            logger.warning("amqp bind of %s not confirmed: %s", channel, exc)

    async def unsubscribe(self, channel: str) -> None:
        """Unbind the channel's routing key (idempotent)."""
        if channel not in self._channels:
            return
        self._channels.discard(channel)
        link = self._link
        if link is None or self._local is not None or not self._queue:
            return
        channel_, queue, key = link.channel, self._queue, amqp_layout.routing_key(channel)
        try:
            await link.rpc(
                lambda cb: channel_.queue_unbind(queue, self._exchange, key, callback=cb)
            )
        except (ConnectionError, TimeoutError) as exc:
            # a stale binding only costs traffic that is filtered here
            logger.warning("amqp unbind of %s not confirmed: %s", channel, exc)

    async def publish(self, envelope: Envelope) -> Published:
        """Number the event (Redis) or have every node number it, and send it confirmed.

        Raises:
            BrokerUnavailable: RabbitMQ (or the Redis store) cannot take it now.
        """
        if self._link is None or not self._health.healthy:
            raise BrokerUnavailable(f"rabbitmq not connected: {self._health.status}")
        if self._store is not None:
            return await self._publish_numbered(envelope)
        return await self._publish_raw(envelope)

    async def _publish_numbered(self, envelope: Envelope) -> Published:
        assert self._store is not None
        # one at a time up to the send, so this process sends its events in offset order
        async with self._order:
            published, event = await self._store.publish(envelope)
            if event is None:
                # a duplicate id: stored before, but maybe never sent (the send failed and
                # the publisher retried). Send the stored event again; every node drops a
                # copy it already has by its offset.
                event = await self._stored_event(published)
                if event is None:
                    return published  # out of history: a later event reveals the gap
            body = amqp_layout.encode_numbered(
                published.epoch, published.offset, event.json, int(time.time() * 1000)
            )
            try:
                confirm = self._send(envelope.channel, body, None)
            except BrokerUnavailable:
                return self._keep_unsent(envelope.channel, body, published)
        try:
            await self._confirmed(confirm)
        except BrokerUnavailable:
            return self._keep_unsent(envelope.channel, body, published)
        return published

    def _keep_unsent(self, channel: str, body: bytes, published: Published) -> Published:
        """The event is stored but its send failed: send it again once the link is back.

        Answering "not published" would make a publisher without an envelope id store it a
        second time, and nothing would ever send the first copy: subscribers would stay
        behind the store until the channel's next event. Nodes drop a copy they already
        have by its offset.
        """
        if len(self._unsent) == self._unsent.maxlen:
            logger.warning("more than %d stored events wait to be sent", self._unsent.maxlen)
        self._unsent.append((channel, body))
        logger.warning(
            "event %s/%d stored but not sent (link lost): sent again on reconnect",
            channel,
            published.offset,
        )
        return published

    async def _resend_unsent(self) -> None:
        """Send what was stored while a send failed (in order, confirmed)."""
        while self._unsent:
            channel, body = self._unsent[0]
            try:
                await self._confirmed(self._send(channel, body, None))
            except BrokerUnavailable:
                return  # the link went again: the next reconnect goes on
            self._unsent.popleft()

    async def _stored_event(self, published: Published) -> Event | None:
        assert self._store is not None
        snap = await self._store.snapshot(published.channel, self._history[0])
        if snap.epoch != published.epoch:
            return None
        return next((e for e in snap.history if e.offset == published.offset), None)

    async def _publish_raw(self, envelope: Envelope) -> Published:
        # this node numbers its own message when it comes back through its queue, in the
        # same order as everyone else's
        echo_id = f"{self._node_id}.{next(self._echo_ids)}"
        echo: asyncio.Future[Published] = asyncio.get_running_loop().create_future()
        self._echoes[echo_id] = echo
        try:
            confirm = self._send(envelope.channel, amqp_layout.encode_raw(envelope), echo_id)
            await self._confirmed(confirm)
            try:
                return await asyncio.wait_for(echo, CONFIRM_TIMEOUT)
            except TimeoutError:
                raise BrokerUnavailable("rabbitmq did not deliver the message back") from None
        finally:
            self._echoes.pop(echo_id, None)

    def _send(self, channel: str, body: bytes, correlation_id: str | None) -> Any:
        link = self._link
        if link is None:
            raise BrokerUnavailable(f"rabbitmq not connected: {self._health.status}")
        properties = pika.BasicProperties(
            content_type=amqp_layout.CONTENT_TYPE,
            delivery_mode=amqp_layout.DELIVERY_MODE,
            correlation_id=correlation_id,
        )
        try:
            return link.publish(self._exchange, amqp_layout.routing_key(channel), body, properties)
        except ConnectionError as exc:
            raise BrokerUnavailable(str(exc)) from exc

    async def _confirmed(self, confirm: Any) -> None:
        try:
            await asyncio.wait_for(confirm, CONFIRM_TIMEOUT)
        except (ConnectionError, TimeoutError) as exc:
            raise BrokerUnavailable(f"rabbitmq did not confirm: {exc or 'timeout'}") from exc

    async def snapshot(self, channel: str, history: int) -> Snapshot:
        """Read the channel's store (Redis, or this process's memory)."""
        if self._store is not None:
            return await self._store.snapshot(channel, history)
        assert self._local is not None
        return self._local.snapshot(channel, history)

    async def renew_epoch(self, channel: str, epoch: str) -> Snapshot:
        """Give the channel a new epoch if it still has ``epoch``."""
        if self._store is not None:
            return await self._store.renew_epoch(channel, epoch)
        assert self._local is not None
        return self._local.renew_epoch(channel, epoch)

    async def close(self) -> None:
        """Stop the connection task, close the link and the Redis client."""
        link = self._link
        if self._store_watch is not None:
            self._store_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._store_watch
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._health.closed()
        if link is not None:
            link.close()  # the task's clean-up started it; wait for a clean goodbye
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(link.lost), 2.0)
        if self._redis is not None:
            await self._redis.aclose()
