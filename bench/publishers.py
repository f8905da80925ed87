"""How the load generator publishes: each target's natural path, one event at a time.

* ``redis``: the realtime Redis layout's atomic ``PUBLISH_SCRIPT`` with the arguments of
  ``publish_args`` (exactly what the Django bridge runs). Also feeds the floor and the naive
  Tornado peer, which listen to the same pub/sub channel.
* ``http``: ``POST /api/publish`` (for a ``memory://`` server or any deployment).
* ``channels``: channels_redis ``group_send`` (the Django Channels peer).
* ``socketio``: python-socketio's write-only ``AsyncRedisManager.emit`` (its peer).
* ``bridge``: ``django_bridge.publish`` itself, configured by a minimal settings block
  (``BROKER_URL`` redis:// or, with ``REDIS_URL``, amqp:// — the RabbitMQ path); it is
  synchronous, so it runs in a thread.

Every event's ``data`` is ``{"i": seq, "t": send time in ns, "pad": "..."}`` so that the
whole event is about 200 bytes; the client reads ``i`` and ``t`` to count and time it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

import orjson

EVENT_TYPE = "bench.tick"


def event_data(seq: int, size: int = 200) -> dict[str, Any]:
    """Return the data of event ``seq``, padded so that the event JSON is about ``size`` bytes."""
    return {"i": seq, "t": time.time_ns(), "pad": "x" * max(0, size - 121)}


class Publisher(Protocol):
    """Publishes one benchmark event; ``close`` releases the client."""

    async def publish(self, channel: str, seq: int) -> None: ...

    async def close(self) -> None: ...


class RedisScriptPublisher:
    """Publish through the realtime Redis layout (``PUBLISH_SCRIPT``), like the bridge."""

    def __init__(self, url: str, prefix: str, event_size: int = 200) -> None:
        import redis.asyncio as aioredis

        from realtime.brokers import redis_layout

        self.layout = redis_layout
        self.client = aioredis.Redis.from_url(url)
        self.script = self.client.register_script(redis_layout.PUBLISH_SCRIPT)
        self.prefix = prefix
        self.event_size = event_size

    async def publish(self, channel: str, seq: int) -> None:
        keys, args = self.layout.publish_args(
            self.prefix,
            channel=channel,
            type_=EVENT_TYPE,
            data_json=orjson.dumps(event_data(seq, self.event_size)),
            state=False,
            envelope_id=None,
            history_size=100,
            history_ttl=600,
            meta_ttl=3600,
            now_ms=time.time_ns() // 1_000_000,
        )
        await self.script(keys=keys, args=args)

    async def close(self) -> None:
        await self.client.aclose()


class HttpPublisher:
    """Publish with ``POST /api/publish`` and the API key."""

    def __init__(self, url: str, api_key: str, event_size: int = 200) -> None:
        from tornado.httpclient import AsyncHTTPClient

        self.client = AsyncHTTPClient()
        self.url = url
        self.headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        self.event_size = event_size

    async def publish(self, channel: str, seq: int) -> None:
        body = orjson.dumps(
            {"channel": channel, "type": EVENT_TYPE, "data": event_data(seq, self.event_size)}
        )
        await self.client.fetch(self.url, method="POST", body=body, headers=self.headers)

    async def close(self) -> None:
        self.client.close()


def group_name(channel: str) -> str:
    """Map a channel to a Channels group name (only ASCII letters, digits, ``-_.``)."""
    return channel.replace(":", ".")


def numbered_event(
    offsets: dict[str, int], channel: str, seq: int, event_size: int
) -> dict[str, Any]:
    """Our wire event with the channel's next offset, for peers that have no store."""
    offsets[channel] = offset = offsets.get(channel, 0) + 1
    return {
        "op": "event",
        "channel": channel,
        "offset": offset,
        "type": EVENT_TYPE,
        "data": event_data(seq, event_size),
    }


class ChannelsPublisher:
    """Publish with channels_redis ``group_send`` (its default ``RedisChannelLayer``)."""

    def __init__(self, url: str, prefix: str, event_size: int = 200) -> None:
        from channels_redis.core import RedisChannelLayer  # type: ignore[import-untyped]

        self.layer = RedisChannelLayer(hosts=[url], prefix=prefix)
        self.event_size = event_size
        self.offsets: dict[str, int] = {}

    async def publish(self, channel: str, seq: int) -> None:
        event = numbered_event(self.offsets, channel, seq, self.event_size)
        await self.layer.group_send(group_name(channel), {"type": "bench.event", "event": event})

    async def close(self) -> None:
        await self.layer.close_pools()


class SocketIOPublisher:
    """Publish with python-socketio's write-only ``AsyncRedisManager``."""

    def __init__(self, url: str, prefix: str, event_size: int = 200) -> None:
        import socketio  # type: ignore[import-untyped]

        self.manager = socketio.AsyncRedisManager(url, channel=prefix, write_only=True)
        self.event_size = event_size
        self.offsets: dict[str, int] = {}

    async def publish(self, channel: str, seq: int) -> None:
        event = numbered_event(self.offsets, channel, seq, self.event_size)
        await self.manager.emit("event", event, room=channel, namespace="/")

    async def close(self) -> None:
        pass  # the manager holds no resource worth closing in write-only mode


class BridgePublisher:
    """Publish with ``django_bridge.publish`` (the Django library's real path)."""

    def __init__(
        self, broker_url: str, prefix: str, redis_url: str | None = None, event_size: int = 200
    ) -> None:
        import django
        from django.conf import settings
        from django.core.signals import setting_changed

        realtime = {
            "BROKER_URL": broker_url,
            "REDIS_URL": redis_url,
            "PREFIX": prefix,
            "SECRET": "bench-bridge-secret-0123456789",
            "RAISE_ON_ERROR": True,  # a failed publish must fail the round, not log
        }
        if not settings.configured:
            settings.configure(
                INSTALLED_APPS=["django_bridge"],
                DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
                USE_TZ=True,
                REALTIME=realtime,
            )
            django.setup()
        else:  # a later target in the same run: new prefix; the bridge resets on the signal
            settings.REALTIME = realtime
            setting_changed.send(sender=None, setting="REALTIME", value=realtime, enter=True)
        from django_bridge import publish

        self._publish = publish
        self.event_size = event_size

    async def publish(self, channel: str, seq: int) -> None:
        data = event_data(seq, self.event_size)
        await asyncio.to_thread(self._publish, channel, EVENT_TYPE, data)

    async def close(self) -> None:
        pass  # the bridge's clients live as long as the process


def make_publisher(kind: str, **options: Any) -> Publisher:
    """Build a publisher by name (``redis``, ``http``, ``channels``, ``socketio``, ``bridge``)."""
    size = int(options.get("event_size", 200))
    if kind == "redis":
        return RedisScriptPublisher(options["redis_url"], options["prefix"], size)
    if kind == "http":
        return HttpPublisher(options["publish_url"], options["api_key"], size)
    if kind == "channels":
        return ChannelsPublisher(options["redis_url"], options["prefix"], size)
    if kind == "socketio":
        return SocketIOPublisher(options["redis_url"], options["prefix"], size)
    if kind == "bridge":
        return BridgePublisher(
            options.get("broker_url") or options["redis_url"],
            options["prefix"],
            options.get("bridge_redis_url"),
            size,
        )
    raise ValueError(f"unknown publisher {kind!r}")
