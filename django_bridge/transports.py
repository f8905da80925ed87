"""The three ways the bridge sends envelopes: Redis script, AMQP, and the HTTP API.

A transport is chosen by the scheme of ``BROKER_URL`` and is used by one process (redis) or
one thread (http, amqp: neither ``http.client`` nor pika's BlockingConnection may be shared
between threads). ``get_transport()`` hands out the right one and builds a new one in a
forked child: a connection inherited across ``fork()`` is dropped, never used or closed (a
close from the child would tear down the parent's session).

Every transport raises ``BrokerUnavailable`` for what a retry may fix (connection refused,
timeout, 5xx) and ``PublishError`` for what it will not (a rejected envelope, a bad key).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import threading
import time
from collections.abc import Sequence
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import orjson
import redis

from django_bridge import conf, redis_client
from django_bridge.breaker import CircuitOpen, get_breaker
from django_bridge.conf import BridgeSettings
from realtime.brokers.redis_layout import (
    SNAPSHOT_SCRIPT,
    channel_keys,
    envelope_args,
    new_epoch,
)
from realtime.envelope import Envelope, Published, encode_event
from realtime.errors import BrokerUnavailable, PublishError

Position = tuple[str, int]  # (epoch, offset)


class Transport(Protocol):
    """What the publishing layer needs from a transport."""

    def send(self, envelopes: Sequence[Envelope]) -> list[Published]:
        """Publish envelopes in order; one result each.

        Raises:
            BrokerUnavailable: nothing or only part was sent; a retry with the same ids is safe.
            PublishError: the envelopes were rejected; a retry will not help.
        """

    def positions(self, channels: Sequence[str]) -> dict[str, Position] | None:
        """Return each channel's current (epoch, offset), or None if this transport cannot."""

    def check(self) -> str:
        """Reach the broker once and describe it; raise ``BrokerUnavailable`` if it fails."""

    def close(self) -> None:
        """Release connections (safe to call twice)."""


def envelope_json(envelope: Envelope, **extra: Any) -> bytes:
    """Encode an envelope as the JSON object the HTTP API and AMQP consumers read.

    ``data`` is spliced in as the publisher's JSON bytes so it is never re-encoded.
    """
    head = orjson.dumps(
        {
            **extra,
            "channel": envelope.channel,
            "type": envelope.type,
            "state": envelope.state,
            "id": envelope.id,
            **({"version": envelope.version} if envelope.version is not None else {}),
        }
    )
    return head[:-1] + b',"data":' + envelope.data_json + b"}"


class RedisStore:
    """Run ``PUBLISH_SCRIPT`` (the server's own atomic step) against Redis."""

    def __init__(self, settings: BridgeSettings, url: str, *, do_publish: bool = True) -> None:
        self._settings = settings
        self._do_publish = do_publish
        self._client = redis_client.connect(url, settings.timeout)
        self._publish = redis_client.script(self._client, redis_client.publish_script(url))
        self._snapshot = redis_client.script(self._client, SNAPSHOT_SCRIPT)

    def run(self, envelopes: Sequence[Envelope]) -> list[tuple[Published, bytes]]:
        """Store (and, if configured, PUBLISH) each envelope; return results and event JSON."""
        s = self._settings
        now_ms = int(time.time() * 1000)
        try:
            pipe = self._client.pipeline(transaction=False)
            for env in envelopes:
                keys, args = envelope_args(
                    s.prefix,
                    env,
                    history_size=s.history_size,
                    history_ttl=s.history_ttl,
                    meta_ttl=s.meta_ttl,
                    now_ms=now_ms,
                    do_publish=self._do_publish,
                )
                self._publish(keys=keys, args=args, client=pipe)
            replies = pipe.execute()
        except redis_client.TRANSIENT as exc:
            raise BrokerUnavailable(f"redis: {exc}") from exc
        except redis.RedisError as exc:
            raise PublishError(f"redis rejected the publish: {exc}") from exc
        results = []
        for env, (epoch, offset, duplicate, event) in zip(envelopes, replies, strict=True):
            published = Published(
                channel=env.channel,
                epoch=epoch.decode() if isinstance(epoch, bytes) else str(epoch),
                offset=int(offset),
                duplicate=bool(duplicate),
            )
            results.append((published, event if isinstance(event, bytes) else b""))
        return results

    def positions(self, channels: Sequence[str]) -> dict[str, Position]:
        """Read each channel's epoch and offset.

        ``SNAPSHOT_SCRIPT`` pins the epoch of a channel that has none yet (the publish script
        keeps it), so a page rendered before the channel's first event still recovers it
        with ``since={epoch, 0}``.
        """
        try:
            pipe = self._client.pipeline(transaction=False)
            for channel in channels:
                keys = list(channel_keys(self._settings.prefix, channel))
                args: list[str | int] = [0, new_epoch(), self._settings.meta_ttl]
                self._snapshot(keys=keys, args=args, client=pipe)
            replies = pipe.execute()
        except redis_client.ANY_ERROR as exc:
            raise BrokerUnavailable(f"redis: {exc}") from exc
        return {
            channel: (reply[0].decode(), int(reply[1]))
            for channel, reply in zip(channels, replies, strict=True)
        }

    def ping(self) -> None:
        try:
            self._client.ping()
        except redis.RedisError as exc:
            raise BrokerUnavailable(f"redis: {exc}") from exc

    def close(self) -> None:
        self._client.close()


class RedisTransport:
    """``redis://``: one EVALSHA per envelope, pipelined; the script PUBLISHes to the nodes."""

    def __init__(self, settings: BridgeSettings) -> None:
        self._store = RedisStore(settings, settings.broker_url)
        self._where = redis_client.where(settings.broker_url)

    def send(self, envelopes: Sequence[Envelope]) -> list[Published]:
        return [published for published, _ in self._store.run(envelopes)]

    def positions(self, channels: Sequence[str]) -> dict[str, Position] | None:
        return self._store.positions(channels)

    def check(self) -> str:
        self._store.ping()
        return f"redis at {self._where}"

    def close(self) -> None:
        self._store.close()


class HttpTransport:
    """``http(s)://``: ``POST /api/publish`` with the API key, one keep-alive connection."""

    def __init__(self, settings: BridgeSettings) -> None:
        parts = urlsplit(settings.broker_url)
        self._settings = settings
        self._https = parts.scheme == "https"
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or (443 if self._https else 80)
        self._base = parts.path.rstrip("/")
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._conn = cls(self._host, self._port, timeout=self._settings.timeout)
        return self._conn

    def _request(self, method: str, path: str, body: bytes | None) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json"}
        if self._settings.api_key:
            headers["Authorization"] = f"Bearer {self._settings.api_key}"
        conn = self._connection()
        try:
            conn.request(method, self._base + path, body=body, headers=headers)
            response = conn.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self.close()  # a half-used keep-alive connection cannot be trusted again
            raise BrokerUnavailable(f"realtime server at {self._host}:{self._port}: {exc}") from exc
        if response.will_close:
            self.close()
        return response.status, payload

    def send(self, envelopes: Sequence[Envelope]) -> list[Published]:
        body = b"[" + b",".join(envelope_json(env) for env in envelopes) + b"]"
        status, payload = self._request("POST", "/api/publish", body)
        if status >= 500:
            raise BrokerUnavailable(f"/api/publish answered {status}: {payload[:200]!r}")
        if status != 200:
            raise PublishError(f"/api/publish answered {status}: {payload[:200]!r}")
        results = orjson.loads(payload)["results"]
        return [
            Published(
                channel=r["channel"],
                epoch=str(r["epoch"]),
                offset=int(r["offset"]),
                duplicate=bool(r.get("duplicate", False)),
            )
            for r in results
        ]

    def positions(self, channels: Sequence[str]) -> dict[str, Position] | None:
        """Read each channel's position from ``GET /api/channels/<name>?history=0``.

        None (pages subscribe without ``since``) when the server has no such endpoint or
        refuses the key: the page still renders.
        """
        result: dict[str, Position] = {}
        for channel in channels:
            status, payload = self._request(
                "GET", f"/api/channels/{quote(channel, safe=':')}?history=0", None
            )
            if status >= 500:
                raise BrokerUnavailable(f"/api/channels answered {status}: {payload[:200]!r}")
            if status != 200:
                return None
            answer = orjson.loads(payload)
            result[channel] = (str(answer["epoch"]), int(answer["offset"]))
        return result

    def check(self) -> str:
        status, payload = self._request("GET", "/healthz", None)
        if status != 200:
            raise BrokerUnavailable(f"/healthz answered {status}: {payload[:200]!r}")
        return f"realtime server at {self._host}:{self._port}"

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class AmqpTransport:
    """``amqp(s)://``: publisher-confirmed messages on the durable topic exchange.

    With ``REDIS_URL`` the offset, history and state are written first by the same Redis
    script the redis transport runs (without its PUBLISH), and the stored event is published
    as ``{"v":1,"epoch","offset","event"}``; without it the plain envelope is published and
    the server assigns offsets. Routing key = channel name. See docs/RABBITMQ.md.

    A retry after a failed ``basic_publish`` finds its events already stored (``duplicate``)
    and sends them again: "stored" is not "sent", and nodes drop a copy by its offset.
    """

    def __init__(self, settings: BridgeSettings) -> None:
        self._settings = settings
        self._store = (
            RedisStore(settings, settings.redis_url, do_publish=False)
            if settings.redis_url
            else None
        )
        self._connection: Any = None
        self._channel: Any = None

    def _open(self) -> Any:
        import pika  # imported here so that redis/http users need not install pika

        if self._channel is not None and self._channel.is_open:
            return self._channel
        self.close()
        params = pika.URLParameters(self._settings.broker_url)
        params.socket_timeout = self._settings.timeout
        params.blocked_connection_timeout = self._settings.timeout
        params.connection_attempts = 1
        # pika's whole-handshake limit defaults to 15 s: a broker that accepts TCP and then
        # stalls must not hold a Django worker longer than TIMEOUT
        params.stack_timeout = self._settings.timeout
        try:
            self._connection = pika.BlockingConnection(params)
            channel = self._connection.channel()
            channel.confirm_delivery()
            channel.exchange_declare(
                exchange=self._settings.exchange, exchange_type="topic", durable=True
            )
        except (pika.exceptions.AMQPError, OSError) as exc:
            self.close()
            raise BrokerUnavailable(f"amqp: {exc!r}") from exc
        self._channel = channel
        return channel

    def send(self, envelopes: Sequence[Envelope]) -> list[Published]:
        import pika

        channel = self._open()
        if self._store is not None:
            stored = self._store.run(envelopes)
            bodies = [
                _numbered_body(env, published, event)
                for env, (published, event) in zip(envelopes, stored, strict=True)
            ]
            results = [published for published, _ in stored]
        else:
            bodies = [envelope_json(env, v=1) for env in envelopes]
            # offsets are assigned by the server's store; unknown here
            results = [Published(channel=env.channel, epoch="", offset=0) for env in envelopes]
        try:
            for env, body in zip(envelopes, bodies, strict=True):
                if body is None:
                    continue  # the store lost the channel since: nothing to resend
                self._basic_publish(
                    channel,
                    env.channel,
                    body,
                    pika.BasicProperties(
                        content_type="application/json", delivery_mode=2, message_id=env.id
                    ),
                )
        except (pika.exceptions.AMQPError, OSError) as exc:
            self.close()
            raise BrokerUnavailable(f"amqp: {exc!r}") from exc
        return results

    def _basic_publish(self, channel: Any, routing_key: str, body: bytes, properties: Any) -> None:
        """Send one confirmed message (the tests' fault seam: nothing else calls pika here)."""
        channel.basic_publish(
            exchange=self._settings.exchange,
            routing_key=routing_key,
            body=body,
            properties=properties,
        )

    def positions(self, channels: Sequence[str]) -> dict[str, Position] | None:
        return self._store.positions(channels) if self._store is not None else None

    def check(self) -> str:
        self._open()
        if self._store is not None:
            self._store.ping()
        where = f"rabbitmq at {_safe_url(self._settings.broker_url)}"
        return where + (" + redis store" if self._store is not None else "")

    def close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            # closing a connection that already broke may fail in any way
            with contextlib.suppress(Exception):
                connection.close()


def _numbered_body(envelope: Envelope, published: Published, event: bytes) -> bytes | None:
    """Return the AMQP body of a stored event, or None when there is nothing to send.

    A duplicate (the id was stored before) is sent again: an earlier attempt may have
    stored it and then failed to send it, and nodes drop a copy they already have by its
    offset. The store returns no event JSON for a duplicate, so it is rebuilt from the
    envelope (an id names one event: same channel, type and data).
    """
    if published.duplicate:
        if not published.epoch:
            return None  # the channel's keys are gone: the event went with them
        event = encode_event(envelope.channel, published.offset, envelope.type, envelope.data_json)
    return b'{"v":1,"epoch":%s,"offset":%d,"event":%s}' % (
        orjson.dumps(published.epoch),
        published.offset,
        event,
    )


def _safe_url(url: str) -> str:
    """Return host:port of a URL without credentials (for messages and logs)."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)


def create_transport(settings: BridgeSettings) -> Transport:
    """Build the transport for ``BROKER_URL``'s scheme (validated by the system checks)."""
    scheme = settings.scheme
    if redis_client.is_redis_scheme(scheme):
        return RedisTransport(settings)
    if scheme in ("amqp", "amqps"):
        return AmqpTransport(settings)
    if scheme in ("http", "https"):
        return HttpTransport(settings)
    raise PublishError(f"REALTIME['BROKER_URL'] has an unsupported scheme: {scheme!r}")


class GuardedTransport:
    """A transport whose sends pass through this process's circuit breaker.

    ``get_transport()`` hands these out (``realtime_check`` builds bare ones: a check always
    reaches for the broker). Reads (``positions``) and ``check`` are not guarded.
    """

    def __init__(self, inner: Transport) -> None:
        self.inner = inner

    def send(self, envelopes: Sequence[Envelope]) -> list[Published]:
        """Send through the breaker.

        Raises:
            CircuitOpen: the breaker is open; nothing was attempted.
            BrokerUnavailable, PublishError: as ``Transport.send``.
        """
        breaker = get_breaker()
        if not breaker.allow():
            retry_in = breaker.stats().retry_in
            raise CircuitOpen(f"circuit open, broker not tried (next try in {retry_in:.1f} s)")
        try:
            results = self.inner.send(envelopes)
        except BrokerUnavailable as exc:
            breaker.failure(exc)
            raise
        except PublishError:
            breaker.success()  # the broker answered (and refused): it is reachable
            raise
        except BaseException:
            breaker.release()
            raise
        breaker.success()
        return results

    def positions(self, channels: Sequence[str]) -> dict[str, Position] | None:
        return self.inner.positions(channels)

    def check(self) -> str:
        return self.inner.check()

    def close(self) -> None:
        self.inner.close()


class _Slot(threading.local):
    transport: Transport | None = None
    pid: int = 0
    generation: int = -1


_slot = _Slot()
_shared_lock = threading.Lock()
_shared: tuple[int, int, Transport] | None = None  # (pid, generation, transport) for redis
_generation = 0


def get_transport() -> Transport:
    """Return this process's (redis) or this thread's (http, amqp) transport.

    Its sends go through the process's circuit breaker (``django_bridge.breaker``).
    """
    global _shared
    settings = conf.get_settings()
    pid = os.getpid()
    if redis_client.is_redis_scheme(settings.scheme):
        # redis-py's pool is thread-safe (and gevent-safe once patched): share it per process
        shared = _shared
        if shared is not None and shared[0] == pid and shared[1] == _generation:
            return shared[2]
        with _shared_lock:
            if _shared is None or _shared[0] != pid or _shared[1] != _generation:
                _shared = (pid, _generation, GuardedTransport(create_transport(settings)))
            return _shared[2]
    if _slot.transport is None or _slot.pid != pid or _slot.generation != _generation:
        _slot.transport = GuardedTransport(create_transport(settings))
        _slot.pid, _slot.generation = pid, _generation
    return _slot.transport


def reset_transports() -> None:
    """Forget every transport; the next call builds new ones from the current settings.

    Closes the shared Redis client and the calling thread's transport; other threads'
    transports are not touched from here (pika is not thread-safe) and are closed when
    garbage-collected.
    """
    global _generation, _shared
    pid = os.getpid()
    with _shared_lock:
        _generation += 1
        shared, _shared = _shared, None
    if shared is not None and shared[0] == pid:
        shared[2].close()
    if _slot.transport is not None and _slot.pid == pid:
        _slot.transport.close()
    _slot.transport = None


conf.on_reset(reset_transports)
